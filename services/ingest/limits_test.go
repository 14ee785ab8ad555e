package ingest

import (
	"fmt"
	"testing"

	"github.com/parleychat/parley/pkg/server/membership"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// TestCreateNamesBoundedMembers: a creation names at most
// membership.MaxCreateMembers members, its creator included and
// duplicates counted once; more is refused before the log.
func TestCreateNamesBoundedMembers(t *testing.T) {
	named := func(n int, extra ...string) *logv1.Command {
		ids := append([]string{}, extra...)
		for i := range n {
			ids = append(ids, fmt.Sprintf("u%03d", i))
		}
		return &logv1.Command{UserId: "alice", ClientMsgId: "c1", Body: &logv1.Command_CreateConversation{CreateConversation: &logv1.CreateConversation{
			Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "big", MemberIds: ids}}}
	}
	for _, tc := range []struct {
		name string
		cmd  *logv1.Command
		want chatv1.ErrorCode
	}{
		{"at the bound, the creator included", named(membership.MaxCreateMembers - 1), chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED},
		{"the creator and duplicates count once", named(membership.MaxCreateMembers-1, "alice", "u000", "u001"), chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED},
		{"one more", named(membership.MaxCreateMembers), chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{"a thousand strangers", named(999), chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
	} {
		if code, msg := Prepare(tc.cmd); code != tc.want {
			t.Errorf("%s: %v (%s), want %v", tc.name, code, msg, tc.want)
		}
	}
}
