package presence

import (
	"bytes"
	"fmt"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// Record keys on parley.presence.v1: a kind byte and ids, NUL-separated.
// Ids never hold a NUL: the edge refuses control bytes in them.
const (
	kindSession = 's'
	kindNode    = 'n'
	kindSeen    = 'u'
)

func sessionKey(user, session string) []byte {
	return []byte(string(kindSession) + "\x00" + user + "\x00" + session)
}
func nodeKey(node string) []byte { return []byte(string(kindNode) + "\x00" + node) }
func seenKey(user string) []byte { return []byte(string(kindSeen) + "\x00" + user) }

// parseKey splits a key into its kind and ids.
func parseKey(key []byte) (kind byte, ids []string, err error) {
	parts := bytes.Split(key, []byte{0})
	want := map[byte]int{kindSession: 3, kindNode: 2, kindSeen: 2}
	if len(parts[0]) != 1 || want[parts[0][0]] != len(parts) {
		return 0, nil, fmt.Errorf("presence record key %q: unknown shape", key)
	}
	for _, p := range parts[1:] {
		if len(p) == 0 {
			return 0, nil, fmt.Errorf("presence record key %q: empty id", key)
		}
		ids = append(ids, string(p))
	}
	return parts[0][0], ids, nil
}

// node is one edge process and the sessions it holds.
type node struct {
	pushAddr string
	// beat is the node's last heartbeat; its sessions live until beat+lease.
	beat  time.Time
	lease time.Duration
	// sessions is keyed like the log (user and session id): a session id is
	// unique only as far as the edge that made it is honest.
	sessions map[string]*logv1.PresenceSession
}

func (n *node) expires() time.Time { return n.beat.Add(n.lease) }

// Registry is the state of one partition of parley.presence.v1: the
// nodes, the sessions of the partition's users they hold and when those
// users were last seen. It only changes by Apply, so replaying the log yields
// what was served before a restart.
type Registry struct {
	now func() time.Time

	// mu guards everything below.
	mu    sync.Mutex
	nodes map[string]*node
	// sessionNode finds the node of a session by its key, for tombstones.
	sessionNode map[string]string
	// users counts sessions per user per node: user -> node id -> count.
	users map[string]map[string]int
	// active counts, likewise, the sessions not idle.
	active map[string]map[string]int
	// lastSeen is when each user was last known online.
	lastSeen map[string]time.Time
}

// NewRegistry returns an empty registry.
func NewRegistry(now func() time.Time) *Registry {
	return &Registry{now: now, nodes: map[string]*node{}, sessionNode: map[string]string{},
		users: map[string]map[string]int{}, active: map[string]map[string]int{}, lastSeen: map[string]time.Time{}}
}

// Apply folds one record of the log into the state. A nil value is a
// tombstone. Applying a record twice, or a tombstone of something unknown,
// changes nothing.
func (r *Registry) Apply(key, value []byte) error {
	kind, ids, err := parseKey(key)
	if err != nil {
		return err
	}
	var rec logv1.PresenceRecord
	if value != nil {
		if err := proto.Unmarshal(value, &rec); err != nil {
			return fmt.Errorf("presence record %q: %w", key, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch kind {
	case kindSession:
		if value == nil {
			r.endLocked(ids[0], ids[1])
			return nil
		}
		s := rec.GetSession()
		if s == nil || s.GetUserId() != ids[0] || s.GetSessionId() != ids[1] || s.GetNodeId() == "" {
			return fmt.Errorf("presence record %q: not a session of that key", key)
		}
		r.openLocked(s)
	case kindNode:
		if value == nil {
			r.dropNodeLocked(ids[0])
			return nil
		}
		b := rec.GetBeat()
		if b == nil || b.GetNodeId() != ids[0] {
			return fmt.Errorf("presence record %q: not a heartbeat of that key", key)
		}
		n := r.nodeLocked(ids[0])
		n.pushAddr, n.lease = b.GetPushAddress(), b.GetLease().AsDuration()
		if at := b.GetAt().AsTime(); at.After(n.beat) {
			n.beat = at
		}
	case kindSeen:
		if value == nil {
			delete(r.lastSeen, ids[0])
			return nil
		}
		if s := rec.GetSeen(); s != nil && s.GetUserId() == ids[0] {
			if at := s.GetLastSeen().AsTime(); at.After(r.lastSeen[ids[0]]) {
				r.lastSeen[ids[0]] = at
			}
			return nil
		}
		return fmt.Errorf("presence record %q: not a last-seen of that key", key)
	}
	return nil
}

// nodeLocked returns the node, creating it: after compaction a session's
// record may come before its node's latest heartbeat.
func (r *Registry) nodeLocked(id string) *node {
	n := r.nodes[id]
	if n == nil {
		n = &node{sessions: map[string]*logv1.PresenceSession{}}
		r.nodes[id] = n
	}
	return n
}

func (r *Registry) openLocked(s *logv1.PresenceSession) {
	key := string(sessionKey(s.GetUserId(), s.GetSessionId()))
	if old := r.sessionNode[key]; old != "" && old != s.GetNodeId() {
		r.endLocked(s.GetUserId(), s.GetSessionId())
	}
	n := r.nodeLocked(s.GetNodeId())
	if old := n.sessions[key]; old != nil {
		// Written again: its idle flag flipped.
		n.sessions[key] = s
		switch {
		case old.GetIdle() && !s.GetIdle():
			count(r.active, s.GetUserId(), s.GetNodeId(), 1)
		case !old.GetIdle() && s.GetIdle():
			count(r.active, s.GetUserId(), s.GetNodeId(), -1)
		}
		return
	}
	n.sessions[key] = s
	r.sessionNode[key] = s.GetNodeId()
	count(r.users, s.GetUserId(), s.GetNodeId(), 1)
	if !s.GetIdle() {
		count(r.active, s.GetUserId(), s.GetNodeId(), 1)
	}
}

func (r *Registry) endLocked(user, session string) {
	key := string(sessionKey(user, session))
	nodeID, ok := r.sessionNode[key]
	if !ok {
		return
	}
	delete(r.sessionNode, key)
	n := r.nodes[nodeID]
	s := n.sessions[key]
	delete(n.sessions, key)
	if len(n.sessions) == 0 && n.beat.IsZero() {
		// Made only to hold sessions ahead of its heartbeat: forget it
		// with the last one, or it would linger as a lapsed node forever.
		delete(r.nodes, nodeID)
	}
	count(r.users, user, nodeID, -1)
	if !s.GetIdle() {
		count(r.active, user, nodeID, -1)
	}
}

func (r *Registry) dropNodeLocked(id string) {
	n := r.nodes[id]
	if n == nil {
		return
	}
	for _, s := range n.sessions {
		r.endLocked(s.GetUserId(), s.GetSessionId())
	}
	delete(r.nodes, id)
}

// count adds d to counts[user][node], dropping zeros.
func count(counts map[string]map[string]int, user, node string, d int) {
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

// Known says whether the registry holds the node, its lease lapsed or not:
// a node it does not hold must report all its sessions.
func (r *Registry) Known(nodeID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nodes[nodeID]
	return n != nil && !n.beat.IsZero()
}

// Holds says whether nodeID holds the session.
func (r *Registry) Holds(nodeID, user, session string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessionNode[string(sessionKey(user, session))] == nodeID
}

// Sessions returns the sessions held for a node.
func (r *Registry) Sessions(nodeID string) []*logv1.PresenceSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*logv1.PresenceSession
	if n := r.nodes[nodeID]; n != nil {
		for _, s := range n.sessions {
			out = append(out, s)
		}
	}
	return out
}

// Lapsed returns the nodes whose lease ended before now, with their
// sessions and last heartbeat: their users were last seen then.
func (r *Registry) Lapsed() map[string]LapsedNode {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := map[string]LapsedNode{}
	for id, n := range r.nodes {
		if now.After(n.expires()) {
			ln := LapsedNode{Beat: n.beat}
			for _, s := range n.sessions {
				ln.Sessions = append(ln.Sessions, s)
			}
			out[id] = ln
		}
	}
	return out
}

// LapsedNode is a node whose lease ended.
type LapsedNode struct {
	Beat     time.Time
	Sessions []*logv1.PresenceSession
}

// Locate returns, per user with sessions, the push addresses of their live
// nodes.
func (r *Registry) Locate(users []string) []*presencev1.UserLocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []*presencev1.UserLocation
	for _, u := range users {
		loc := &presencev1.UserLocation{UserId: u}
		for nodeID := range r.users[u] {
			if n := r.nodes[nodeID]; n != nil && !now.After(n.expires()) {
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
// gone at once, before its sessions are ended on the log, so a dead edge's
// users are offline within the lease.
func (r *Registry) Status(users []string) []*presencev1.UserStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := make([]*presencev1.UserStatus, 0, len(users))
	for _, u := range users {
		st := &presencev1.UserStatus{UserId: u}
		seen := r.lastSeen[u]
		active := false
		for nodeID := range r.users[u] {
			n := r.nodes[nodeID]
			if !now.After(n.expires()) {
				st.Online = true
				active = active || r.active[u][nodeID] > 0
				continue
			}
			if n.beat.After(seen) {
				seen = n.beat
			}
		}
		st.Away = st.Online && !active
		if !st.Online && !seen.IsZero() {
			st.LastSeen = timestamppb.New(seen)
		}
		out = append(out, st)
	}
	return out
}
