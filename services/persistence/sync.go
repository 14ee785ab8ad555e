package persistence

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// defaultSyncMargin is how far back a sync token reaches before the moment the
// list was read. Stores stamp a change with their clock when Apply starts,
// and the write becomes visible a little later, possibly on another node
// with a slightly different clock; reaching back a minute lists a few
// conversations twice rather than miss one.
const defaultSyncMargin = time.Minute

// tokenPrefix versions the token format; clients treat tokens as opaque.
const tokenPrefix = "s1."

// syncToken is the token a list read at now hands out.
func syncToken(now time.Time, margin time.Duration) string {
	if margin <= 0 {
		margin = defaultSyncMargin
	}
	return tokenPrefix + strconv.FormatInt(now.Add(-margin).UnixMilli(), 10)
}

// parseSyncToken reads a token; the empty token means "everything".
func parseSyncToken(tok string) (time.Time, error) {
	if tok == "" {
		return time.Time{}, nil
	}
	ms, err := strconv.ParseInt(strings.TrimPrefix(tok, tokenPrefix), 10, 64)
	if !strings.HasPrefix(tok, tokenPrefix) || err != nil || ms <= 0 {
		return time.Time{}, fmt.Errorf("changed_since %q is not a sync_token of this server", tok)
	}
	return time.UnixMilli(ms), nil
}

// Receipts implements PersistenceService.
func (s *Service) Receipts(ctx context.Context, req *persistencev1.ReceiptsRequest) (*persistencev1.ReceiptsResponse, error) {
	if _, err := s.authorize(ctx, req.GetConversationId(), req.GetUserId()); err != nil {
		return nil, err
	}
	rs, err := s.store.Receipts(ctx, req.GetConversationId())
	if err != nil {
		return nil, storeErr(err)
	}
	return &persistencev1.ReceiptsResponse{Receipts: rs}, nil
}

func invalidToken(err error) error { return status.Error(codes.InvalidArgument, err.Error()) }

// Conversation implements PersistenceService.
func (s *Service) Conversation(ctx context.Context, req *persistencev1.ConversationRequest) (*persistencev1.ConversationResponse, error) {
	sum, err := s.authorize(ctx, req.GetConversationId(), req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &persistencev1.ConversationResponse{Conversation: sum}, nil
}

// Blocks implements PersistenceService. It trusts user_id: the edge asks
// only for the connection's own user, and nothing else may reach this
// service.
func (s *Service) Blocks(ctx context.Context, req *persistencev1.BlocksRequest) (*persistencev1.BlocksResponse, error) {
	if req.GetUserId() == "" {
		return nil, status.Error(codes.InvalidArgument, "user_id is required")
	}
	ids, err := s.store.Blocks(ctx, req.GetUserId())
	if err != nil {
		return nil, storeErr(err)
	}
	return &persistencev1.BlocksResponse{BlockedIds: ids}, nil
}

// Contacts implements PersistenceService: the user's own contact list.
func (s *Service) Contacts(ctx context.Context, req *persistencev1.ContactsRequest) (*persistencev1.ContactsResponse, error) {
	if req.GetUserId() == "" {
		return nil, status.Error(codes.InvalidArgument, "user_id is required")
	}
	contacts, err := s.store.Contacts(ctx, req.GetUserId())
	if err != nil {
		return nil, storeErr(err)
	}
	return &persistencev1.ContactsResponse{Contacts: contacts}, nil
}

// maxSummaries bounds one Summaries call, as a token bounds its
// audiences.
const maxSummaries = 64

// Summaries implements PersistenceService. It trusts user_id and asks no
// membership: the edge asks only for the audiences the user's token puts
// them in.
func (s *Service) Summaries(ctx context.Context, req *persistencev1.SummariesRequest) (*persistencev1.SummariesResponse, error) {
	if req.GetUserId() == "" {
		return nil, status.Error(codes.InvalidArgument, "user_id is required")
	}
	if n := len(req.GetConversationIds()); n > maxSummaries {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d conversations, got %d", maxSummaries, n)
	}
	resp := &persistencev1.SummariesResponse{}
	for _, conv := range req.GetConversationIds() {
		c, err := s.store.ConversationFor(ctx, conv, req.GetUserId())
		if errors.Is(err, history.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, storeErr(err)
		}
		resp.Conversations = append(resp.Conversations, c)
	}
	return resp, nil
}
