package fanout

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/pkg/server/presenceclient"
	"github.com/prometheus/client_golang/prometheus"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// maxCachedUsers bounds each instance's share of the cache; past it the
// share is emptied and refilled by misses, which is simple and, for a
// cache of who is where, cheap.
const maxCachedUsers = 1 << 20

// locations caches Locate answers per presence instance, trusted only
// while that instance leases them (see presencev1 WatchLocations): a
// report opening a session is not answered until every cache that might
// say the user is elsewhere, or nowhere, dropped the entry or stopped
// being trusted. Entries that say "nowhere" are most of the gain: most
// recipients of a group's events are offline.
type locations struct {
	log    *slog.Logger
	client *presenceclient.Client
	// lookup asks presence (locate, with its retries).
	lookup func(ctx context.Context, users []string) ([]*presencev1.UserLocation, error)

	// lookups counts users answered from the cache (hit) or asked for (miss).
	lookups *prometheus.CounterVec

	mu    sync.Mutex
	insts []*instCache
}

type instCache struct {
	// validUntil ends the lease (monotonic clock); zero when none is held.
	validUntil time.Time
	// gen moves on every invalidation and reset, so an answer that an
	// invalidation overtook is not cached.
	gen   uint64
	users map[string][]string
}

func newLocations(client *presenceclient.Client, log *slog.Logger, reg prometheus.Registerer, lookup func(context.Context, []string) ([]*presencev1.UserLocation, error)) *locations {
	l := &locations{log: log, client: client, lookup: lookup, lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_location_lookups_total", ConstLabels: prometheus.Labels{"service": "fanout"}, Help: "Recipients located from fan-out's leased cache (hit) or by asking presence (miss).",
	}, []string{"result"})}
	reg.MustRegister(l.lookups)
	for range client.Instances() {
		l.insts = append(l.insts, &instCache{users: map[string][]string{}})
	}
	return l
}

// locate answers from the cache where a lease allows, and asks presence
// for the rest, caching what it learns unless an invalidation of that
// instance arrived or its lease lapsed meanwhile.
func (l *locations) locate(ctx context.Context, users []string) ([]*presencev1.UserLocation, error) {
	var out []*presencev1.UserLocation
	var missed []string
	gens := make([]uint64, len(l.insts))
	leased := make([]bool, len(l.insts))
	l.mu.Lock()
	now := time.Now()
	for i, c := range l.insts {
		gens[i], leased[i] = c.gen, now.Before(c.validUntil)
	}
	for _, u := range users {
		i := l.client.Owner(u)
		addrs, ok := l.insts[i].users[u]
		if !ok || !leased[i] {
			missed = append(missed, u)
			continue
		}
		if len(addrs) > 0 {
			out = append(out, &presencev1.UserLocation{UserId: u, PushAddresses: addrs})
		}
	}
	l.mu.Unlock()
	l.lookups.WithLabelValues("hit").Add(float64(len(users) - len(missed)))
	l.lookups.WithLabelValues("miss").Add(float64(len(missed)))
	if len(missed) == 0 {
		return out, nil
	}
	got, err := l.lookup(ctx, missed)
	out = append(out, got...)
	found := map[string][]string{}
	for _, loc := range got {
		found[loc.GetUserId()] = loc.GetPushAddresses()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now = time.Now()
	for _, u := range missed {
		i := l.client.Owner(u)
		c := l.insts[i]
		// Only an answer asked for under a lease, with no invalidation or
		// reset since, and the lease still held, may be kept. On an error
		// the users not found may merely be unanswered: keep nothing.
		if err != nil || !leased[i] || c.gen != gens[i] || !now.Before(c.validUntil) {
			continue
		}
		if len(c.users) >= maxCachedUsers {
			clear(c.users)
		}
		c.users[u] = found[u] // nil: located nowhere
	}
	return out, err
}

func (l *locations) invalidate(i int, users []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.insts[i]
	c.gen++
	for _, u := range users {
		delete(c.users, u)
	}
}

// reset forgets instance i's share and its lease: the stream carrying its
// invalidations broke, so nothing of it can be trusted.
func (l *locations) reset(i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.insts[i]
	c.gen++
	c.validUntil = time.Time{}
	clear(c.users)
}

func (l *locations) extend(i int, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.insts[i]; until.After(c.validUntil) {
		c.validUntil = until
	}
}

// watch keeps a lease and the invalidation stream of every instance until
// ctx ends, reconnecting after a break.
func (l *locations) watch(ctx context.Context) {
	var wg sync.WaitGroup
	for i, inst := range l.client.Instances() {
		wg.Go(func() {
			for backoff := 50 * time.Millisecond; ctx.Err() == nil; backoff = min(2*backoff, 2*time.Second) {
				err := l.watchOnce(ctx, i, inst)
				l.reset(i)
				if ctx.Err() != nil {
					return
				}
				l.log.Warn("fanout: location watch broken; locating without the cache until it is back", "instance", i, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
			}
		})
	}
	wg.Wait()
}

// watchOnce runs one stream: a lease request every quarter lease (each
// remembering when it was sent, which is when the lease it gets starts),
// invalidations applied and acknowledged.
func (l *locations) watchOnce(ctx context.Context, i int, inst presencev1.PresenceServiceClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := inst.WatchLocations(ctx)
	if err != nil {
		return err
	}
	var sendMu sync.Mutex
	send := func(m *presencev1.WatchLocationsRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	var reqMu sync.Mutex
	sent := map[uint64]time.Time{}
	// period is a quarter of the granted lease; short until the first grant.
	var period atomic.Int64
	period.Store(int64(100 * time.Millisecond))
	errc := make(chan error, 1)
	go func() {
		for id := uint64(1); ; id++ {
			reqMu.Lock()
			sent[id] = time.Now()
			reqMu.Unlock()
			if err := send(&presencev1.WatchLocationsRequest{LeaseRequest: id}); err != nil {
				errc <- err
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(period.Load())):
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		select {
		case err := <-errc:
			return err
		default:
		}
		if id := m.GetLeaseGranted(); id > 0 {
			reqMu.Lock()
			at, ok := sent[id]
			for k := range sent {
				if k <= id {
					delete(sent, k)
				}
			}
			reqMu.Unlock()
			if lease := m.GetLease().AsDuration(); ok && lease > 0 {
				l.extend(i, at.Add(lease))
				period.Store(int64(lease / 4))
			}
		}
		if n := m.GetInvalidation(); n > 0 {
			l.invalidate(i, m.GetUserIds())
			if err := send(&presencev1.WatchLocationsRequest{Ack: n}); err != nil {
				return err
			}
		}
	}
}
