package cassandrastore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/parleychat/parley/services/persistence/history/historytest"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// These tests need a running Cassandra, named by PARLEY_CASSANDRA_HOSTS.
// Without it they skip, unless PARLEY_INTEGRATION=require (CI), where they
// fail: an integration suite must never pass by skipping.

const howToRun = "run `make up` (or `deployments/local/stack.sh up cassandra`), then " +
	"PARLEY_CASSANDRA_HOSTS=127.0.0.1:19042 go test ./persistence/history/cassandrastore/"

func cassandraHosts(tb testing.TB) []string {
	tb.Helper()
	var hosts []string
	for _, h := range strings.Split(os.Getenv("PARLEY_CASSANDRA_HOSTS"), ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) > 0 {
		return hosts
	}
	if os.Getenv("PARLEY_INTEGRATION") == "require" {
		tb.Fatalf("PARLEY_INTEGRATION=require but PARLEY_CASSANDRA_HOSTS is unset: the Cassandra integration tests cannot run; %s", howToRun)
	}
	tb.Skipf("Cassandra integration test skipped: PARLEY_CASSANDRA_HOSTS is unset; %s", howToRun)
	return nil
}

// harness makes stores in fresh keyspaces, sharing one administrative
// session; each store has one session of its own.
//
// Schema changes are what a test keyspace costs: Cassandra applies them one
// at a time, about 30 ms per table created or dropped on a 2-core box, so
// creating the keyspace and its tables takes about 0.2 s and dropping them
// with their data about 0.5 s. A harness that makes many stores therefore
// prepares the next keyspace in the background while a test runs, and
// drops keyspaces in the background too; the harness's own test waits for
// all of that before it ends.
type harness struct {
	tb       testing.TB
	cfg      Config
	admin    *gocql.Session
	prefetch bool

	drops sync.WaitGroup
	mu    sync.Mutex
	next  chan ready // a keyspace being prepared, when prefetching
}

// ready is a fresh keyspace, created and migrated, with a session on it.
type ready struct {
	keyspace string
	sess     *gocql.Session
	err      error
}

func newHarness(tb testing.TB) *harness {
	tb.Helper()
	cfg := Config{Consistency: "local_quorum"}
	// The stack's login and TLS, when it has them (stack.sh env).
	if err := SettingsFromEnv().Apply(&cfg); err != nil {
		tb.Fatal(err)
	}
	cfg.Hosts = cassandraHosts(tb)
	cfg, cons, err := cfg.normalized()
	if err != nil {
		tb.Fatal(err)
	}
	admin, err := connect(cfg, cons, "", migrationTimeout)
	if err != nil {
		tb.Fatalf("%v; is Cassandra up? %s", err, howToRun)
	}
	h := &harness{tb: tb, cfg: cfg, admin: admin}
	tb.Cleanup(func() {
		h.mu.Lock()
		next := h.next
		h.mu.Unlock()
		if next != nil {
			r := <-next
			if r.sess != nil {
				r.sess.Close()
			}
			h.drop(r.keyspace)
		}
		h.drops.Wait()
		admin.Close()
	})
	return h
}

func testKeyspace() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "parley_test_" + hex.EncodeToString(b)
}

// prepare creates and migrates a fresh keyspace in the background.
func (h *harness) prepare() chan ready {
	ch := make(chan ready, 1)
	go func() {
		ctx := context.Background()
		cfg := h.cfg
		cfg.Keyspace = testKeyspace()
		r := ready{keyspace: cfg.Keyspace}
		defer func() { ch <- r }()
		if r.err = createKeyspace(ctx, h.admin, cfg); r.err != nil {
			return
		}
		cons, _ := ParseConsistency(cfg.Consistency)
		if r.sess, r.err = connect(cfg, cons, cfg.Keyspace, migrationTimeout); r.err != nil {
			return
		}
		if r.err = applyMigrations(ctx, r.sess, cfg.Keyspace); r.err != nil {
			r.sess.Close()
			r.sess = nil
		}
	}()
	return ch
}

