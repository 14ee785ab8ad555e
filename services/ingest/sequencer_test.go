package ingest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/parleychat/parley/pkg/metrics"
	"github.com/parleychat/parley/pkg/topics"
	"github.com/parleychat/parley/pkg/topics/topicstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// readAtLeast reads n records of topic, failing the test without them.
func readAtLeast(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	out := topicstest.Read(t, brokers, topic, n)
	if len(out) < n {
		t.Fatalf("%s holds %d records, want %d", topic, len(out), n)
	}
	return out
}

// TestSequencerSetsAsideBadCommands: a command record that does not decode,
// or lacks its conversation, goes to the dead-letter topic (counted), the
// Submit waiting for the latter gets an error outcome at once, and the
// commands around them are sequenced as usual.
func TestSequencerSetsAsideBadCommands(t *testing.T) {
	brokers, cl := topicstest.Cluster(t, 1)
	deadLetters := newDeadLetters(metrics.NewRegistry())
	seq, err := NewSequencer(brokers, "", 10, slog.New(slog.DiscardHandler), deadLetters)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- seq.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	value := func(cmd *logv1.Command) []byte {
		b, _ := proto.Marshal(cmd)
		return b
	}
	create := createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob")
	noConv := postCmd("", "alice", "m0", "lost")
	noConv.CommandId = "cmd-noconv"
	post := postCmd("g", "alice", "m1", "hi")
	var recs []*kgo.Record
	for _, v := range [][]byte{value(create), {0xff, 0xff, 0xff}, value(noConv), value(post)} {
		recs = append(recs, &kgo.Record{Topic: topics.Commands, Key: []byte("g"), Value: v})
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	dead := readAtLeast(t, brokers, topics.DeadLetter, 2)
	for i, want := range []string{topics.ReasonUndecodable, topics.ReasonInvalid} {
		var consumer, reason string
		for _, h := range dead[i].Headers {
			switch h.Key {
			case topics.HeaderConsumer:
				consumer = string(h.Value)
			case topics.HeaderReason:
				reason = string(h.Value)
			}
		}
		if consumer != SequencerGroup || reason != want || string(dead[i].Value) != string(recs[i+1].Value) {
			t.Fatalf("dead letter %d: consumer %q reason %q, want %s %s and the record unchanged", i, consumer, reason, SequencerGroup, want)
		}
	}
	outcomes := map[string]*logv1.Outcome{}
	for _, r := range readAtLeast(t, brokers, topics.Outcomes, 3) {
		o := &logv1.Outcome{}
		if err := proto.Unmarshal(r.Value, o); err != nil {
			t.Fatal(err)
		}
		outcomes[o.GetCommandId()] = o
	}
	if o := outcomes["cmd-noconv"]; o.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("outcome of the command without conversation: %v", o)
	}
	if o := outcomes["cmd-m1"]; o.GetSeq() != 2 || o.GetErrorCode() != 0 {
		t.Fatalf("the post after the bad records: %v, want seq 2", o)
	}
	for reason, want := range map[string]float64{topics.ReasonUndecodable: 1, topics.ReasonInvalid: 1} {
		if got := testutil.ToFloat64(deadLetters.WithLabelValues(reason)); got != want {
			t.Fatalf("dead letters %s = %v, want %v", reason, got, want)
		}
	}
}
