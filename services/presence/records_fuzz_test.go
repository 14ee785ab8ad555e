package presence

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

type fuzzRecord struct{ key, value []byte }

// fuzzPresenceLog turns fuzz input into records of parley.presence.v1: raw
// keys and values (garbage or not), or sessions, idle flips, heartbeats,
// last-seen times and tombstones of two nodes, three users and a few
// sessions, written at increasing times as the edges write them. A node
// ends as presence ends it: the tombstones of the sessions reg holds on it
// first, then the node's (the log never holds a node's end without its
// sessions' ends, which compaction would otherwise resurrect when the node
// id comes back). Each record is applied to reg as it is made.
func fuzzPresenceLog(data []byte, base time.Time, reg *Registry, applied func(fuzzRecord, error)) {
	users, nodes := []string{"alice", "bob", "carol"}, []string{"n1", "n2"}
	emit := func(r fuzzRecord) { applied(r, reg.Apply(r.key, r.value)) }
	for i := 0; len(data) >= 2 && i < 64; i++ {
		op, arg := data[0], data[1]
		data = data[2:]
		at := base.Add(time.Duration(i) * time.Second)
		user, node, session := users[arg%3], nodes[arg/3%2], fmt.Sprintf("s%d", arg/6%3)
		var rec fuzzRecord
		switch op % 8 {
		case 0: // raw bytes: a key and a value of the next lengths
			n := min(int(arg), len(data))
			k := n / 2
			rec = fuzzRecord{key: data[:k], value: data[k:n]}
			data = data[n:]
		case 1, 2: // a session opens, or is written again idle or not
			v, _ := proto.Marshal(&logv1.PresenceRecord{Body: &logv1.PresenceRecord_Session{Session: &logv1.PresenceSession{
				NodeId: node, SessionId: session, UserId: user, DeviceId: "d", Idle: op%2 == 0}}})
			rec = fuzzRecord{key: sessionKey(user, session), value: v}
		case 3:
			rec = fuzzRecord{key: sessionKey(user, session)}
		case 4, 5:
			v, _ := proto.Marshal(&logv1.PresenceRecord{Body: &logv1.PresenceRecord_Beat{Beat: &logv1.PresenceBeat{
				NodeId: node, PushAddress: node + ":1", At: timestamppb.New(at), Lease: durationpb.New(time.Duration(op%4) * 5 * time.Second)}}})
			rec = fuzzRecord{key: nodeKey(node), value: v}
		case 6:
			for _, sess := range reg.Sessions(node) {
				emit(fuzzRecord{key: sessionKey(sess.GetUserId(), sess.GetSessionId())})
			}
			rec = fuzzRecord{key: nodeKey(node)}
		case 7:
			v, _ := proto.Marshal(&logv1.PresenceRecord{Body: &logv1.PresenceRecord_Seen{Seen: &logv1.PresenceSeen{
				UserId: user, LastSeen: timestamppb.New(at)}}})
			rec = fuzzRecord{key: seenKey(user), value: v}
		}
		emit(rec)
	}
}

// compacted is what log compaction may leave of recs: the last record of
// each key, in log order.
func compacted(recs []fuzzRecord) []fuzzRecord {
	last := map[string]int{}
	for i, r := range recs {
		last[string(r.key)] = i
	}
	var out []fuzzRecord
	for i, r := range recs {
		if last[string(r.key)] == i {
			out = append(out, r)
		}
	}
	return out
}