func (h *harness) drop(keyspace string) {
	if err := h.admin.Query("DROP KEYSPACE IF EXISTS " + keyspace).Exec(); err != nil {
		h.tb.Errorf("drop keyspace %s: %v", keyspace, err)
	}
}

// dropLater drops the keyspace once the test ends, in the background.
func (h *harness) dropLater(tb testing.TB, keyspace string) {
	tb.Cleanup(func() { h.drops.Go(func() { h.drop(keyspace) }) })
}

// store returns an empty store in a new keyspace, dropped after the test.
// The store is the caller's to close (before the drop, as cleanups run
// last in, first out).
func (h *harness) store(tb testing.TB, bucketSize int) *Store {
	tb.Helper()
	return h.storeWith(tb, bucketSize, nil)
}

// storeWith is store with the clock now (time.Now when nil).
func (h *harness) storeWith(tb testing.TB, bucketSize int, now func() time.Time) *Store {
	tb.Helper()
	h.mu.Lock()
	ch := h.next
	if ch == nil {
		ch = h.prepare()
	}
	h.next = nil
	if h.prefetch {
		h.next = h.prepare()
	}
	h.mu.Unlock()
	r := <-ch
	h.dropLater(tb, r.keyspace)
	if r.err != nil {
		tb.Fatal(r.err)
	}
	ctx := context.Background()
	cfg := h.cfg
	cfg.Keyspace = r.keyspace
	cfg.BucketSize = bucketSize
	cfg.Now = now
	if _, err := settleBucketSize(ctx, r.sess, cfg, true); err != nil {
		r.sess.Close()
		tb.Fatal(err)
	}
	s, err := newStore(ctx, r.sess, cfg)
	if err != nil {
		r.sess.Close()
		tb.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	h := newHarness(t)
	h.prefetch = true
	start := time.Now()
	// Buckets of 100 events, so the suite's 2,600-event conversation spans
	// 26 partitions and its 200-event pages cross bucket edges.
	historytest.Run(t, func(t *testing.T) history.Store { return h.store(t, 100) })
	t.Logf("conformance suite against Cassandra took %s", time.Since(start).Round(time.Millisecond))
}

func TestConformanceClock(t *testing.T) {
	h := newHarness(t)
	historytest.RunClock(t, func(t *testing.T, now func() time.Time) history.Store { return h.storeWith(t, 100, now) })
}

func TestMigrateIdempotent(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	cfg := h.cfg
	cfg.Keyspace = testKeyspace()
	h.dropLater(t, cfg.Keyspace)

	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "-migrate") {
		t.Fatalf("Open of a keyspace that does not exist: err = %v, want a hint to run -migrate", err)
	}
	for i := range 2 {
		start := time.Now()
		if err := Migrate(ctx, cfg); err != nil {
			t.Fatalf("Migrate #%d: %v", i+1, err)
		}
		t.Logf("Migrate #%d took %s", i+1, time.Since(start).Round(time.Millisecond))
	}

	var tables []string
	iter := h.admin.Query(`SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?`, cfg.Keyspace).Iter()
	var name string
	for iter.Scan(&name) {
		tables = append(tables, name)
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(tables)
	want := []string{"conversation_flags", "conversations", "conversations_by_user", "device_positions", "history_events", "members_by_conversation",
		"reactions", "read_positions", "read_positions_by_conversation", "schema_migrations", "store_settings", "user_blocks", "user_contacts"}
	if !slices.Equal(tables, want) {
		t.Fatalf("tables = %v, want %v", tables, want)
	}

	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	iter = h.admin.Query(`SELECT version, checksum FROM ` + cfg.Keyspace + `.schema_migrations`).Iter()
	var (
		v   int
		sum string
	)
	for iter.Scan(&v, &sum) {
		rows++
		i := slices.IndexFunc(all, func(m migration) bool { return m.version == v })
		if i < 0 || all[i].checksum != sum {
			t.Errorf("schema_migrations has version %d checksum %s, not in this build", v, sum)
		}
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	if rows != len(all) {
		t.Fatalf("schema_migrations has %d rows, want %d", rows, len(all))
	}

	// Data written between migrations survives a third run.
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.bucketSize != DefaultBucketSize {
		t.Fatalf("bucket size = %d, want default %d", s.bucketSize, DefaultBucketSize)
	}
	c := "kept"
	if err := s.Apply(ctx, []*logv1.EventRecord{historytest.Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "t", "alice")}); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatalf("Migrate #3: %v", err)
	}
	if sum, err := s.Conversation(ctx, c); err != nil || sum.GetLastSeq() != 1 {
		t.Fatalf("after Migrate #3: %v, %v", sum, err)
	}

	// The bucket size is part of the layout.
	other := cfg
	other.BucketSize = 100
	if err := Migrate(ctx, other); err == nil || !strings.Contains(err.Error(), "bucket") {
		t.Fatalf("Migrate with another bucket size: err = %v, want a bucket size error", err)
	}
	if _, err := Open(ctx, other); err == nil || !strings.Contains(err.Error(), "bucket") {
		t.Fatalf("Open with another bucket size: err = %v, want a bucket size error", err)
	}
}

