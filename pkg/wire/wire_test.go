package wire

import (
	"strings"
	"testing"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	"google.golang.org/protobuf/proto"
)

func TestDecodeClient(t *testing.T) {
	send := &clientv1.ClientFrame{RequestId: "7", Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{ConversationId: "c", ClientMsgId: "m", Text: "hi"}}}
	bin, _ := Encode(Binary, send)
	js, _ := Encode(JSON, send)
	tests := []struct {
		name   string
		format Format
		data   []byte
		code   chatv1.ErrorCode
		reqID  string
	}{
		{"binary ok", Binary, bin, chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, "7"},
		{"json ok", JSON, js, chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, "7"},
		{"json snake_case names", JSON, []byte(`{"request_id":"8","ping":{}}`), chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, "8"},
		{"binary garbage", Binary, []byte{0xff, 0xff, 0xff}, chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, ""},
		{"json garbage", JSON, []byte("not json"), chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, ""},
		{"json unknown frame", JSON, []byte(`{"requestId":"9","teleport":{}}`), chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME, "9"},
		{"json unknown field inside a known frame", JSON, []byte(`{"requestId":"9","ping":{"x":1}}`), chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, "9"},
		{"json unknown field beside a known frame", JSON, []byte(`{"requestId":"9","ping":{},"x":1}`), chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, "9"},
		{"json field of the wrong type", JSON, []byte(`{"request_id":"10","getHistory":{"limit":"many"}}`), chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, "10"},
		{"json two frame types", JSON, []byte(`{"requestId":"11","ping":{},"setIdle":{}}`), chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, "11"},
		{"json request id not a string", JSON, []byte(`{"requestId":12,"ping":{"x":1}}`), chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, ""},
		{"json not an object", JSON, []byte(`["requestId","13"]`), chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, ""},
		{"binary request id, then broken bytes", Binary, []byte{0x0a, 0x02, '1', '4', 0x5a, 0xff}, chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, "14"},
		{"binary broken bytes before the request id", Binary, []byte{0x5a, 0xff, 0x0a, 0x02, '1', '5'}, chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, ""},
		{"binary empty", Binary, nil, chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME, ""},
		{"json empty object", JSON, []byte(`{}`), chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME, ""},
		{"binary unknown field only", Binary, []byte{0xfa, 0x3f, 0x00}, chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME, ""},
		{"oversize", JSON, []byte(`{"requestId":"1","ping":{}}` + strings.Repeat(" ", MaxFrameBytes)), chatv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE, ""},
		{"invalid utf-8 in json string", JSON, []byte("{\"requestId\":\"\xff\"}"), chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeClient(tc.format, tc.data)
			if tc.code == chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
			} else if err == nil || err.Code != tc.code {
				t.Fatalf("err = %v, want code %v", err, tc.code)
			}
			if f.GetRequestId() != tc.reqID {
				t.Fatalf("request id = %q, want %q", f.GetRequestId(), tc.reqID)
			}
		})
	}
}

// FuzzDecodeClient feeds untrusted bytes to both decoders: they must never
// panic, must return a frame or a coded error, and a frame that decodes must
// survive a re-encode round trip.
func TestErrorFrameEncodesWhateverTheInput(t *testing.T) {
	for name, data := range map[string][]byte{
		"invalid utf-8 in a json string":  []byte("{\"requestId\":\"\xff\xfe\",\"ping\":{}}"),
		"invalid utf-8 in a json key":     []byte("{\"\xc3\x28\":1}"),
		"invalid utf-8 in a proto string": {0x0a, 0x02, 0xff, 0xfe},
		"garbage starting with 0xff":      []byte("\xff\x00garbage{{"),
	} {
		t.Run(name, func(t *testing.T) {
			for _, format := range []Format{Binary, JSON} {
				frame, err := DecodeClient(format, data)
				if err == nil {
					continue
				}
				if _, eerr := Encode(format, ErrorFrame(frame.GetRequestId(), err)); eerr != nil {
					t.Fatalf("error frame for %q does not encode: %v", err.Message, eerr)
				}
			}
		})
	}
}

