// Package presence is the session registry: edges report the sessions they
// hold, fan-out asks where a user's devices are, edges ask who is online.
//
// The state is event-sourced: every change is a record on the compacted
// topic parley.presence.v1, keyed by user, and an instance serves only what
// it has applied from its partitions. Several instances split the users:
// instance i of n owns the partitions p with p mod n = i, so that the
// clients find a user's instance by topics.UserShard(user, n) alone. A
// restarted instance replays its partitions before it serves.
package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/tracing"
)

// DefaultLease bounds how long a dead edge's sessions linger.
const DefaultLease = 10 * time.Second

// MaxLocate bounds users per Locate call.
const MaxLocate = 10_000

// Config configures the service.
type Config struct {
	GRPCAddr string
	Brokers  []string
	// Kafka are the TLS and SASL options every Kafka client of the service
	// adds to the seed brokers (kafkaconf.Config.Opts); none for plaintext.
	Kafka []kgo.Opt
	// TLS, when set, is the internal mTLS: the gRPC server requires a
	// client certificate from its CA.
	TLS *mtls.Source
	// Instance is this instance's index among Instances; Instances must
	// divide the partition count of parley.presence.v1.
	Instance, Instances int
	Lease               time.Duration
	// Settle bounds how long a restarted instance waits for nodes that
	// were silent while it was down (see settle); Lease if 0.
	Settle time.Duration
	// WatchLease is the lease of location watchers (WatchLease if 0): how
	// long a fan-out node may trust its cache unrenewed, and so how long a
	// report opening a session may wait for one that stopped answering, or,
	// just after this instance started, for one its predecessor leased to.
	WatchLease time.Duration
	// StartupTimeout bounds Run's wait for Kafka to answer, after which
	// Run fails naming the brokers (topics.StartupTimeout if 0).
	StartupTimeout time.Duration
	Logger         *slog.Logger
	// Registry holds the service's metrics; the caller makes it
	// (metrics.NewRegistry) and may serve it too. A registry nobody
	// serves if nil.
	Registry *prometheus.Registry
	// TracerProvider makes a span of each gRPC call; nil makes none.
	TracerProvider trace.TracerProvider
}

// Consumer is the name presence's consumer goes by in
// parley_consumer_lag: it assigns itself its partitions, in no Kafka
// group.
const Consumer = "parley-presence"

// Service is a running presence instance.
type Service struct {
	presencev1.UnimplementedPresenceServiceServer
	cfg Config
	now func() time.Time
	log *slog.Logger
	// regs is the state of each owned partition. A node's heartbeat and
	// its end are recorded in every partition, so each partition's state
	// stands alone: replaying partitions in any interleaving, one's
	// ending of a node never touches another's sessions.
	regs map[int32]*Registry
	cl   *kgo.Client
	lis  net.Listener
	grpc *grpc.Server
	// Probe is ready once the instance's partitions are replayed.
	Probe health.Probe

	// owned are this instance's partitions, known once Run has read the
	// topic's metadata; ready is closed then and once they are replayed.
	owned []int32
	ready chan struct{}
	// reporting is closed once the replay is done: reports are taken
	// from then on, queries only from ready.
	reporting chan struct{}

	// writeMu serialises the writers (reports and expiry), each of which
	// plans records from the state and waits for them to be applied, so a
	// plan never starts from a state another writer is about to change.
	writeMu sync.Mutex

	// mu guards applied and progress.
	mu sync.Mutex
	// applied is, per owned partition, the offset after the last record
	// applied; progress is closed and replaced whenever it moves.
	applied  map[int32]int64
	progress chan struct{}

	// watch are the fan-out nodes caching locations.
	watch *watchers

	reg     *prometheus.Registry
	metrics *metrics.Service
}

// New binds the gRPC listener and creates the Kafka client.
func New(cfg Config) (*Service, error) { return newService(cfg, time.Now) }

