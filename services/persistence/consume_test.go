package persistence

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/parleychat/parley/services/persistence/history/pebblestore"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func eventValue(t *testing.T, seq uint64, id, text string) []byte {
	t.Helper()
	ev := &chatv1.Event{ConversationId: "conv", Seq: seq, EventId: id, SenderId: "alice"}
	if seq == 1 {
		ev.Body = &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
			Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "t", MemberIds: []string{"alice", "bob"}}}
	} else {
		ev.Body = &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: text}}
	}
	b, err := proto.Marshal(&logv1.EventRecord{Event: ev, RecipientIds: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkDeadLetter(t *testing.T, dl, src *kgo.Record, consumer, reason string) {
	t.Helper()
	if !bytes.Equal(dl.Key, src.Key) || !bytes.Equal(dl.Value, src.Value) {
		t.Errorf("dead letter %q=%q, want the original %q=%q", dl.Key, dl.Value, src.Key, src.Value)
	}
	h := map[string]string{}
	for _, x := range dl.Headers {
		h[x.Key] = string(x.Value)
	}
	want := map[string]string{
		records.HeaderConsumer: consumer, records.HeaderTopic: topics.Events, records.HeaderReason: reason,
		records.HeaderPartition: strconv.Itoa(int(src.Partition)), records.HeaderOffset: strconv.FormatInt(src.Offset, 10),
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("dead letter header %s = %q, want %q", k, h[k], v)
		}
	}
	if h[records.HeaderError] == "" {
		t.Error("dead letter without the error text")
	}
}

func startPersistence(t *testing.T, brokers []string) (*Service, history.Store) {
	t.Helper()
	store, err := pebblestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Brokers: brokers, GRPCAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Registry: metrics.NewRegistry()}, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		store.Close()
	})
	return s, store
}

// stored describes the conversation's history as seq:event_id:text.
func stored(t *testing.T, store history.Store) string {
	page, err := store.History(t.Context(), "conv", history.Query{Forward: true, Limit: history.MaxLimit})
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, ev := range page.Events {
		parts = append(parts, fmt.Sprintf("%d:%s:%s", ev.GetSeq(), ev.GetEventId(), ev.GetMessagePosted().GetText()))
	}
	return strings.Join(parts, " ")
}