// TestMigrateFrom0001 upgrades a keyspace as the first release left it,
// with its data, and checks that the new build reads that data and keeps
// writing it.
func TestMigrateFrom0001(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	cfg := h.cfg
	cfg.Keyspace = testKeyspace()
	h.dropLater(t, cfg.Keyspace)
	if err := createKeyspace(ctx, h.admin, cfg); err != nil {
		t.Fatal(err)
	}
	cons, _ := ParseConsistency(cfg.Consistency)
	sess, err := connect(cfg, cons, cfg.Keyspace, migrationTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 2 || all[0].version != 1 {
		t.Fatalf("migrations = %+v, want 0001 and more", all)
	}
	if err := applyThese(ctx, sess, cfg.Keyspace, all[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := settleBucketSize(ctx, sess, cfg, true); err != nil {
		t.Fatal(err)
	}
	// What the 0001 build's Apply wrote for a direct conversation of two
	// events, the second posted by bob.
	const c = "old"
	created := historytest.Created(c, chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "", "alice", "bob")
	posted := historytest.Posted(c, 2, "bob", "from before")
	for _, q := range []*gocql.Query{
		sess.Query(`UPDATE conversations USING TIMESTAMP 1 SET kind = ?, title = '', members = members + ? WHERE conversation_id = ?`,
			int32(chatv1.ConversationKind_CONVERSATION_KIND_DIRECT), map[int64]string{1 << memberPosBits: "alice", 1<<memberPosBits | 1: "bob"}, c),
		sess.Query(`UPDATE conversations USING TIMESTAMP 2 SET last_seq = 2, last_activity = ?, last_message_preview = 'from before' WHERE conversation_id = ?`,
			posted.GetEvent().GetTime().AsTime().UnixNano(), c),
		sess.Query(insertUser, "alice", c, int64(1), int64(1)),
		sess.Query(insertUser, "bob", c, int64(1), int64(1)),
	} {
		if err := q.WithContext(ctx).Exec(); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range []*chatv1.Event{created.GetEvent(), posted.GetEvent()} {
		blob, _ := marshal.Marshal(ev)
		seq := int64(ev.GetSeq())
		if err := sess.Query(insertEvent, c, int64(0), seq, ev.GetEventId(), ev.GetSenderId(), eventTime(ev), blob, seq).WithContext(ctx).Exec(); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "0002") {
		t.Fatalf("Open of a keyspace at 0001: err = %v, want it to name the missing migration", err)
	}
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatalf("Migrate from 0001: %v", err)
	}
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	since := time.Now()
	// Positions start with this build: nothing read yet, and rows from
	// before count as unchanged.
	// Unread counts bob's message for alice only.
	for u, unread := range map[string]uint64{"alice": 1, "bob": 0} {
		l, err := s.Conversations(ctx, u, history.ListQuery{})
		if err != nil || len(l) != 1 || l[0].GetLastSeq() != 2 || l[0].GetReadSeq() != 0 || l[0].GetUnreadCount() != unread ||
			l[0].GetLastMessagePreview() != "from before" || fmt.Sprint(l[0].GetMemberIds()) != "[alice bob]" {
			t.Fatalf("%s lists %v, %v", u, l, err)
		}
		if l, err := s.Conversations(ctx, u, history.ListQuery{ChangedSince: since}); err != nil || len(l) != 0 {
			t.Fatalf("%s's changes since the upgrade: %v, %v; want none", u, l, err)
		}
	}
	if rs, err := s.Receipts(ctx, c); err != nil || len(rs) != 0 {
		t.Fatalf("receipts after the upgrade = %v, %v; want none", rs, err)
	}
	// Replaying the old events and applying new records works on the
	// upgraded tables.
	err = s.Apply(ctx, []*logv1.EventRecord{created, posted, historytest.FromDevice(historytest.Posted(c, 3, "alice", "after"), "a1"),
		historytest.Receipt(c, "bob", "b1", 3, 2)})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := s.Receipts(ctx, c)
	if err != nil || len(rs) != 2 || rs[0].GetUserId() != "alice" || rs[0].GetDeliveredSeq() != 3 || rs[0].GetReadSeq() != 3 ||
		rs[1].GetUserId() != "bob" || rs[1].GetDeliveredSeq() != 3 || rs[1].GetReadSeq() != 2 {
		t.Fatalf("receipts = %v, %v", rs, err)
	}
	l, err := s.Conversations(ctx, "bob", history.ListQuery{ChangedSince: since})
	if err != nil || len(l) != 1 || l[0].GetReadSeq() != 2 || l[0].GetUnreadCount() != 1 {
		t.Fatalf("bob's changes = %v, %v", l, err)
	}
	p, err := s.History(ctx, c, history.Query{})
	if err != nil || len(p.Events) != 3 || !proto.Equal(p.Events[1], posted.GetEvent()) {
		t.Fatalf("history = %v, %v", p.Events, err)
	}
}

// TestSummaryMatchesSummarize folds an awkward log (duplicate members, a
// re-added member, an event without time, a long message) with
// history.Summarize and checks that the stored summary is the same after
// applying it in order, again one by one, and again in reverse.
func TestSummaryMatchesSummarize(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.store(t, 3)
	defer s.Close()
	const c = "awkward"
	recs := []*logv1.EventRecord{
		historytest.Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "tïtle", "bob", "alice", "bob"),
		historytest.Posted(c, 2, "alice", strings.Repeat("é", 300)),
		historytest.Added(c, 3, "bob", "carol"),
		historytest.Added(c, 4, "carol", "alice"),
		historytest.Posted(c, 5, "carol", "last words"),
		historytest.Added(c, 6, "bob", "dave"),
	}
	recs[5].Event.Time = nil
	want := &chatv1.Conversation{}
	for _, r := range recs {
		history.Summarize(want, r.GetEvent())
	}
	check := func(stage string) {
		t.Helper()
		got, err := s.Conversation(ctx, c)
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("%s: summary\n got  %v\n want %v", stage, got, want)
		}
		// Each sender has read up to their own last event; unread are
		// the messages by others after it (alice's 2, carol's 5).
		for u, pos := range map[string][2]uint64{"alice": {2, 1}, "bob": {6, 0}, "carol": {5, 0}, "dave": {0, 2}} {
			entry := proto.CloneOf(want)
			entry.ReadSeq, entry.UnreadCount = pos[0], pos[1]
			l, err := s.Conversations(ctx, u, history.ListQuery{})
			if err != nil || len(l) != 1 || !proto.Equal(l[0], entry) {
				t.Fatalf("%s: %s lists %v, %v; want %v", stage, u, l, err, entry)
			}
		}
	}
	if err := s.Apply(ctx, recs); err != nil {
		t.Fatal(err)
	}
	check("in order")
	for _, r := range recs {
		if err := s.Apply(ctx, []*logv1.EventRecord{r}); err != nil {
			t.Fatal(err)
		}
	}
	check("one by one")
	rev := slices.Clone(recs)
	slices.Reverse(rev)
	if err := s.Apply(ctx, rev); err != nil {
		t.Fatal(err)
	}
	check("reversed")
	p, err := s.History(ctx, c, history.Query{})
	if err != nil || len(p.Events) != len(recs) || p.HasMore {
		t.Fatalf("history = %d events more=%v, %v", len(p.Events), p.HasMore, err)
	}
	for i, e := range p.Events {
		if !proto.Equal(e, recs[i].GetEvent()) {
			t.Fatalf("event %d = %v, want %v", i, e, recs[i].GetEvent())
		}
	}
}

// TestHistoryBoundedByLastSeq: events stored beyond the summary's last_seq
// (an Apply that failed between its two phases) stay invisible until the
// summary catches up, so readers never see a gap.
func TestHistoryBoundedByLastSeq(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.store(t, 10)
	defer s.Close()
	const c = "partial"
	var recs []*logv1.EventRecord
	recs = append(recs, historytest.Created(c, chatv1.ConversationKind_CONVERSATION_KIND_DIRECT, "", "alice", "bob"))
	for seq := uint64(2); seq <= 25; seq++ {
		recs = append(recs, historytest.Posted(c, seq, "alice", fmt.Sprint(seq)))
	}
	if err := s.Apply(ctx, recs[:15]); err != nil {
		t.Fatal(err)
	}
	// Only the event half of the rest.
	w := &convWrites{id: c}
	for _, r := range recs[15:] {
		b, _ := marshal.Marshal(r.GetEvent())
		w.events = append(w.events, r.GetEvent())
		w.blobs = append(w.blobs, b)
	}
	g, gctx := errgroup.WithContext(ctx)
	events := s.newPack(gctx)
	s.writeEvents(events, w)
	events.run(g)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	p, err := s.History(ctx, c, history.Query{Forward: true, AfterSeq: 10, Limit: 100})
	if err != nil || len(p.Events) != 5 || p.HasMore || p.Events[4].GetSeq() != 15 {
		t.Fatalf("forward page = %d events (last %v) more=%v, %v; want 11..15", len(p.Events), p.Events, p.HasMore, err)
	}
	p, _ = s.History(ctx, c, history.Query{Limit: 3})
	if len(p.Events) != 3 || p.Events[2].GetSeq() != 15 || !p.HasMore {
		t.Fatalf("newest page = %v more=%v; want 13..15", p.Events, p.HasMore)
	}
	if err := s.Apply(ctx, recs[15:]); err != nil {
		t.Fatal(err)
	}
	p, _ = s.History(ctx, c, history.Query{Limit: 3})
	if len(p.Events) != 3 || p.Events[2].GetSeq() != 25 {
		t.Fatalf("newest page after the retry = %v; want 23..25", p.Events)
	}
}

func BenchmarkHistoryPage50(b *testing.B) {
	h := newHarness(b)
	ctx := context.Background()
	s := h.store(b, 0) // the default bucket size, as in production
	defer s.Close()
	const c = "bench"
	const n = 5000
	text := strings.Repeat("a fairly ordinary chat message ", 4)
	recs := []*logv1.EventRecord{historytest.Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "bench", "alice", "bob")}
	for seq := uint64(2); seq <= n; seq++ {
		recs = append(recs, historytest.Posted(c, seq, "alice", text))
	}
	for len(recs) > 0 {
		k := min(500, len(recs))
		if err := s.Apply(ctx, recs[:k]); err != nil {
			b.Fatal(err)
		}
		recs = recs[k:]
	}
	run := func(name string, q history.Query, want uint64) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				p, err := s.History(ctx, c, q)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Events) != 50 || p.Events[0].GetSeq() != want {
					b.Fatalf("page starts at %d with %d events", p.Events[0].GetSeq(), len(p.Events))
				}
			}
		})
	}
	run("Newest", history.Query{Limit: 50}, n-49)
	run("BackwardAcrossBucketEdge", history.Query{BeforeSeq: 2026, Limit: 50}, 1976)
	run("ForwardCatchUp", history.Query{Forward: true, AfterSeq: 3000, Limit: 50}, 3001)
}
