package platform

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/parleychat/parley/pkg/server/logread"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is the embedded cluster with what flushes its log to disk.
type Kafka struct {
	*kfake.Cluster
	stop, done chan struct{}
}

// KafkaFlushEvery is how often the embedded log is flushed to disk when
// batches are not synced one by one.
const KafkaFlushEvery = time.Second

// Close stops the cluster (kfake syncs its files as it closes) and the
// flusher.
func (k *Kafka) Close() {
	if k.stop != nil {
		close(k.stop)
		<-k.done
	}
	k.Cluster.Close()
}

// OpenKafka starts the embedded Kafka cluster on its data folder, first
// repairing what a crash left there. port 0 takes any free port.
//
// With syncWrites, kfake fsyncs every batch before answering its produce:
// an accepted message survives a power loss, and every request behind
// the sync waits in kfake's single request loop (under a reconnect storm
// that wait was most of a chat message's latency, docs/BENCHMARKS.md).
// Without it, kfake writes each batch to the operating system before
// answering, which a crash of this process cannot undo, and the log is
// flushed to disk every KafkaFlushEvery, as Kafka itself relies on the
// page cache (log.flush.interval.ms): a power loss can take the last
// second of the log.
//
// A kill leaves transactions open in the log, which kfake counts as
// aborted without writing their markers (see
// logread.SealCrashedTransactions). The markers must be in the log before
// any producer writes again, so when the folder holds a previous run the
// cluster is first opened on a port nobody knows, sealed and closed, then
// opened for real.
func OpenKafka(ctx context.Context, dir string, port int, syncWrites bool) (*Kafka, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kafka data dir: %w", err)
	}
	open := func(port int) (*kfake.Cluster, error) {
		opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(dir)}
		if syncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
		if port != 0 {
			opts = append(opts, kfake.Ports(port))
		}
		c, err := kfake.NewCluster(opts...)
		if err != nil {
			return nil, fmt.Errorf("start kfake on %s: %w", dir, err)
		}
		return c, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "meta.json")); err == nil {
		c, err := open(0)
		if err != nil {
			return nil, err
		}
		err = logread.SealCrashedTransactions(ctx, topics.ClientOpts(c.ListenAddrs()), topics.Events, topics.Outcomes, topics.DeadLetter)
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("repair kafka log in %s: %w", dir, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("kafka data dir: %w", err)
	}
	c, err := open(port)
	if err != nil {
		return nil, err
	}
	k := &Kafka{Cluster: c}
	if !syncWrites {
		k.stop, k.done = make(chan struct{}), make(chan struct{})
		go k.flush(dir)
	}
	return k, nil
}

// flush syncs the log's files to disk every KafkaFlushEvery until Close.
func (k *Kafka) flush(dir string) {
	defer close(k.done)
	t := time.NewTicker(KafkaFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
			syncTree(dir)
		}
	}
}

// syncTree fsyncs every file and folder under root (folders too, so new
// segments' names are on disk). Files come and go as kfake rolls and
// compacts them: what vanished mid-walk is skipped, and what cannot be
// synced is tried again a second later.
func syncTree(root string) {
	_ = filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		_ = f.Sync()
		_ = f.Close()
		return nil
	})
}