// TestUndecodableRecordIsDeadLettered puts garbage, a record with nothing
// in it and a receipt among valid events: the events and the receipt are
// stored, the two bad records land unchanged on the dead-letter topic with
// their origin, and the group commits past all of them.
func TestUndecodableRecordIsDeadLettered(t *testing.T) {
	brokers, cl := topicstest.Cluster(t, 2)
	receipt, _ := proto.Marshal(&logv1.EventRecord{Receipt: &chatv1.Receipt{ConversationId: "conv", UserId: "bob", DeviceId: "phone", ReadSeq: 1}})
	empty, _ := proto.Marshal(&logv1.EventRecord{CommandId: "c"})
	recs := topicstest.Produce(t, cl, topics.Events, "conv",
		eventValue(t, 1, "e1", ""),
		[]byte("\xff\xff garbage"),
		eventValue(t, 2, "e2", "two"),
		receipt,
		empty,
		eventValue(t, 3, "e3", "three"),
	)
	s, store := startPersistence(t, brokers)

	topicstest.WaitFor(t, "three events stored", func() bool { return stored(t, store) == "1:e1: 2:e2:two 3:e3:three" })
	topicstest.WaitFor(t, "bob's receipt stored", func() bool {
		rs, _ := store.Receipts(t.Context(), "conv")
		return slices.ContainsFunc(rs, func(r *chatv1.Receipt) bool { return r.GetDeviceId() == "phone" && r.GetReadSeq() == 1 })
	})
	dls := topicstest.Read(t, brokers, topics.DeadLetter, 2)
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dls))
	}
	checkDeadLetter(t, dls[0], recs[1], Group, records.ReasonUndecodable)
	checkDeadLetter(t, dls[1], recs[4], Group, records.ReasonEmpty)
	topicstest.WaitFor(t, "offsets committed past the bad records", func() bool { return topicstest.CommittedToEnd(cl, Group, topics.Events) })

	for reason, want := range map[string]float64{records.ReasonUndecodable: 1, records.ReasonEmpty: 1, records.ReasonInvalid: 0} {
		if got := testutil.ToFloat64(s.counts.DeadLetters.WithLabelValues(reason)); got != want {
			t.Errorf("parley_dead_letters_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	w := httptest.NewRecorder()
	s.Metrics().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range []string{
		`parley_dead_letters_total{reason="undecodable",service="persistence"} 1`,
		`parley_stale_events_total{service="persistence"} 0`,
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(w.Body.String(), line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

// TestFirstSeqWins replays what a zombie sequencer does: copies of events
// under seqs already stored, with other event ids, in the same batch and
// in a later one. The first copy of each seq stays.
func TestFirstSeqWins(t *testing.T) {
	brokers, cl := topicstest.Cluster(t, 2)
	topicstest.Produce(t, cl, topics.Events, "conv",
		eventValue(t, 1, "e1", ""),
		eventValue(t, 2, "e2", "two"),
		eventValue(t, 3, "e3", "three"),
		eventValue(t, 2, "zombie-2", "two"),
		eventValue(t, 4, "e4", "four"),
	)
	s, store := startPersistence(t, brokers)
	topicstest.WaitFor(t, "four events stored", func() bool { return stored(t, store) == "1:e1: 2:e2:two 3:e3:three 4:e4:four" })
	topicstest.WaitFor(t, "the first batch committed", func() bool { return topicstest.CommittedToEnd(cl, Group, topics.Events) })

	topicstest.Produce(t, cl, topics.Events, "conv", eventValue(t, 3, "zombie-3", "three"), eventValue(t, 5, "e5", "five"))
	topicstest.WaitFor(t, "the fifth event stored", func() bool { return strings.HasSuffix(stored(t, store), " 5:e5:five") })
	if got, want := stored(t, store), "1:e1: 2:e2:two 3:e3:three 4:e4:four 5:e5:five"; got != want {
		t.Fatalf("history %s\nwant    %s", got, want)
	}
	if got := testutil.ToFloat64(s.counts.StaleEvents); got != 2 {
		t.Fatalf("parley_stale_events_total = %v, want 2", got)
	}
}

// TestGuardForgetsRevokedPartitions: the guard's group callbacks run when
// the client gives its partitions up (here by leaving the group), so a
// partition that comes back starts with no memory.
func TestGuardForgetsRevokedPartitions(t *testing.T) {
	brokers, cl := topicstest.Cluster(t, 2)
	topicstest.Produce(t, cl, topics.Events, "conv", eventValue(t, 3, "e3", "three"))
	guard := &records.SeqGuard{}
	gcl, err := kgo.NewClient(append(topics.ClientOpts(brokers), topics.GroupOpts("guard-test", "", append(guard.Opts(),
		kgo.ConsumeTopics(topics.Events), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll())...)...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer gcl.Close()
	var rec *kgo.Record
	for rec == nil && t.Context().Err() == nil {
		if recs := gcl.PollRecords(t.Context(), 10).Records(); len(recs) > 0 {
			rec = recs[0]
		}
	}
	gcl.AllowRebalance()
	seq := func(n uint64) *chatv1.Event { return &chatv1.Event{ConversationId: "conv", Seq: n} }
	if !guard.Fresh(rec, seq(3)) || guard.Fresh(rec, seq(2)) {
		t.Fatal("the guard let a lower seq through while the partition was held")
	}
	gcl.LeaveGroup()
	if !guard.Fresh(rec, seq(2)) {
		t.Fatal("the guard still remembers a partition the client gave up")
	}
}
