package platform

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/parleychat/parley/pkg/server/logread"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kfake"
)

// OpenKafka starts the embedded Kafka cluster on its data folder, first
// repairing what a crash left there. port 0 takes any free port.
//
// A kill leaves transactions open in the log, which kfake counts as
// aborted without writing their markers (see
// logread.SealCrashedTransactions). The markers must be in the log before
// any producer writes again, so when the folder holds a previous run the
// cluster is first opened on a port nobody knows, sealed and closed, then
// opened for real.
func OpenKafka(ctx context.Context, dir string, port int) (*kfake.Cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kafka data dir: %w", err)
	}
	open := func(port int) (*kfake.Cluster, error) {
		opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(dir), kfake.SyncWrites()}
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
	return open(port)
}