func FuzzDecodeClient(f *testing.F) {
	seeds := []*clientv1.ClientFrame{
		{RequestId: "1", Frame: &clientv1.ClientFrame_Authenticate{Authenticate: &clientv1.Authenticate{Token: "eyJ", DeviceId: "d"}}},
		{RequestId: "2", Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{ConversationId: "c", ClientMsgId: "m", Text: "héllo"}}},
		{RequestId: "3", Frame: &clientv1.ClientFrame_GetHistory{GetHistory: &clientv1.GetHistory{ConversationId: "c", AfterSeq: proto.Uint64(0), Limit: 50}}},
		{RequestId: "4", Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "t", MemberIds: []string{"a", "b"}}}},
		{RequestId: "5", Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}},
		{RequestId: "6", Frame: &clientv1.ClientFrame_Mark{Mark: &clientv1.Mark{ConversationId: "c", DeliveredSeq: 9, ReadSeq: 7}}},
		{RequestId: "7", Frame: &clientv1.ClientFrame_GetReceipts{GetReceipts: &clientv1.GetReceipts{ConversationId: "c"}}},
		{RequestId: "8", Frame: &clientv1.ClientFrame_ListConversations{ListConversations: &clientv1.ListConversations{ChangedSince: "tok"}}},
		{RequestId: "9", Frame: &clientv1.ClientFrame_Typing{Typing: &clientv1.SetTyping{ConversationId: "c", Stopped: true}}},
		{RequestId: "10", Frame: &clientv1.ClientFrame_GetPresence{GetPresence: &clientv1.GetPresence{UserIds: []string{"bob", "carol"}}}},
		{RequestId: "11", Frame: &clientv1.ClientFrame_WatchPresence{WatchPresence: &clientv1.WatchPresence{UserIds: []string{"bob"}}}},
		{RequestId: "12", Frame: &clientv1.ClientFrame_SetIdle{SetIdle: &clientv1.SetIdle{Idle: true}}},
		{RequestId: "30", Frame: &clientv1.ClientFrame_RemoveMember{RemoveMember: &clientv1.RemoveMember{ConversationId: "c", ClientMsgId: "m", UserId: "bob"}}},
		{RequestId: "31", Frame: &clientv1.ClientFrame_Leave{Leave: &clientv1.LeaveConversation{ConversationId: "c", ClientMsgId: "m"}}},
		{RequestId: "32", Frame: &clientv1.ClientFrame_SetRole{SetRole: &clientv1.SetMemberRole{ConversationId: "c", ClientMsgId: "m", UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_ADMIN}}},
		{RequestId: "33", Frame: &clientv1.ClientFrame_TransferOwnership{TransferOwnership: &clientv1.TransferOwnership{ConversationId: "c", ClientMsgId: "m", UserId: "bob"}}},
		{RequestId: "34", Frame: &clientv1.ClientFrame_MuteMember{MuteMember: &clientv1.MuteMember{ConversationId: "c", ClientMsgId: "m", UserId: "bob", Muted: true}}},
		{RequestId: "35", Frame: &clientv1.ClientFrame_Rename{Rename: &clientv1.RenameConversation{ConversationId: "c", ClientMsgId: "m", Title: "t"}}},
		{RequestId: "36", Frame: &clientv1.ClientFrame_CreateInvite{CreateInvite: &clientv1.CreateInvite{ConversationId: "c", ClientMsgId: "m", Code: "invite-code-0001"}}},
		{RequestId: "37", Frame: &clientv1.ClientFrame_RevokeInvite{RevokeInvite: &clientv1.RevokeInvite{ConversationId: "c", ClientMsgId: "m", Code: "invite-code-0001"}}},
		{RequestId: "38", Frame: &clientv1.ClientFrame_JoinByInvite{JoinByInvite: &clientv1.JoinByInvite{ConversationId: "c", ClientMsgId: "m", Code: "invite-code-0001"}}},
		{RequestId: "39", Frame: &clientv1.ClientFrame_Follow{Follow: &clientv1.FollowChannel{ConversationId: "c", ClientMsgId: "m"}}},
		{RequestId: "40", Frame: &clientv1.ClientFrame_BlockUser{BlockUser: &clientv1.BlockUser{UserId: "bob"}}},
		{RequestId: "41", Frame: &clientv1.ClientFrame_UnblockUser{UnblockUser: &clientv1.UnblockUser{UserId: "bob"}}},
		{RequestId: "42", Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{Kind: chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL, Title: "news", Public: true}}},
		{RequestId: "50", Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{ConversationId: "c", ClientMsgId: "m",
			Text: "see https://a.b", ReplyToSeq: 2, MentionIds: []string{"bob"}, Contact: &chatv1.ContactCard{DisplayName: "Bob", UserId: "bob"},
			Attachments: []*chatv1.Attachment{{Kind: chatv1.AttachmentKind_ATTACHMENT_KIND_IMAGE, Url: "https://cdn/x.png", ContentType: "image/png", SizeBytes: 3, Width: 1, Height: 1, Name: "x.png"}}}}},
		{RequestId: "51", Frame: &clientv1.ClientFrame_EditMessage{EditMessage: &clientv1.EditMessage{ConversationId: "c", ClientMsgId: "e", TargetSeq: 2, Text: "fixed", MentionIds: []string{"bob"}}}},
		{RequestId: "52", Frame: &clientv1.ClientFrame_DeleteMessage{DeleteMessage: &clientv1.DeleteMessage{ConversationId: "c", ClientMsgId: "d", TargetSeq: 2}}},
		{RequestId: "53", Frame: &clientv1.ClientFrame_React{React: &clientv1.React{ConversationId: "c", ClientMsgId: "r", TargetSeq: 2, Emoji: "👍", Remove: true}}},
		{RequestId: "60", Frame: &clientv1.ClientFrame_SetFlags{SetFlags: &clientv1.SetConversationFlags{ConversationId: "c", Muted: proto.Bool(true)}}},
		{RequestId: "61", Frame: &clientv1.ClientFrame_SetFlags{SetFlags: &clientv1.SetConversationFlags{ConversationId: "c", Muted: proto.Bool(false), Pinned: proto.Bool(true)}}},
		{RequestId: "80", Frame: &clientv1.ClientFrame_RefreshToken{RefreshToken: &clientv1.RefreshToken{Token: "a.b.c"}}},
	}
	for _, s := range seeds {
		b, _ := Encode(Binary, s)
		j, _ := Encode(JSON, s)
		f.Add(b, false)
		f.Add(j, true)
	}
	f.Add([]byte(`{"requestId":"x","teleport":{}}`), true)
	f.Fuzz(func(t *testing.T, data []byte, json bool) {
		format := Binary
		if json {
			format = JSON
		}
		frame, err := DecodeClient(format, data)
		if err != nil {
			if err.Code == chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || err.Message == "" {
				t.Fatalf("error without code or message: %#v", err)
			}
			// The client must always get its error frame, whatever it sent.
			ef := ErrorFrame(frame.GetRequestId(), err)
			for _, out := range []Format{Binary, JSON} {
				if _, eerr := Encode(out, ef); eerr != nil {
					t.Fatalf("error frame for %q does not encode: %v", data, eerr)
				}
			}
			return
		}
		if frame.GetFrame() == nil {
			t.Fatal("nil frame without error")
		}
		again, eerr := Encode(format, frame)
		if eerr != nil {
			t.Fatalf("re-encode: %v", eerr)
		}
		back, derr := DecodeClient(format, again)
		if derr != nil || !proto.Equal(back, frame) {
			t.Fatalf("round trip changed the frame: %v vs %v (%v)", back, frame, derr)
		}
	})
}
