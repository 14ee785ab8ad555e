package fanout

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// fakeEdge is an edge's Push and a presence that puts every user there.
type fakeEdge struct {
	edgev1.UnimplementedEdgeServiceServer
	presencev1.UnimplementedPresenceServiceServer
	addr string
	mu   sync.Mutex
	got  []string // seq:event_id:users, or r:user:users, of each delivery
}

func (f *fakeEdge) Push(_ context.Context, req *edgev1.PushRequest) (*edgev1.PushResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range req.GetDeliveries() {
		if r := d.GetReceipt(); r != nil {
			f.got = append(f.got, fmt.Sprintf("r:%s:%v", r.GetUserId(), d.GetUserIds()))
			continue
		}
		f.got = append(f.got, fmt.Sprintf("%d:%s:%v", d.GetEvent().GetSeq(), d.GetEvent().GetEventId(), d.GetUserIds()))
	}
	return &edgev1.PushResponse{}, nil
}

func (f *fakeEdge) Locate(_ context.Context, req *presencev1.LocateRequest) (*presencev1.LocateResponse, error) {
	resp := &presencev1.LocateResponse{}
	for _, u := range req.GetUserIds() {
		resp.Locations = append(resp.Locations, &presencev1.UserLocation{UserId: u, PushAddresses: []string{f.addr}})
	}
	return resp, nil
}

func (f *fakeEdge) pushed() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.got, " ")
}

// start runs kfake with Parley's topics, the fake edge and presence, and
// fan-out; it returns a Kafka client.
func start(t *testing.T) (*Service, *fakeEdge, []string, *kgo.Client) {
	t.Helper()
	brokers, cl := topicstest.Cluster(t, 2)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	edge := &fakeEdge{addr: lis.Addr().String()}
	gs := grpc.NewServer()
	edgev1.RegisterEdgeServiceServer(gs, edge)
	presencev1.RegisterPresenceServiceServer(gs, edge)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	s, err := New(Config{Brokers: brokers, PresenceAddrs: []string{edge.addr}, Logger: slog.New(slog.DiscardHandler), Registry: metrics.NewRegistry()})
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
	})
	return s, edge, brokers, cl
}

func eventValue(seq uint64, id string) []byte {
	b, _ := proto.Marshal(&logv1.EventRecord{
		Event:        &chatv1.Event{ConversationId: "conv", Seq: seq, EventId: id},
		RecipientIds: []string{"alice"},
	})
	return b
}

// TestUndecodableRecordIsDeadLettered: garbage among events is not pushed
// but lands, unchanged and with its origin, on the dead-letter topic
// before the batch is committed; the events and the receipt around it are
// pushed.
func TestUndecodableRecordIsDeadLettered(t *testing.T) {
	s, edge, brokers, cl := start(t)
	receipt, _ := proto.Marshal(&logv1.EventRecord{
		Receipt: &chatv1.Receipt{ConversationId: "conv", UserId: "bob", ReadSeq: 1}, RecipientIds: []string{"alice"}})
	recs := topicstest.Produce(t, cl, topics.Events, "conv", eventValue(1, "e1"), []byte("\xff\xff garbage"), receipt, eventValue(2, "e2"))
	topicstest.WaitFor(t, "two events and a receipt pushed", func() bool { return edge.pushed() == "1:e1:[alice] r:bob:[alice] 2:e2:[alice]" })
	topicstest.WaitFor(t, "offsets committed past the garbage", func() bool { return topicstest.CommittedToEnd(cl, Group, topics.Events) })

	dcl, err := kgo.NewClient(append(topics.ClientOpts(brokers),
		kgo.ConsumeTopics(topics.DeadLetter), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var dls []*kgo.Record
	for len(dls) == 0 && ctx.Err() == nil {
		dls = dcl.PollFetches(ctx).Records()
	}
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	dl, src := dls[0], recs[1]
	if !bytes.Equal(dl.Key, src.Key) || !bytes.Equal(dl.Value, src.Value) {
		t.Errorf("dead letter %q=%q, want the original %q=%q", dl.Key, dl.Value, src.Key, src.Value)
	}
	h := map[string]string{}
	for _, x := range dl.Headers {
		h[x.Key] = string(x.Value)
	}
	for k, v := range map[string]string{
		records.HeaderConsumer: Group, records.HeaderTopic: topics.Events, records.HeaderReason: records.ReasonUndecodable,
		records.HeaderPartition: strconv.Itoa(int(src.Partition)), records.HeaderOffset: strconv.FormatInt(src.Offset, 10),
	} {
		if h[k] != v {
			t.Errorf("dead letter header %s = %q, want %q", k, h[k], v)
		}
	}
	if h[records.HeaderError] == "" {
		t.Error("dead letter without the error text")
	}

	if got := testutil.ToFloat64(s.counts.DeadLetters.WithLabelValues(records.ReasonUndecodable)); got != 1 {
		t.Errorf("parley_dead_letters_total{reason=undecodable} = %v, want 1", got)
	}
	w := httptest.NewRecorder()
	s.Metrics().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if line := `parley_dead_letters_total{reason="undecodable",service="fanout"} 1`; !strings.Contains(w.Body.String(), line) {
		t.Errorf("/metrics lacks %q", line)
	}
}

// TestFirstSeqWins: copies of pushed seqs with other event ids (a zombie
// sequencer's), in the same batch and in a later one, are not pushed.
func TestFirstSeqWins(t *testing.T) {
	s, edge, _, cl := start(t)
	topicstest.Produce(t, cl, topics.Events, "conv", eventValue(1, "e1"), eventValue(2, "e2"), eventValue(1, "zombie-1"), eventValue(3, "e3"))
	topicstest.WaitFor(t, "three events pushed", func() bool { return edge.pushed() == "1:e1:[alice] 2:e2:[alice] 3:e3:[alice]" })
	topicstest.WaitFor(t, "the first batch committed", func() bool { return topicstest.CommittedToEnd(cl, Group, topics.Events) })
	topicstest.Produce(t, cl, topics.Events, "conv", eventValue(3, "zombie-3"), eventValue(4, "e4"))
	topicstest.WaitFor(t, "the fourth event pushed", func() bool { return strings.HasSuffix(edge.pushed(), " 4:e4:[alice]") })
	if got, want := edge.pushed(), "1:e1:[alice] 2:e2:[alice] 3:e3:[alice] 4:e4:[alice]"; got != want {
		t.Fatalf("pushed %s\nwant   %s", got, want)
	}
	if got := testutil.ToFloat64(s.counts.StaleEvents); got != 2 {
		t.Fatalf("parley_stale_events_total = %v, want 2", got)
	}
}
