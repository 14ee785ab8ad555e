// Package pebblestore is the embedded history store used by `make run`:
// CockroachDB's Pebble LSM on local disk.
package pebblestore

import (
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/parleychat/parley/services/persistence/history"
)

// Store is a history.Store on Pebble.
//
// Apply reads what it folds into (summaries, positions) and writes the
// result in one batch, so two Apply calls must not carry records of the
// same conversation at once; the persistence consumer applies one batch
// at a time.
type Store struct {
	db  *pebble.DB
	now func() time.Time
}

var _ history.Store = (*Store)(nil)

// Option configures Open.
type Option func(*settings)

type settings struct {
	now   func() time.Time
	fs    vfs.FS
	cache int64
}

// DefaultCacheSize is the block cache a store gets unless WithCacheSize
// says otherwise. Pebble's own default (8 MB) let a reconnect storm's
// history reads decode the same index blocks from the files again and
// again: 28% of `parley run`'s CPU in a 10,000-device storm.
const DefaultCacheSize = 64 << 20

// WithCacheSize sets the block cache's size in bytes.
func WithCacheSize(n int64) Option {
	return func(s *settings) { s.cache = n }
}

// WithClock sets the clock that change times (ListQuery.ChangedSince) are
// measured with; time.Now by default.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { s.now = now }
}

// InMemory keeps the store in memory instead of dir, for tests that open
// many stores or write a lot: a synced commit costs no fsync there.
func InMemory() Option {
	return func(s *settings) { s.fs = vfs.NewMem() }
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts ...Option) (*Store, error) {
	set := settings{now: time.Now, cache: DefaultCacheSize}
	for _, o := range opts {
		o(&set)
	}
	po := &pebble.Options{Logger: quietLogger{}, FS: set.fs, CacheSize: set.cache}
	// Point reads (a conversation's summary, a member's state, an event by
	// seq) skip the files that lack the key by their bloom filter instead
	// of reading an index and a data block of each.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("open pebble history store at %s: %w", dir, err)
	}
	return &Store{db: db, now: set.now}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// quietLogger keeps Pebble's info chatter out of the service log.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