// newService takes the clock, so tests can move time.
func newService(cfg Config, now func() time.Time) (*Service, error) {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Settle <= 0 {
		cfg.Settle = cfg.Lease
	}
	if cfg.Instances <= 0 {
		cfg.Instances = 1
	}
	if cfg.WatchLease <= 0 {
		cfg.WatchLease = WatchLease
	}
	if cfg.Instance < 0 || cfg.Instance >= cfg.Instances {
		return nil, fmt.Errorf("presence instance %d of %d: out of range", cfg.Instance, cfg.Instances)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = metrics.NewRegistry()
	}
	m := metrics.ForService(cfg.Registry, "presence")
	cl, err := kgo.NewClient(append(topics.ClientOpts(cfg.Brokers, cfg.Kafka...), kgo.RecordPartitioner(kgo.ManualPartitioner()), m.Kafka("client"))...)
	if err != nil {
		return nil, fmt.Errorf("presence kafka client: %w", err)
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("presence: grpc address: %w", err)
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("service", "presence", "instance", cfg.Instance), now: now, regs: map[int32]*Registry{},
		reg: cfg.Registry, metrics: m,
		cl: cl, lis: lis, grpc: grpc.NewServer(append(append(m.GRPCServer(), tracing.GRPCServer(cfg.TracerProvider)...), mtls.ServerOption(cfg.TLS))...), ready: make(chan struct{}), reporting: make(chan struct{}), applied: map[int32]int64{}, progress: make(chan struct{})}
	s.watch = newWatchers(cfg.WatchLease, min(watchAckTimeout, cfg.WatchLease/2), s.log)
	presencev1.RegisterPresenceServiceServer(s.grpc, s)
	return s, nil
}

// Addr is the bound gRPC address.
func (s *Service) Addr() string { return s.lis.Addr().String() }

// Close releases what New opened, for a service whose Run is never called
// (Run releases it otherwise): a process that fails to start the parts
// after this one.
func (s *Service) Close() {
	s.lis.Close()
	s.cl.Close()
}

// Run replays the instance's partitions, then serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	defer s.cl.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// Calls before the replay ends are refused (unavailable), never
		// answered from a partial state.
		if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("presence grpc serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.Probe.SetReady(false)
		// Watch streams never end by themselves; a graceful stop would
		// wait for them forever.
		s.watch.closeAll()
		stopped := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			// A watcher that came in during the stop holds it open.
			s.grpc.Stop()
		}
		return nil
	})
	g.Go(func() error { return s.replayAndServe(gctx) })
	return g.Wait()
}

func (s *Service) replayAndServe(ctx context.Context) error {
	start := time.Now()
	if err := topics.WaitReadyWithin(ctx, s.cl, s.cfg.StartupTimeout); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("presence: %w", err)
	}
	s.Probe.NeedKafka(ctx, s.cl)
	ends, err := s.assign(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	consumed := make(chan error, 1)
	go func() { consumed <- s.consume(ctx) }()
	for p, end := range ends {
		if err := s.waitApplied(ctx, p, end); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("presence replay: %w", err)
		}
	}
	s.log.Info("presence replayed", "partitions", s.owned, "took", time.Since(start).Round(time.Millisecond))
	close(s.reporting)
	s.settle(ctx)
	// Nodes that died while no instance was watching are ended before any
	// query is answered, so nothing is served that the lease no longer
	// covers.
	s.expire(ctx)
	close(s.ready)
	s.Probe.SetReady(true)
	s.log.Info("presence ready", "grpc", s.Addr(), "instance", s.cfg.Instance, "instances", s.cfg.Instances)

	t := time.NewTicker(s.cfg.Lease / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-consumed:
			return err
		case <-t.C:
			s.expire(ctx)
		}
	}
}

