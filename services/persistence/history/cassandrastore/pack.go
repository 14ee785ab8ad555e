package cassandrastore

import (
	"context"
	"fmt"
	"strings"

	"github.com/gocql/gocql"
	"golang.org/x/sync/errgroup"
)

const (
	// DefaultGroupPartitions is how many partitions' writes share one
	// request by default (Config.GroupPartitions). Cassandra warns about
	// unlogged batches spanning more than 10 partitions
	// (unlogged_batch_across_partitions_warn_threshold).
	DefaultGroupPartitions = 10
	// groupBytes bounds a request holding several partitions: Cassandra
	// warns about such a batch past 5 KiB (batch_size_warn_threshold) and
	// refuses it past 50 KiB. A single partition's writes are not bound
	// by it (they are one mutation, which neither threshold looks at).
	groupBytes = 4 << 10
)

// A pack gathers the writes of one step of an Apply into few requests.
// Each unit is the statements of one partition, which Cassandra applies
// as one mutation: whole, on its own. Units share an unlogged batch, up
// to the store's group of partitions and groupBytes, so that a batch of
// events across many conversations costs a few requests rather than
// three per conversation. Nothing across partitions is atomic, in a
// shared batch or not; the order that matters (events before the
// summaries naming them) is kept by the steps of Apply, one pack each.
type pack struct {
	s     *Store
	ctx   context.Context
	units []unit
}

// unit is one partition's statements and what they are, for errors.
type unit struct {
	entries []gocql.BatchEntry
	bytes   int
	what    string
}

func (s *Store) newPack(ctx context.Context) *pack { return &pack{s: s, ctx: ctx} }

// add queues b's statements, all of one partition, as one unit.
func (p *pack) add(b *gocql.Batch, what string) {
	if len(b.Entries) == 0 {
		return
	}
	u := unit{entries: b.Entries, what: what}
	for _, e := range b.Entries {
		u.bytes += argBytes(e.Args)
	}
	p.units = append(p.units, u)
}

// query queues one statement as a unit of its own.
func (p *pack) query(what, stmt string, args ...any) {
	p.units = append(p.units, unit{entries: []gocql.BatchEntry{{Stmt: stmt, Args: args}}, bytes: argBytes(args), what: what})
}

// argBytes estimates what a statement's values weigh in its mutation.
func argBytes(args []any) int {
	n := 16
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			n += len(v)
		case string:
			n += len(v)
		case []string:
			for _, s := range v {
				n += len(s)
			}
		case map[int64]string:
			for _, s := range v {
				n += 8 + len(s)
			}
		default:
			n += 8
		}
	}
	return n
}

// run sends the queued units on g, grouped.
func (p *pack) run(g *errgroup.Group) {
	for _, units := range split(p.units, p.s.group) {
		batch := p.s.sess.NewBatch(gocql.UnloggedBatch).WithContext(p.ctx)
		for _, u := range units {
			batch.Entries = append(batch.Entries, u.entries...)
		}
		g.Go(func() error {
			if err := p.s.sess.ExecuteBatch(batch); err != nil {
				return fmt.Errorf("%s: %w", describe(units), err)
			}
			return nil
		})
	}
}

// split cuts units, in order, into requests of at most group units and
// groupBytes; a unit heavier than that goes alone.
func split(units []unit, group int) [][]unit {
	group = max(group, 1)
	var out [][]unit
	for i := 0; i < len(units); {
		j, bytes := i+1, units[i].bytes
		for j < len(units) && j-i < group && bytes+units[j].bytes <= groupBytes {
			bytes += units[j].bytes
			j++
		}
		out = append(out, units[i:j])
		i = j
	}
	return out
}

// describe names the units of a failed request.
func describe(units []unit) string {
	const shown = 3
	var b strings.Builder
	for i, u := range units[:min(len(units), shown)] {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(u.what)
	}
	if len(units) > shown {
		fmt.Fprintf(&b, "; and %d more partitions", len(units)-shown)
	}
	return b.String()
}
