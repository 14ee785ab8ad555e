package presence

import (
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// node is one edge process and the sessions it holds.
type node struct {
	pushAddr string
	expires  time.Time
	sessions map[string]*presencev1.Session
}

// Registry maps users to the edge nodes holding their sessions. A node's
// sessions live as long as its lease; a node that stops reporting (killed,
// partitioned) loses them all when the lease lapses.
type Registry struct {
	lease time.Duration
	now   func() time.Time

	// mu guards nodes and users.
	mu    sync.Mutex
	nodes map[string]*node
	// users counts sessions per user per node: user -> node id -> count.
	users map[string]map[string]int
	// active counts, likewise, the sessions not idle.
	active map[string]map[string]int
	// lastSeen is when each user who went offline was last known online.
	lastSeen map[string]time.Time
}

// NewRegistry returns an empty registry with the given node lease.
func NewRegistry(lease time.Duration, now func() time.Time) *Registry {
	return &Registry{lease: lease, now: now, nodes: map[string]*node{}, users: map[string]map[string]int{}, active: map[string]map[string]int{}, lastSeen: map[string]time.Time{}}
}

// Report applies one node's report and renews its lease. It returns false
// when the node is unknown and the report was not a snapshot, in which case
// the node must send a snapshot (its earlier sessions are not known here).
func (r *Registry) Report(req *presencev1.ReportRequest) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, known := r.nodes[req.GetNodeId()]
	if !known {
		n = &node{sessions: map[string]*presencev1.Session{}}
		r.nodes[req.GetNodeId()] = n
	}
	n.pushAddr = req.GetPushAddress()
	n.expires = r.now().Add(r.lease)
	if req.GetSnapshot() {
		for id := range n.sessions {
			r.removeLocked(req.GetNodeId(), n, id, r.now())
		}
	}
	for _, s := range req.GetConnected() {
		if old, dup := n.sessions[s.GetSessionId()]; dup {
			// Reported again: its idle flag flipped.
			n.sessions[s.GetSessionId()] = s
			switch {
			case old.GetIdle() && !s.GetIdle():
				r.count(r.active, s.GetUserId(), req.GetNodeId(), 1)
			case !old.GetIdle() && s.GetIdle():
				r.count(r.active, s.GetUserId(), req.GetNodeId(), -1)
			}
			continue
		}
		n.sessions[s.GetSessionId()] = s
		r.count(r.users, s.GetUserId(), req.GetNodeId(), 1)
		if !s.GetIdle() {
			r.count(r.active, s.GetUserId(), req.GetNodeId(), 1)
		}
	}
	for _, id := range req.GetDisconnectedSessionIds() {
		r.removeLocked(req.GetNodeId(), n, id, r.now())
	}
	return known || req.GetSnapshot()
}

// removeLocked drops a session; at is when it was last known alive.
func (r *Registry) removeLocked(nodeID string, n *node, sessionID string, at time.Time) {
	s, ok := n.sessions[sessionID]
	if !ok {
		return
	}
	delete(n.sessions, sessionID)
	r.count(r.users, s.GetUserId(), nodeID, -1)
	if !s.GetIdle() {
		r.count(r.active, s.GetUserId(), nodeID, -1)
	}
	// Every session that ends moves the user's last seen: their other
	// sessions may be on a node that died earlier.
	if at.After(r.lastSeen[s.GetUserId()]) {
		r.lastSeen[s.GetUserId()] = at
	}
}

// count adds d to counts[user][node], dropping zeros.
func (r *Registry) count(counts map[string]map[string]int, user, node string, d int) {
	byNode := counts[user]
	if byNode == nil {
		byNode = map[string]int{}
		counts[user] = byNode
	}
	if byNode[node] += d; byNode[node] <= 0 {
		delete(byNode, node)
	}
	if len(byNode) == 0 {
		delete(counts, user)
	}
}

// Expire drops nodes whose lease has lapsed and returns their ids.
func (r *Registry) Expire() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var gone []string
	for id, n := range r.nodes {
		if now.After(n.expires) {
			// The node's last heartbeat is the last time its users were
			// known to be online.
			for sid := range n.sessions {
				r.removeLocked(id, n, sid, n.expires.Add(-r.lease))
			}
			delete(r.nodes, id)
			gone = append(gone, id)
		}
	}
	return gone
}

// Locate returns, per user with sessions, the push addresses of their nodes.
func (r *Registry) Locate(users []string) []*presencev1.UserLocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []*presencev1.UserLocation
	for _, u := range users {
		loc := &presencev1.UserLocation{UserId: u}
		for nodeID := range r.users[u] {
			if n := r.nodes[nodeID]; n != nil && !now.After(n.expires) {
				loc.PushAddresses = append(loc.PushAddresses, n.pushAddr)
			}
		}
		if len(loc.PushAddresses) > 0 {
			sort.Strings(loc.PushAddresses)
			out = append(out, loc)
		}
	}
	return out
}

// Status says, per user, whether a live node holds a session of theirs, and
// otherwise when they were last seen. A node whose lease lapsed counts as
// gone at once, before Expire runs, so a dead edge's users are offline
// within the lease.
func (r *Registry) Status(users []string) []*presencev1.UserStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := make([]*presencev1.UserStatus, 0, len(users))
	for _, u := range users {
		st := &presencev1.UserStatus{UserId: u}
		var seen time.Time
		active := false
		for nodeID := range r.users[u] {
			n := r.nodes[nodeID]
			if n == nil {
				continue
			}
			if !now.After(n.expires) {
				st.Online = true
				active = active || r.active[u][nodeID] > 0
				continue
			}
			if t := n.expires.Add(-r.lease); t.After(seen) {
				seen = t
			}
		}
		st.Away = st.Online && !active
		if !st.Online {
			if t, ok := r.lastSeen[u]; ok && t.After(seen) {
				seen = t
			}
			if !seen.IsZero() {
				st.LastSeen = timestamppb.New(seen)
			}
		}
		out = append(out, st)
	}
	return out
}
