package ingest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// maxHeadAsks bounds the asks of one Heads call and of one probe command.
const maxHeadAsks = 2000

// prepareHeads checks a head probe: asks of valid users about conversation
// ids of the right size.
func prepareHeads(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	asks := cmd.GetHeadProbe().GetAsks()
	if len(asks) == 0 || len(asks) > maxHeadAsks {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, fmt.Sprintf("a head probe asks 1-%d heads", maxHeadAsks)
	}
	for _, a := range asks {
		if id := a.GetConversationId(); id == "" || len(id) > 64 || !auth.ValidUserID(a.GetUserId()) {
			return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a head ask needs a conversation id of 1-64 bytes and a valid user id"
		}
	}
	return needConversation(cmd)
}

// decideHeads answers each ask with the conversation's head if the user is
// a member, else 0 (one answer for missing and foreign, as notFound). It
// moves nothing and logs nothing; the outcome is committed with the batch,
// after every event up to each head.
func decideHeads(convs map[string]*conversation, cmd *logv1.Command, out *logv1.Outcome) (*logv1.EventRecord, *logv1.Outcome) {
	asks := cmd.GetHeadProbe().GetAsks()
	out.Heads = make([]uint64, len(asks))
	for i, a := range asks {
		if c := convs[a.GetConversationId()]; c.exists() && c.isMember(a.GetUserId()) {
			out.Heads[i] = c.lastSeq
		}
	}
	return nil, out
}

// headBatcher gathers the asks of concurrent Heads calls into one probe
// command per partition: while a partition's probe is in flight, new asks
// wait in the next one, which goes as soon as it returns. An ask is only
// ever answered by a probe appended after it arrived, which is what makes
// the head valid for a resume that asked after its session was registered.
type headBatcher struct {
	// partition names the command partition of a conversation id.
	partition func(conv string) int32
	// probe appends one probe command and waits for its outcome.
	probe func(ctx context.Context, asks []*logv1.HeadAsk) ([]uint64, error)
	// timeout bounds one probe.
	timeout time.Duration

	mu   sync.Mutex
	open map[int32]*headBatch
	busy map[int32]bool
}

type headBatch struct {
	asks  []*logv1.HeadAsk
	done  chan struct{}
	heads []uint64
	err   error
}

func newHeadBatcher(partition func(string) int32, probe func(context.Context, []*logv1.HeadAsk) ([]uint64, error), timeout time.Duration) *headBatcher {
	return &headBatcher{partition: partition, probe: probe, timeout: timeout, open: map[int32]*headBatch{}, busy: map[int32]bool{}}
}

// heads answers asks, in order.
func (b *headBatcher) heads(ctx context.Context, asks []*logv1.HeadAsk) ([]uint64, error) {
	type part struct {
		batch *headBatch
		at    int
		idx   []int
	}
	byPart := map[int32]*part{}
	b.mu.Lock()
	for i, a := range asks {
		p := b.partition(a.GetConversationId())
		pp := byPart[p]
		if pp == nil {
			bt := b.open[p]
			if bt == nil {
				bt = &headBatch{done: make(chan struct{})}
				b.open[p] = bt
				if !b.busy[p] {
					b.busy[p] = true
					go b.send(p)
				}
			}
			pp = &part{batch: bt, at: len(bt.asks)}
			byPart[p] = pp
		}
		pp.batch.asks = append(pp.batch.asks, a)
		pp.idx = append(pp.idx, i)
	}
	b.mu.Unlock()
	out := make([]uint64, len(asks))
	for _, pp := range byPart {
		select {
		case <-pp.batch.done:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if pp.batch.err != nil {
			return nil, pp.batch.err
		}
		for j, i := range pp.idx {
			out[i] = pp.batch.heads[pp.at+j]
		}
	}
	return out, nil
}

// send sends partition p's open batches, one probe at a time, until none
// is left.
func (b *headBatcher) send(p int32) {
	for {
		b.mu.Lock()
		bt := b.open[p]
		delete(b.open, p)
		if bt == nil {
			b.busy[p] = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		// A command carries at most maxHeadAsks; a bigger batch goes as
		// several, one after the other.
		for at := 0; at < len(bt.asks) && bt.err == nil; at += maxHeadAsks {
			chunk := bt.asks[at:min(at+maxHeadAsks, len(bt.asks))]
			ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
			heads, err := b.probe(ctx, chunk)
			cancel()
			if err == nil && len(heads) != len(chunk) {
				err = status.Errorf(codes.Internal, "a head probe of %d asks got %d heads", len(chunk), len(heads))
			}
			bt.heads, bt.err = append(bt.heads, heads...), err
		}
		close(bt.done)
	}
}

// Heads implements IngestService.
func (s *Service) Heads(ctx context.Context, req *ingestv1.HeadsRequest) (*ingestv1.HeadsResponse, error) {
	asks := req.GetAsks()
	if len(asks) == 0 {
		return &ingestv1.HeadsResponse{}, nil
	}
	probe := &logv1.Command{UserId: asks[0].GetUserId(), ConversationId: asks[0].GetConversationId(), Body: &logv1.Command_HeadProbe{HeadProbe: &logv1.HeadProbe{Asks: asks}}}
	if code, msg := prepareHeads(probe); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return nil, status.Error(codes.InvalidArgument, msg)
	}
	b := s.heads.Load()
	if b == nil {
		return nil, status.Error(codes.Unavailable, "ingest is starting")
	}
	heads, err := b.heads(ctx, asks)
	if err != nil {
		return nil, err
	}
	return &ingestv1.HeadsResponse{Heads: heads}, nil
}

// probeHeads appends one head probe for asks, which all belong to one
// partition, and waits for its outcome.
func (s *Service) probeHeads(ctx context.Context, asks []*logv1.HeadAsk) ([]uint64, error) {
	cmd := &logv1.Command{
		CommandId: uuid.Must(uuid.NewV7()).String(), SubmitTime: timestamppb.Now(),
		UserId: asks[0].GetUserId(), ConversationId: asks[0].GetConversationId(),
		Body: &logv1.Command_HeadProbe{HeadProbe: &logv1.HeadProbe{Asks: asks}},
	}
	o, err := s.appendAndWait(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if o.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return nil, status.Errorf(codes.Internal, "head probe refused: %s", o.GetErrorMessage())
	}
	return o.GetHeads(), nil
}

// commandPartitioner names the partition of the commands topic a key goes
// to, as the producer's default partitioner places it (murmur2 of the
// key, Kafka's own), given the topic's partition count.
func commandPartitioner(partitions int) func(string) int32 {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("")
	return func(key string) int32 {
		return int32(p.Partition(&kgo.Record{Key: []byte(key)}, partitions))
	}
}
