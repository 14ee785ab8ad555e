// Package pebblestore is the embedded history store used by `make run`:
// CockroachDB's Pebble LSM on local disk.
package pebblestore

import (
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/pebble/v2"
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
	now func() time.Time
	fs  vfs.FS
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
	set := settings{now: time.Now}
	for _, o := range opts {
		o(&set)
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}, FS: set.fs})
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
