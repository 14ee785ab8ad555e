package records

import (
	"errors"
	"strings"
	"testing"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestDeadLetterRecordKeepsTheRecord(t *testing.T) {
	src := &kgo.Record{Topic: topics.Events, Partition: 3, Offset: 41, Key: []byte("conv"), Value: []byte{0xff, 1},
		Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("t1")}}}
	_, cause := DecodeEventRecord(src.Value)
	dl := DeadLetterRecord(src, "parley-persistence", cause)
	if dl.Topic != topics.DeadLetter || string(dl.Key) != "conv" || string(dl.Value) != "\xff\x01" {
		t.Fatalf("dead letter %s %q %q, want the source's key and value on %s", dl.Topic, dl.Key, dl.Value, topics.DeadLetter)
	}
	got := map[string]string{}
	for _, h := range dl.Headers {
		got[h.Key] = string(h.Value)
	}
	want := map[string]string{
		"trace": "t1", HeaderConsumer: "parley-persistence", HeaderTopic: topics.Events,
		HeaderPartition: "3", HeaderOffset: "41", HeaderReason: ReasonUndecodable, HeaderError: cause.Error(),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q", k, got[k], v)
		}
	}
	if ReasonOf(cause) != ReasonUndecodable || ReasonOf(errors.New("x")) != ReasonInvalid {
		t.Errorf("ReasonOf = %q", ReasonOf(cause))
	}

	long := DeadLetterRecord(src, "c", errors.New(strings.Repeat("é", 2*maxErrorHeader)))
	for _, h := range long.Headers {
		if h.Key == HeaderError && (len(h.Value) > maxErrorHeader || !strings.HasPrefix(strings.Repeat("é", maxErrorHeader), string(h.Value))) {
			t.Fatalf("error header of %d bytes, want at most %d of valid UTF-8", len(h.Value), maxErrorHeader)
		}
	}
}
