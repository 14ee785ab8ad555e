package platform

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaKeepsWhatItAcknowledged: in both modes, a record the embedded
// Kafka acknowledged is there when it is opened again; the flusher of the
// default mode stops with Close.
func TestKafkaKeepsWhatItAcknowledged(t *testing.T) {
	for _, sync := range []bool{false, true} {
		t.Run(map[bool]string{false: "flushed every second", true: "synced every batch"}[sync], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			dir := t.TempDir()
			k, err := OpenKafka(ctx, dir, 0, sync)
			if err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(kgo.SeedBrokers(k.ListenAddrs()...), kgo.AllowAutoTopicCreation())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "t"); err != nil {
				t.Fatal(err)
			}
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("kept")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			cl.Close()
			if !sync {
				time.Sleep(KafkaFlushEvery + 200*time.Millisecond) // a flush runs beside the cluster
			}
			closed := make(chan struct{})
			go func() { k.Close(); close(closed) }()
			select {
			case <-closed:
			case <-ctx.Done():
				t.Fatal("Close did not return")
			}

			k, err = OpenKafka(ctx, dir, 0, sync)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			cl, err = kgo.NewClient(kgo.SeedBrokers(k.ListenAddrs()...), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			fs := cl.PollFetches(ctx)
			if err := fs.Err0(); err != nil {
				t.Fatal(err)
			}
			if recs := fs.Records(); len(recs) != 1 || string(recs[0].Value) != "kept" {
				t.Fatalf("after a reopen the topic holds %d records, want the one acknowledged", len(recs))
			}
		})
	}
}