// settle waits, after a replay, for the nodes whose lease lapsed while
// presence was down to report again, at most one lease (no live node is
// silent that long). Ending them at once would show a live node's users
// offline until its next report; answering before they report would show
// a dead node's users online. Queries wait instead: refused, never wrong.
func (s *Service) settle(ctx context.Context) {
	deadline := time.Now().Add(s.cfg.Settle)
	// A node without sessions here changes no answer: no need to wait.
	waiting := func() int {
		n := 0
		for _, p := range s.owned {
			for _, ln := range s.regs[p].Lapsed() {
				if len(ln.Sessions) > 0 {
					n++
				}
			}
		}
		return n
	}
	n := waiting()
	if n == 0 {
		return
	}
	s.log.Info("presence: waiting for nodes that were silent while it was down", "nodes", n, "at most", s.cfg.Settle)
	for waiting() > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// assign finds this instance's partitions and where each ends now.
func (s *Service) assign(ctx context.Context) (map[int32]int64, error) {
	adm := kadm.NewClient(s.cl)
	for {
		ends, err := adm.ListEndOffsets(ctx, topics.Presence)
		if err == nil && ends.Error() == nil && len(ends[topics.Presence]) > 0 {
			n := len(ends[topics.Presence])
			if n%s.cfg.Instances != 0 {
				return nil, fmt.Errorf("presence: %d instances do not divide the %d partitions of %s", s.cfg.Instances, n, topics.Presence)
			}
			out := map[int32]int64{}
			from := map[int32]kgo.Offset{}
			for p, o := range ends[topics.Presence] {
				if int(p)%s.cfg.Instances == s.cfg.Instance {
					out[p] = o.Offset
					from[p] = kgo.NewOffset().AtStart()
					s.owned = append(s.owned, p)
					s.regs[p] = NewRegistry(s.now)
				}
			}
			s.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topics.Presence: from})
			return out, nil
		}
		if err == nil {
			err = ends.Error()
		}
		s.log.Warn("presence: waiting for the topic", "topic", topics.Presence, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// consume applies records as they come and moves the applied offsets.
func (s *Service) consume(ctx context.Context) error {
	for {
		fetches := s.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			s.log.Warn("presence fetch", "topic", t, "partition", p, "err", err)
		})
		s.metrics.Lag.Observe(Consumer, fetches)
		moved := map[int32]int64{}
		fetches.EachRecord(func(r *kgo.Record) {
			reg := s.regs[r.Partition]
			if reg == nil {
				return
			}
			if err := reg.Apply(r.Key, r.Value); err != nil {
				// Only presence writes this topic; a record it cannot
				// read is a bug, and skipping it only loses one session.
				s.log.Error("presence: record skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
			}
			moved[r.Partition] = r.Offset + 1
		})
		if len(moved) == 0 {
			continue
		}
		s.mu.Lock()
		for p, o := range moved {
			s.applied[p] = o
		}
		close(s.progress)
		s.progress = make(chan struct{})
		s.mu.Unlock()
	}
}

// waitApplied returns once partition p is applied up to (not including)
// offset end.
func (s *Service) waitApplied(ctx context.Context, p int32, end int64) error {
	for {
		s.mu.Lock()
		done, progress := s.applied[p] >= end, s.progress
		s.mu.Unlock()
		if done || end <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("partition %d applied short of offset %d: %w", p, end, ctx.Err())
		case <-progress:
		}
	}
}

// write produces records and waits until this instance has applied them,
// so the caller's answer reflects them.
func (s *Service) write(ctx context.Context, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	res := s.cl.ProduceSync(ctx, recs...)
	if err := res.FirstErr(); err != nil {
		return fmt.Errorf("produce %d presence records: %w", len(recs), err)
	}
	last := map[int32]int64{}
	for _, r := range res {
		last[r.Record.Partition] = max(last[r.Record.Partition], r.Record.Offset+1)
	}
	for p, end := range last {
		if err := s.waitApplied(ctx, p, end); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) partitionOf(user string) int32 {
	return int32(topics.UserShard(user, s.partitions()))
}

// partitions is the topic's partition count: the instance owns every
// Instances-th one, so the count is owned times Instances.
func (s *Service) partitions() int { return len(s.owned) * s.cfg.Instances }

func record(key []byte, partition int32, rec *logv1.PresenceRecord) *kgo.Record {
	r := &kgo.Record{Topic: topics.Presence, Key: key, Partition: partition}
	if rec != nil {
		r.Value, _ = proto.Marshal(rec)
	}
	return r
}

// ended is what the log gets when a session ends: when its user was last
// seen (unless unknown: a node never heard from), then the session's
// tombstone, both on the user's partition.
func (s *Service) ended(sess *logv1.PresenceSession, at time.Time) []*kgo.Record {
	p := s.partitionOf(sess.GetUserId())
	var recs []*kgo.Record
	if !at.IsZero() {
		recs = append(recs, record(seenKey(sess.GetUserId()), p, &logv1.PresenceRecord{Body: &logv1.PresenceRecord_Seen{Seen: &logv1.PresenceSeen{UserId: sess.GetUserId(), LastSeen: timestamppb.New(at)}}}))
	}
	return append(recs, record(sessionKey(sess.GetUserId(), sess.GetSessionId()), p, nil))
}

// expire ends, in each partition, the sessions of nodes whose lease
// lapsed, then the nodes.
func (s *Service) expire(ctx context.Context) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	ended := map[string]int{}
	var recs []*kgo.Record
	for _, p := range s.owned {
		for id, n := range s.regs[p].Lapsed() {
			for _, sess := range n.Sessions {
				recs = append(recs, s.ended(sess, n.Beat)...)
			}
			recs = append(recs, record(nodeKey(id), p, nil))
			ended[id] += len(n.Sessions)
		}
	}
	if err := s.write(ctx, recs); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("presence: ending lapsed nodes failed; will retry", "nodes", len(ended), "err", err)
		}
		return
	}
	_ = s.watch.invalidate(ctx, endedUsers(recs), false)
	for id, n := range ended {
		s.log.Warn("edge lease lapsed; its sessions are gone", "node", id, "sessions", n)
	}
}

