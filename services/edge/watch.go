package edge

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// watchEvery is how often the edge looks for presence changes of the users
// its connections watch. It is also the coalescing: a user who flaps within
// it shows only where they settled, and each watched user costs one entry
// in one Status call per period, however many connections watch them.
const watchEvery = time.Second

// watchers maps watched users to the connections watching them, and keeps
// what each watched user's presence was last time.
type watchers struct {
	// mu guards the maps; a leaf in the lock order (package doc).
	mu     sync.Mutex
	byUser map[string]map[*conn]struct{}
	byConn map[*conn][]string
	last   map[string]*chatv1.Presence
}

// set replaces c's watch set; now is the users' presence its watch was
// answered with, the baseline for users nobody watched before (for the
// others the baseline is what their watchers were last told).
func (w *watchers) set(c *conn, users []string, now []*chatv1.Presence) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(c)
	if len(users) == 0 {
		return
	}
	if w.byUser == nil {
		w.byUser, w.byConn, w.last = map[string]map[*conn]struct{}{}, map[*conn][]string{}, map[string]*chatv1.Presence{}
	}
	w.byConn[c] = users
	for _, p := range now {
		if _, known := w.last[p.GetUserId()]; !known {
			w.last[p.GetUserId()] = p
		}
	}
	for _, u := range users {
		if w.byUser[u] == nil {
			w.byUser[u] = map[*conn]struct{}{}
		}
		w.byUser[u][c] = struct{}{}
	}
}

func (w *watchers) remove(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(c)
}

func (w *watchers) removeLocked(c *conn) {
	for _, u := range w.byConn[c] {
		delete(w.byUser[u], c)
		if len(w.byUser[u]) == 0 {
			delete(w.byUser, u)
			delete(w.last, u)
		}
	}
	delete(w.byConn, c)
}

// toPresence turns presence's answer into what clients see.
func toPresence(st *presencev1.UserStatus) *chatv1.Presence {
	p := &chatv1.Presence{UserId: st.GetUserId(), State: chatv1.PresenceState_PRESENCE_STATE_OFFLINE, LastSeen: st.GetLastSeen()}
	switch {
	case st.GetOnline() && st.GetAway():
		p.State, p.LastSeen = chatv1.PresenceState_PRESENCE_STATE_AWAY, nil
	case st.GetOnline():
		p.State, p.LastSeen = chatv1.PresenceState_PRESENCE_STATE_ONLINE, nil
	}
	return p
}

// watch replaces the connection's watch set after the co-member check and
// answers the users' presence now.
func (c *conn) watch(ctx context.Context, users []string) ([]*chatv1.Presence, error) {
	users = slices.Compact(slices.Sorted(slices.Values(users)))
	if len(users) == 0 {
		c.svc.watchers.set(c, nil, nil)
		return nil, nil
	}
	ps, err := c.presenceOf(ctx, users)
	if err != nil {
		return nil, err
	}
	shown, err := c.svc.access.hideBlockers(ctx, c.user, ps)
	if err != nil {
		return nil, err
	}
	// The baseline is the users' presence as it is, not as this watcher
	// is shown it: it is shared by every watcher of the user.
	c.svc.watchers.set(c, users, ps)
	return shown, nil
}

// watchLoop pushes presence changes of watched users to their watchers
// until ctx ends.
func (s *Service) watchLoop(ctx context.Context) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.watchers.mu.Lock()
		users := slices.Collect(maps.Keys(s.watchers.byUser))
		s.watchers.mu.Unlock()
		for len(users) > 0 {
			n := min(len(users), 5000)
			rctx, cancel := context.WithTimeout(ctx, watchEvery)
			resp, err := s.clients.presence.Status(rctx, &presencev1.StatusRequest{UserIds: users[:n]})
			cancel()
			users = users[n:]
			if err != nil {
				s.log.Debug("edge: presence watch", "err", err)
				continue
			}
			type change struct {
				c *conn
				p *chatv1.Presence
			}
			var changes []change
			s.watchers.mu.Lock()
			for _, st := range resp.GetStatuses() {
				p := toPresence(st)
				prev, known := s.watchers.last[p.GetUserId()]
				s.watchers.last[p.GetUserId()] = p
				if !known || proto.Equal(prev, p) {
					continue
				}
				for c := range s.watchers.byUser[p.GetUserId()] {
					changes = append(changes, change{c, p})
				}
			}
			s.watchers.mu.Unlock()
			for _, ch := range changes {
				s.pushChange(ctx, ch.c, ch.p)
			}
		}
	}
}

// pushChange sends a watched user's presence to a watcher that may still
// see it; not when that cannot be read either.
func (s *Service) pushChange(ctx context.Context, c *conn, p *chatv1.Presence) {
	ctx, cancel := context.WithTimeout(ctx, watchEvery)
	defer cancel()
	ok, err := s.access.mayWatch(ctx, c.user, p.GetUserId())
	if err != nil {
		s.log.Debug("edge: presence watch", "err", err)
		return
	}
	if ok {
		c.pushEphemeral(item{presence: p})
	}
}