// FuzzPresenceRecords feeds arbitrary records of the presence topic to a
// Registry: nothing panics, a record it refuses changes nothing, its
// session counts always agree with the sessions it holds, and a replay of
// the compacted log (what a restarted instance reads) answers every query
// as the full log does.
func FuzzPresenceRecords(f *testing.F) {
	f.Add([]byte{1, 0, 4, 0, 2, 0, 7, 1, 3, 0})        // open, beat, go idle, seen, close
	f.Add([]byte{1, 0, 1, 3, 4, 0, 4, 3, 6, 3, 1, 6})  // sessions on two nodes, one node dropped
	f.Add([]byte{0, 6, 's', 0, 'a', 0xff, 0xff, 0x01}) // garbage
	f.Fuzz(func(t *testing.T, data []byte) {
		base := time.Unix(1_700_000_000, 0)
		// The queries are asked at several times, so leases both live and
		// lapsed are covered.
		now := base
		full, comp := NewRegistry(func() time.Time { return now }), NewRegistry(func() time.Time { return now })
		var applied []fuzzRecord
		before := snapshot(full)
		fuzzPresenceLog(data, base, full, func(r fuzzRecord, err error) {
			after := snapshot(full)
			if err != nil {
				if after != before {
					t.Fatalf("refused record %q=%x changed the state:\n%s\nwas\n%s", r.key, r.value, after, before)
				}
				return
			}
			before = after
			applied = append(applied, r)
			checkCounts(t, full)
		})
		for _, r := range compacted(applied) {
			if err := comp.Apply(r.key, r.value); err != nil {
				t.Fatalf("the compacted log refused %q: %v", r.key, err)
			}
		}
		checkCounts(t, comp)
		for _, d := range []time.Duration{0, 30 * time.Second, 70 * time.Second} {
			now = base.Add(d)
			if a, b := snapshot(full), snapshot(comp); a != b {
				t.Fatalf("at +%v the compacted log answers\n%s\nthe full log\n%s", d, b, a)
			}
		}
	})
}

// snapshot renders every answer the registry gives about the fuzz's users
// and nodes.
func snapshot(r *Registry) string {
	users := []string{"alice", "bob", "carol"}
	var b strings.Builder
	for _, l := range r.Locate(users) {
		fmt.Fprintf(&b, "at %s %v\n", l.GetUserId(), l.GetPushAddresses())
	}
	for _, st := range r.Status(users) {
		fmt.Fprintf(&b, "%s online=%v away=%v seen=%d\n", st.GetUserId(), st.GetOnline(), st.GetAway(), st.GetLastSeen().GetSeconds())
	}
	out := b.String()
	for _, n := range []string{"n1", "n2"} {
		var ids []string
		for _, s := range r.Sessions(n) {
			ids = append(ids, fmt.Sprintf("%s/%s idle=%v", s.GetUserId(), s.GetSessionId(), s.GetIdle()))
		}
		slices.Sort(ids)
		out += fmt.Sprintf("%s known=%v sessions %v\n", n, r.Known(n), ids)
	}
	lapsed := r.Lapsed()
	var ids []string
	for id, ln := range lapsed {
		ids = append(ids, fmt.Sprintf("%s@%v/%d", id, ln.Beat.Unix(), len(ln.Sessions)))
	}
	slices.Sort(ids)
	return out + fmt.Sprintf("lapsed %v\n", ids)
}

// checkCounts verifies the registry's per-user counts against the
// sessions its nodes hold.
func checkCounts(t *testing.T, r *Registry) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	users, active := map[string]map[string]int{}, map[string]map[string]int{}
	sessions := 0
	for id, n := range r.nodes {
		for sid, s := range n.sessions {
			sessions++
			if got := r.sessionNode[sid]; got != id || sid != string(sessionKey(s.GetUserId(), s.GetSessionId())) {
				t.Fatalf("session %s/%s is on node %s but indexed on %q", s.GetUserId(), sid, id, got)
			}
			count(users, s.GetUserId(), id, 1)
			if !s.GetIdle() {
				count(active, s.GetUserId(), id, 1)
			}
		}
	}
	if len(r.sessionNode) != sessions {
		t.Fatalf("%d sessions indexed, %d held", len(r.sessionNode), sessions)
	}
	if a, b := fmt.Sprint(users), fmt.Sprint(r.users); a != b {
		t.Fatalf("session counts %s, held %s", b, a)
	}
	if a, b := fmt.Sprint(active), fmt.Sprint(r.active); a != b {
		t.Fatalf("active counts %s, held %s", b, a)
	}
}
