package edge

import (
	"sync"

	"github.com/parleychat/parley/pkg/server/membership"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// hub indexes this node's authenticated connections by user.
type hub struct {
	// mu guards users; Push reads it for every delivery, connects and
	// disconnects write it.
	mu sync.RWMutex
	// users holds each user's few connections (ConnsPerUser bounds them)
	// in a slice: a map of one costs an idle connection about 130 bytes
	// more.
	users map[string][]*conn
	// audiences indexes the connections by the members of their
	// audiences (audiences.go), apart from users, so that the sessions
	// listed are each connection's once.
	audiences map[string]map[*conn]struct{}
}

func newHub() *hub {
	return &hub{users: map[string][]*conn{}, audiences: map[string]map[*conn]struct{}{}}
}

func (h *hub) add(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.users[c.user] = append(h.users[c.user], c)
	for _, a := range c.audiences {
		indexAdd(h.audiences, a.member, c)
	}
}

func (h *hub) remove(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeUser(c)
	for _, a := range c.audiences {
		indexRemove(h.audiences, a.member, c)
	}
}

// removeUser takes c out of its user's connections. Under mu.
func (h *hub) removeUser(c *conn) {
	set := h.users[c.user]
	for i, o := range set {
		if o != c {
			continue
		}
		last := len(set) - 1
		set[i], set[last] = set[last], nil
		if last == 0 {
			delete(h.users, c.user)
		} else {
			h.users[c.user] = set[:last]
		}
		return
	}
}

func indexAdd(index map[string]map[*conn]struct{}, key string, c *conn) {
	set := index[key]
	if set == nil {
		set = map[*conn]struct{}{}
		index[key] = set
	}
	set[c] = struct{}{}
}

func indexRemove(index map[string]map[*conn]struct{}, key string, c *conn) {
	set := index[key]
	delete(set, c)
	if len(set) == 0 {
		delete(index, key)
	}
}

// deliver queues an event (durably) or a receipt, typing indicator,
// presence change or flags change (ephemerally) on every connection of the users, and
// returns how many connections took it.
func (h *hub) deliver(it item, users []string) int {
	it.size = it.sizeOf()
	if it.event != nil && it.shared == nil {
		it.shared = newSharedEvent(it.event)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, u := range users {
		if membership.IsAudienceMember(u) {
			for c := range h.audiences[u] {
				n += c.deliverOne(it)
			}
			continue
		}
		for _, c := range h.users[u] {
			n += c.deliverOne(it)
		}
	}
	return n
}

// deliverOne queues it on c for deliver: 1 if c took it.
func (c *conn) deliverOne(it item) int {
	if it.ephemeral() && c.pushEphemeral(it) || !it.ephemeral() && c.pushShared(it.event, it.shared) {
		return 1
	}
	return 0
}

func (h *hub) sessions() []*presencev1.Session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var out []*presencev1.Session
	for _, set := range h.users {
		for _, c := range set {
			c.mu.Lock()
			out = append(out, c.sessionLocked())
			c.mu.Unlock()
			out = append(out, c.audienceSessions()...)
		}
	}
	return out
}