// known says whether every partition holds the node: one that does not
// cannot tell which of its users' sessions the node had.
func (s *Service) known(nodeID string) bool {
	for _, p := range s.owned {
		if !s.regs[p].Known(nodeID) {
			return false
		}
	}
	return true
}

// byPartition groups users by the partition holding their state.
func (s *Service) byPartition(users []string) map[int32][]string {
	out := map[int32][]string{}
	for _, u := range users {
		p := s.partitionOf(u)
		out[p] = append(out[p], u)
	}
	return out
}

// serving refuses calls until the replay is done.
func (s *Service) serving() error {
	select {
	case <-s.ready:
		return nil
	default:
		return status.Error(codes.Unavailable, "presence is replaying its partitions")
	}
}

// own checks that every user belongs to this instance: a client with
// another instance count would otherwise split state silently.
func (s *Service) own(users ...string) error {
	for _, u := range users {
		if i := topics.UserShard(u, s.cfg.Instances); i != s.cfg.Instance {
			return status.Errorf(codes.FailedPrecondition, "user %q belongs to presence instance %d of %d, not %d", u, i, s.cfg.Instances, s.cfg.Instance)
		}
	}
	return nil
}

// Report implements PresenceService: it writes the node's heartbeat and
// session changes to the log and answers once they are applied.
func (s *Service) Report(ctx context.Context, req *presencev1.ReportRequest) (*presencev1.ReportResponse, error) {
	select {
	case <-s.reporting:
	default:
		return nil, status.Error(codes.Unavailable, "presence is replaying its partitions")
	}
	if req.GetNodeId() == "" || req.GetPushAddress() == "" {
		return nil, status.Error(codes.InvalidArgument, "node_id and push_address are required")
	}
	for _, list := range [][]*presencev1.Session{req.GetConnected(), req.GetDisconnected()} {
		for _, sess := range list {
			if sess.GetUserId() == "" || sess.GetSessionId() == "" {
				return nil, status.Error(codes.InvalidArgument, "sessions need a user_id and a session_id")
			}
			if err := s.own(sess.GetUserId()); err != nil {
				return nil, err
			}
		}
	}
	resp, moved, left, err := s.report(ctx, req)
	if err != nil {
		return nil, err
	}
	// Watchers must drop what they cached about users who just appeared
	// somewhere before the edge tells the device it is connected: events
	// sequenced after that must find the new session. Users who left only
	// make cached answers stale in the harmless direction (a push to an
	// edge that no longer holds them), so they are not waited for.
	if err := s.watch.invalidate(ctx, moved, true); err != nil {
		return nil, status.Errorf(codes.Unavailable, "presence: invalidating cached locations: %v", err)
	}
	_ = s.watch.invalidate(ctx, left, false)
	return resp, nil
}

