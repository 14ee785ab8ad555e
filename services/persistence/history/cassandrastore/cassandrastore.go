// Package cassandrastore is the history.Store on Apache Cassandra, used
// when persistence runs against real infrastructure (the embedded mode uses
// pebblestore). The schema lives in migrations/*.cql, embedded in the
// binary and applied by Migrate; the comments there describe each table and
// the query it serves.
//
// Writes are blind (Apply never reads) and idempotent without lightweight
// transactions: every cell is written USING TIMESTAMP taken from the seq of
// the event that sets it, so the highest seq wins whatever the order of
// arrival, and writing an event again stores what is already there.
// Replaying parley.events.v1 therefore rebuilds the same views.
//
// Positions follow the same rule with the position as its own timestamp,
// so they only move forward. The one value not derived from the log is
// changed_at, the store's clock when Apply wrote a change (for
// ListQuery.ChangedSince); it is written with the timestamp of the change
// it records, so a replay can only move it later. See
// migrations/0002_receipts.cql.
//
// Within one Apply, the events go first and the summaries and positions
// after, so a conversation's last_seq never names an event that is not yet
// stored. History relies on that: it bounds its reads by last_seq and never
// shows a gap.
package cassandrastore

import (
	"context"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
)

const (
	// memberPosBits is the room for a user's index within one event's
	// member list in a conversations.members key (seq << memberPosBits |
	// index).
	memberPosBits      = 20
	maxMembersPerEvent = 1 << memberPosBits
	// maxSeq keeps every member key, and every write timestamp, within a
	// bigint.
	maxSeq = 1<<(63-memberPosBits) - 1
	// parallel bounds the requests one call keeps in flight.
	parallel = 16
	// Event batches stay small enough to be cheap to retry.
	maxBatchStatements = 100
	maxBatchBytes      = 1 << 20
)

// Store is a history.Store on Cassandra. It is safe for concurrent use.
type Store struct {
	sess       *gocql.Session
	keyspace   string
	bucketSize uint64
	// group is Config.GroupPartitions.
	group int
	now   func() time.Time
}

var _ history.Store = (*Store)(nil)

// Open connects to cfg's keyspace, which Migrate must have brought to this
// build's schema; Open checks that, and the bucket size, and fails with
// what to do otherwise.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, cons, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	sess, err := connect(cfg, cons, cfg.Keyspace, cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("%w (a missing keyspace is created by Migrate: start parley-persistence once with -migrate / PARLEY_MIGRATE=1)", err)
	}
	s, err := newStore(ctx, sess, cfg)
	if err != nil {
		sess.Close()
		return nil, err
	}
	return s, nil
}

// newStore wraps a session bound to a migrated keyspace.
func newStore(ctx context.Context, sess *gocql.Session, cfg Config) (*Store, error) {
	if err := checkSchema(ctx, sess, cfg.Keyspace); err != nil {
		return nil, err
	}
	size, err := settleBucketSize(ctx, sess, cfg, false)
	if err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	group := cfg.GroupPartitions
	if group <= 0 {
		group = DefaultGroupPartitions
	}
	return &Store{sess: sess, keyspace: cfg.Keyspace, bucketSize: uint64(size), group: group, now: now}, nil
}

// Close closes the session.
func (s *Store) Close() error {
	s.sess.Close()
	return nil
}

func (s *Store) bucket(seq uint64) int64 { return int64((seq - 1) / s.bucketSize) }

// Ping asks the cluster one cheap question (readiness uses it): an error
// means no coordinator answered.
func (s *Store) Ping(ctx context.Context) error {
	var v string
	if err := s.sess.Query("SELECT release_version FROM system.local").WithContext(ctx).Scan(&v); err != nil {
		return fmt.Errorf("cassandra: %w", err)
	}
	return nil
}
