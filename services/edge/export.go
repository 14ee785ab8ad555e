package edge

import (
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"
	"google.golang.org/protobuf/proto"

	backendv1 "github.com/parleychat/parley/pkg/pb/parley/backend/v1"
	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// exportLimit is both the conversations an export lists (the list's cap)
// and the events of each page it reads.
const exportLimit = 200

// ExportUser implements BackendService: what Parley holds of a user, read
// from persistence as they see it, one part at a time, so an export of a
// long history never sits whole in memory.
func (b *backendAPI) ExportUser(req *backendv1.ExportUserRequest, stream backendv1.BackendService_ExportUserServer) error {
	ctx, user := stream.Context(), req.GetUserId()
	if !auth.ValidUserID(user) {
		return backendError(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a valid user_id is required")
	}
	fail := func(err error) error {
		code, msg := grpcError(err)
		return backendError(code, msg)
	}
	p := b.svc.clients.persistence
	list, err := p.Conversations(ctx, &persistencev1.ConversationsRequest{UserId: user, Limit: exportLimit})
	if err != nil {
		return fail(err)
	}
	for _, c := range list.GetConversations() {
		if err := stream.Send(&backendv1.ExportUserResponse{Part: &backendv1.ExportUserResponse_Conversation{Conversation: c}}); err != nil {
			return err
		}
		for after := uint64(0); ; {
			page, err := p.History(ctx, &persistencev1.HistoryRequest{UserId: user, ConversationId: c.GetConversationId(), AfterSeq: proto.Uint64(after), Limit: exportLimit})
			if err != nil {
				return fail(err)
			}
			evs := page.GetEvents()
			if len(evs) == 0 {
				break
			}
			if err := stream.Send(&backendv1.ExportUserResponse{Part: &backendv1.ExportUserResponse_Events{Events: &backendv1.ExportEvents{
				ConversationId: c.GetConversationId(), Events: evs}}}); err != nil {
				return err
			}
			if !page.GetHasMore() {
				break
			}
			after = evs[len(evs)-1].GetSeq()
		}
	}
	contacts, err := p.Contacts(ctx, &persistencev1.ContactsRequest{UserId: user})
	if err != nil {
		return fail(err)
	}
	if err := stream.Send(&backendv1.ExportUserResponse{Part: &backendv1.ExportUserResponse_Contacts{Contacts: &backendv1.ExportContacts{Contacts: contacts.GetContacts()}}}); err != nil {
		return err
	}
	blocks, err := p.Blocks(ctx, &persistencev1.BlocksRequest{UserId: user})
	if err != nil {
		return fail(err)
	}
	if err := stream.Send(&backendv1.ExportUserResponse{Part: &backendv1.ExportUserResponse_Blocked{Blocked: &backendv1.ExportBlocked{UserIds: blocks.GetBlockedIds()}}}); err != nil {
		return err
	}
	settings, err := p.Summaries(ctx, &persistencev1.SummariesRequest{UserId: user, ConversationIds: []string{membership.InboxID(user)}})
	if err != nil {
		return fail(err)
	}
	only := false
	for _, c := range settings.GetConversations() {
		only = c.GetContactsOnly()
	}
	return stream.Send(&backendv1.ExportUserResponse{Part: &backendv1.ExportUserResponse_Settings{Settings: &backendv1.ExportSettings{ContactsOnly: only}}})
}