// report writes a report's records and returns the users whose locations
// it added to (moved) and took from (left).
func (s *Service) report(ctx context.Context, req *presencev1.ReportRequest) (*presencev1.ReportResponse, []string, []string, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	known := s.known(req.GetNodeId())
	moved := s.appearing(req)
	now := s.now()
	var recs []*kgo.Record
	for _, p := range s.owned {
		recs = append(recs, record(nodeKey(req.GetNodeId()), p, &logv1.PresenceRecord{Body: &logv1.PresenceRecord_Beat{Beat: &logv1.PresenceBeat{
			NodeId: req.GetNodeId(), PushAddress: req.GetPushAddress(), At: timestamppb.New(now), Lease: durationpb.New(s.cfg.Lease)}}}))
	}
	if req.GetSnapshot() {
		// Whatever the node held before and does not list is gone.
		listed := map[string]bool{}
		for _, sess := range req.GetConnected() {
			listed[sess.GetSessionId()] = true
		}
		for _, p := range s.owned {
			for _, sess := range s.regs[p].Sessions(req.GetNodeId()) {
				if !listed[sess.GetSessionId()] {
					recs = append(recs, s.ended(sess, now)...)
				}
			}
		}
	}
	for _, sess := range req.GetConnected() {
		recs = append(recs, record(sessionKey(sess.GetUserId(), sess.GetSessionId()), s.partitionOf(sess.GetUserId()), &logv1.PresenceRecord{Body: &logv1.PresenceRecord_Session{Session: &logv1.PresenceSession{
			NodeId: req.GetNodeId(), SessionId: sess.GetSessionId(), UserId: sess.GetUserId(), DeviceId: sess.GetDeviceId(), Idle: sess.GetIdle()}}}))
	}
	for _, sess := range req.GetDisconnected() {
		recs = append(recs, s.ended(&logv1.PresenceSession{UserId: sess.GetUserId(), SessionId: sess.GetSessionId()}, now)...)
	}
	if !known && !req.GetSnapshot() {
		// Changes of a node this instance does not hold are not enough:
		// its earlier sessions are unknown here. Only the heartbeat is
		// kept, and the node is asked for everything.
		recs = recs[:len(s.owned)]
	}
	if err := s.write(ctx, recs); err != nil {
		return nil, nil, nil, status.Errorf(codes.Unavailable, "presence log: %v", err)
	}
	return &presencev1.ReportResponse{SendSnapshot: !known && !req.GetSnapshot(), Lease: durationpb.New(s.cfg.Lease)}, moved, endedUsers(recs), nil
}

// endedUsers names the users of the sessions that records end.
func endedUsers(recs []*kgo.Record) []string {
	var users []string
	for _, r := range recs {
		if r.Value != nil {
			continue
		}
		if kind, ids, err := parseKey(r.Key); err == nil && kind == kindSession {
			users = append(users, ids[0])
		}
	}
	return users
}

// appearing names the users a report adds a location to: those of
// sessions new on the node, and, if the node's lease had lapsed (its users
// located nowhere meanwhile), every user it holds.
func (s *Service) appearing(req *presencev1.ReportRequest) []string {
	seen := map[string]bool{}
	var users []string
	add := func(u string) {
		if !seen[u] {
			seen[u] = true
			users = append(users, u)
		}
	}
	for _, p := range s.owned {
		if ln, lapsed := s.regs[p].Lapsed()[req.GetNodeId()]; lapsed {
			for _, sess := range ln.Sessions {
				add(sess.GetUserId())
			}
		}
	}
	for _, sess := range req.GetConnected() {
		if !s.regs[s.partitionOf(sess.GetUserId())].Holds(req.GetNodeId(), sess.GetUserId(), sess.GetSessionId()) {
			add(sess.GetUserId())
		}
	}
	return users
}

// Status implements PresenceService.
func (s *Service) Status(_ context.Context, req *presencev1.StatusRequest) (*presencev1.StatusResponse, error) {
	if err := s.serving(); err != nil {
		return nil, err
	}
	if len(req.GetUserIds()) > MaxLocate {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d users per call", MaxLocate)
	}
	if err := s.own(req.GetUserIds()...); err != nil {
		return nil, err
	}
	byUser := map[string]*presencev1.UserStatus{}
	for p, users := range s.byPartition(req.GetUserIds()) {
		for _, st := range s.regs[p].Status(users) {
			byUser[st.GetUserId()] = st
		}
	}
	out := &presencev1.StatusResponse{}
	for _, u := range req.GetUserIds() {
		if st := byUser[u]; st != nil {
			out.Statuses = append(out.Statuses, st)
			// A user asked twice is answered once.
			delete(byUser, u)
		}
	}
	return out, nil
}

// Locate implements PresenceService.
func (s *Service) Locate(_ context.Context, req *presencev1.LocateRequest) (*presencev1.LocateResponse, error) {
	if err := s.serving(); err != nil {
		return nil, err
	}
	if len(req.GetUserIds()) > MaxLocate {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d users per call", MaxLocate)
	}
	if err := s.own(req.GetUserIds()...); err != nil {
		return nil, err
	}
	out := &presencev1.LocateResponse{}
	for p, users := range s.byPartition(req.GetUserIds()) {
		out.Locations = append(out.Locations, s.regs[p].Locate(users)...)
	}
	return out, nil
}
