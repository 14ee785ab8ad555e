package edge

import (
	"sync"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// hub indexes this node's authenticated connections by user.
type hub struct {
	// mu guards users; Push reads it for every delivery, connects and
	// disconnects write it.
	mu    sync.RWMutex
	users map[string]map[*conn]struct{}
}

func newHub() *hub { return &hub{users: map[string]map[*conn]struct{}{}} }

func (h *hub) add(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.users[c.user]
	if set == nil {
		set = map[*conn]struct{}{}
		h.users[c.user] = set
	}
	set[c] = struct{}{}
}

func (h *hub) remove(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.users[c.user]
	delete(set, c)
	if len(set) == 0 {
		delete(h.users, c.user)
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
		for c := range h.users[u] {
			if it.ephemeral() && c.pushEphemeral(it) || !it.ephemeral() && c.pushShared(it.event, it.shared) {
				n++
			}
		}
	}
	return n
}

func (h *hub) sessions() []*presencev1.Session {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var out []*presencev1.Session
	for _, set := range h.users {
		for c := range set {
			c.mu.Lock()
			out = append(out, c.sessionLocked())
			c.mu.Unlock()
		}
	}
	return out
}
