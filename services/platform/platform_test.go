package platform_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/platform"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

var secret = []byte("test-secret-test-secret")

type env struct {
	t      *testing.T
	url    string
	minter *auth.HS256
	p      *platform.Platform
}

func start(t *testing.T, dir string) (*env, func()) {
	t.Helper()
	return startWith(t, platform.Config{DataDir: dir})
}

// startWith starts the platform on cfg with the tests' address and
// secret, and 4 partitions unless cfg names a count.
func startWith(t *testing.T, cfg platform.Config) (*env, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.HTTPAddr, cfg.JWTSecret = "127.0.0.1:0", secret
	if cfg.Partitions == 0 {
		cfg.Partitions = 4
	}
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start platform: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for !p.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("platform not ready in 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, _ := auth.NewHS256(secret)
	stop := func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("platform run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("platform did not stop in 30s")
		}
	}
	return &env{t: t, url: p.URL(), minter: m, p: p}, stop
}

func (e *env) dial(user, dev string, json bool) *device {
	e.t.Helper()
	tok, err := e.minter.Mint(user, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, sdk.Options{URL: e.url, Token: tok, DeviceID: dev, JSON: json})
	if err != nil {
		e.t.Fatalf("dial %s/%s: %v", user, dev, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &device{Client: c, last: map[string]uint64{}}
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// device is a connected client and the last seq it has seen per
// conversation.
type device struct {
	*sdk.Client
	last map[string]uint64
}

// upTo reads events of conv until seq reaches to, failing on a gap, a
// duplicate or a timeout. Events of other conversations are checked too.
func (d *device) upTo(t *testing.T, conv string, to uint64) []*chatv1.Event {
	t.Helper()
	var got []*chatv1.Event
	timeout := time.After(20 * time.Second)
	for d.last[conv] < to {
		select {
		case ev, ok := <-d.Events():
			if !ok {
				t.Fatalf("%s/%s: connection closed at seq %d of %d: %v", d.UserID, d.DeviceID, d.last[conv], to, d.Err())
			}
			c := ev.GetConversationId()
			if want := d.last[c] + 1; ev.GetSeq() != want && d.last[c] != 0 {
				t.Fatalf("%s/%s: conversation %s: got seq %d, want %d (events must arrive contiguous and in order)", d.UserID, d.DeviceID, c, ev.GetSeq(), want)
			}
			d.last[c] = ev.GetSeq()
			if c == conv {
				got = append(got, ev)
			}
		case <-timeout:
			t.Fatalf("%s/%s: at seq %d of %d after 20s", d.UserID, d.DeviceID, d.last[conv], to)
		}
	}
	return got
}

func TestEndToEnd(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)

	a1 := e.dial("alice", "alice-phone", true) // protojson
	a2 := e.dial("alice", "alice-laptop", false)
	b1 := e.dial("bob", "bob-phone", false)
	devices := []*device{a1, a2, b1}

	acc, err := a1.CreateGroup(ctx, "team", "bob")
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	if acc.GetSeq() != 1 || acc.GetConversationId() == "" {
		t.Fatalf("create accepted = %v", acc)
	}
	conv := acc.GetConversationId()

	const perUser = 15
	sent := map[uint64]string{}
	for i := range perUser {
		for _, c := range []*device{a1, b1} {
			text := fmt.Sprintf("%s says %d", c.UserID, i)
			id := sdk.NewClientMsgID()
			acc, err := c.SendWithID(ctx, conv, id, text)
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			if acc.GetClientMsgId() != id || acc.GetConversationId() != conv || acc.GetDuplicate() {
				t.Fatalf("accepted %v does not answer client_msg_id %s", acc, id)
			}
			if _, dup := sent[acc.GetSeq()]; dup {
				t.Fatalf("seq %d accepted twice", acc.GetSeq())
			}
			sent[acc.GetSeq()] = text
		}
	}
	total := 1 + 2*perUser

	t.Run("every device gets every event in seq order", func(t *testing.T) {
		for _, d := range devices {
			evs := d.upTo(t, conv, uint64(total))
			if evs[0].GetConversationCreated().GetTitle() != "team" {
				t.Fatalf("first event %v is not the creation", evs[0])
			}
			for _, ev := range evs[1:] {
				if want := sent[ev.GetSeq()]; ev.GetMessagePosted().GetText() != want {
					t.Fatalf("%s: seq %d text %q, want %q", d.DeviceID, ev.GetSeq(), ev.GetMessagePosted().GetText(), want)
				}
			}
		}
	})

	t.Run("resend returns the original seq", func(t *testing.T) {
		id := sdk.NewClientMsgID()
		first, err := a2.SendWithID(ctx, conv, id, "once")
		if err != nil {
			t.Fatal(err)
		}
		again, err := a1.SendWithID(ctx, conv, id, "once")
		if err != nil {
			t.Fatal(err)
		}
		if !again.GetDuplicate() || again.GetSeq() != first.GetSeq() {
			t.Fatalf("resend = %v, want duplicate of seq %d", again, first.GetSeq())
		}
		// Exactly one event for it reaches bob.
		evs := b1.upTo(t, conv, first.GetSeq())
		if len(evs) != 1 || evs[0].GetClientMsgId() != id {
			t.Fatalf("events for the resent message: %v", evs)
		}
		// Nothing else follows: a message after it has the next seq.
		next, err := a1.Send(ctx, conv, "after")
		if err != nil || next.GetSeq() != first.GetSeq()+1 {
			t.Fatalf("next send = %v, %v; want seq %d", next, err, first.GetSeq()+1)
		}
	})

	t.Run("history pages", func(t *testing.T) {
		all := uint64(total + 2)
		waitHistory(t, b1.Client, conv, all)
		p, err := b1.History(ctx, &clientv1.GetHistory{ConversationId: conv, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.GetEvents()) != 10 || p.GetEvents()[9].GetSeq() != all || !p.GetHasMore() {
			t.Fatalf("newest page: %d events, last %d, more %v", len(p.GetEvents()), p.GetEvents()[9].GetSeq(), p.GetHasMore())
		}
		var seen []uint64
		after := uint64(0)
		for {
			p, err := b1.History(ctx, &clientv1.GetHistory{ConversationId: conv, AfterSeq: proto.Uint64(after), Limit: 7})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range p.GetEvents() {
				seen = append(seen, ev.GetSeq())
				after = ev.GetSeq()
			}
			if !p.GetHasMore() {
				break
			}
		}
		if uint64(len(seen)) != all || seen[0] != 1 || seen[len(seen)-1] != all {
			t.Fatalf("forward paging saw %v", seen)
		}
		list, err := a2.Conversations(ctx, 0)
		if err != nil || len(list) != 1 || list[0].GetConversationId() != conv || list[0].GetLastMessagePreview() != "after" {
			t.Fatalf("alice's conversations = %v, %v", list, err)
		}
	})

	t.Run("direct conversation opens once", func(t *testing.T) {
		d1, err := a1.OpenDirect(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		d2, err := b1.OpenDirect(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if d1.GetConversationId() != d2.GetConversationId() || !d2.GetDuplicate() {
			t.Fatalf("direct ids differ: %v vs %v", d1, d2)
		}
		if _, err := b1.Send(ctx, d1.GetConversationId(), "hi alice"); err != nil {
			t.Fatal(err)
		}
		for _, d := range devices {
			evs := d.upTo(t, d1.GetConversationId(), 2)
			if evs[len(evs)-1].GetMessagePosted().GetText() != "hi alice" {
				t.Fatalf("%s got %v", d.DeviceID, evs)
			}
		}
	})

	t.Run("add member", func(t *testing.T) {
		c1 := e.dial("carol", "carol-1", false)
		acc, err := a1.AddMember(ctx, conv, "carol")
		if err != nil {
			t.Fatal(err)
		}
		c1.last[conv] = acc.GetSeq() - 1
		ev := c1.upTo(t, conv, acc.GetSeq())
		if ev[0].GetMemberAdded().GetUserId() != "carol" || ev[0].GetSenderId() != "alice" {
			t.Fatalf("carol got %v", ev[0])
		}
		msg, err := c1.Send(ctx, conv, "hi all")
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range append(devices, c1) {
			d.upTo(t, conv, msg.GetSeq())
		}
		p, err := c1.History(ctx, &clientv1.GetHistory{ConversationId: conv, Limit: 200})
		if err != nil || p.GetEvents()[0].GetSeq() != 1 {
			t.Fatalf("a new member reads the whole history: %v %v", p, err)
		}
	})
}

// waitHistory waits until persistence has stored seq last.
func waitHistory(t *testing.T, c *sdk.Client, conv string, last uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := c.History(context.Background(), &clientv1.GetHistory{ConversationId: conv, Limit: 1})
		if err == nil && len(p.GetEvents()) == 1 && p.GetEvents()[0].GetSeq() == last {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("history did not reach seq %d: %v %v", last, p, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func wantCode(t *testing.T, err error, code chatv1.ErrorCode) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != code {
		t.Fatalf("err = %v, want %v", err, code)
	}
}

// rawConn is a WebSocket speaking the protocol by hand.
func rawConn(t *testing.T, url, subprotocol string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.Dial(tctx(t), url, &websocket.DialOptions{Subprotocols: []string{subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	return ws
}

func readFrame(t *testing.T, ws *websocket.Conn, f wire.Format) *clientv1.ServerFrame {
	t.Helper()
	_, data, err := ws.Read(tctx(t))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	frame, err := wire.DecodeServer(f, data)
	if err != nil {
		t.Fatal(err)
	}
	return frame
}

func TestBadInput(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dial("alice", "a", false)
	bob := e.dial("bob", "b", true)
	acc, err := alice.CreateGroup(ctx, "private", "dave")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()

	// After each bad frame the connection must still work: a good request
	// gets its answer and pushes still arrive.
	stillWorks := func(t *testing.T, d *device) {
		t.Helper()
		if err := d.Ping(ctx); err != nil {
			t.Fatalf("connection broken after bad input: %v", err)
		}
	}

	t.Run("garbage bytes", func(t *testing.T) {
		for _, d := range []*device{alice, bob} {
			if err := d.WriteRaw(ctx, []byte("\xff\x00garbage{{")); err != nil {
				t.Fatal(err)
			}
			// No request id can be read from garbage, so the answer is an
			// error frame without one.
			select {
			case e := <-d.Errors():
				if e.Code != chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME || e.Message == "" {
					t.Fatalf("%s: error frame %v, want MALFORMED_FRAME with a message", d.DeviceID, e)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no error frame for garbage bytes", d.DeviceID)
			}
			stillWorks(t, d)
		}
	})
	cases := []struct {
		name  string
		json  string
		proto []byte
		code  chatv1.ErrorCode
	}{
		{"unknown frame type", `{"requestId":"x1","somethingNew":{}}`, []byte{0x0a, 0x02, 'x', '1', 0xfa, 0x3f, 0x00}, chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME},
		{"malformed json", `{"requestId":"x1","sendMessage":`, nil, chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{"truncated protobuf", "", []byte{0x0a, 0x10, 'x'}, chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{"oversize frame", `{"requestId":"x1","sendMessage":{"text":"` + strings.Repeat("a", wire.MaxFrameBytes) + `"}}`,
			append([]byte{0x0a, 0x02, 'x', '1'}, make([]byte, wire.MaxFrameBytes)...), chatv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE},
		{"second authenticate", `{"requestId":"x1","authenticate":{"token":"t"}}`, nil, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{"send to a conversation you are not in", `{"requestId":"x1","sendMessage":{"conversationId":"` + conv + `","clientMsgId":"m1","text":"let me in"}}`, nil, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND},
		{"history of a conversation you are not in", `{"requestId":"x1","getHistory":{"conversationId":"` + conv + `"}}`, nil, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND},
		{"send to a missing conversation", `{"requestId":"x1","sendMessage":{"conversationId":"nope","clientMsgId":"m2","text":"hello?"}}`, nil, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND},
		{"empty text", `{"requestId":"x1","sendMessage":{"conversationId":"` + conv + `","clientMsgId":"m3","text":" "}}`, nil, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{"missing client message id", `{"requestId":"x1","sendMessage":{"conversationId":"` + conv + `","text":"x"}}`, nil, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{"direct with yourself", `{"requestId":"x1","createConversation":{"clientMsgId":"m4","kind":"CONVERSATION_KIND_DIRECT","memberIds":["bob"]}}`, nil, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(ws *websocket.Conn, f wire.Format, typ websocket.MessageType, data []byte) {
				t.Helper()
				if err := ws.Write(ctx, typ, data); err != nil {
					t.Fatal(err)
				}
				frame := readFrame(t, ws, f)
				if frame.GetError().GetCode() != tc.code {
					t.Fatalf("answer = %v, want error %v", frame, tc.code)
				}
				// The connection survives: a ping still gets its pong.
				ping, _ := wire.Encode(f, &clientv1.ClientFrame{RequestId: "p", Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}})
				if err := ws.Write(ctx, typ, ping); err != nil {
					t.Fatal(err)
				}
				if frame := readFrame(t, ws, f); frame.GetPong() == nil || frame.GetRequestId() != "p" {
					t.Fatalf("after the error, ping got %v", frame)
				}
			}
			if tc.json != "" {
				ws := authed(t, e, "bob", wire.SubprotocolJSON)
				check(ws, wire.JSON, websocket.MessageText, []byte(tc.json))
			}
			if tc.proto != nil {
				ws := authed(t, e, "bob", wire.SubprotocolProto)
				check(ws, wire.Binary, websocket.MessageBinary, tc.proto)
			}
		})
	}
	// MALFORMED_FRAME echoes the request id when it can be read: a JSON
	// object with a string requestId, or protobuf bytes that parse up to
	// field 1; an id over 64 bytes is not echoed.
	t.Run("malformed frames echo a readable request id", func(t *testing.T) {
		long := strings.Repeat("r", edge.MaxRequestIDBytes+1)
		for _, tc := range []struct {
			name, json string
			proto      []byte
			id         string
		}{
			{"unknown field in a known frame", `{"requestId":"m1","ping":{"bogus":1}}`, nil, "m1"},
			{"a field of the wrong type", `{"request_id":"m2","getHistory":{"limit":"many"}}`, nil, "m2"},
			{"broken bytes after the request id", "", []byte{0x0a, 0x02, 'm', '3', 0x5a, 0xff}, "m3"},
			{"unreadable", `{"requestId":"m4",`, []byte{0x5a, 0xff, 0x0a, 0x02, 'm', '4'}, ""},
			{"too long to echo", `{"requestId":"` + long + `","ping":{"bogus":1}}`, nil, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, sp := range []string{wire.SubprotocolJSON, wire.SubprotocolProto} {
					f, _ := wire.FormatFor(sp)
					data, typ := []byte(tc.json), websocket.MessageText
					if f == wire.Binary {
						data, typ = tc.proto, websocket.MessageBinary
					}
					if len(data) == 0 {
						continue
					}
					ws := authed(t, e, "bob", sp)
					if err := ws.Write(ctx, typ, data); err != nil {
						t.Fatal(err)
					}
					frame := readFrame(t, ws, f)
					if frame.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME || frame.GetRequestId() != tc.id {
						t.Fatalf("%s: answer %v, want MALFORMED_FRAME with request id %q", sp, frame, tc.id)
					}
				}
			})
		}
	})
	t.Run("text frame on the binary subprotocol", func(t *testing.T) {
		ws := authed(t, e, "bob", wire.SubprotocolProto)
		if err := ws.Write(ctx, websocket.MessageText, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, ws, wire.Binary); f.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME {
			t.Fatalf("got %v", f)
		}
	})

	authFail := func(t *testing.T, first string, code chatv1.ErrorCode) {
		t.Helper()
		ws := rawConn(t, e.url, wire.SubprotocolJSON)
		if err := ws.Write(ctx, websocket.MessageText, []byte(first)); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, ws, wire.JSON); f.GetError().GetCode() != code {
			t.Fatalf("answer = %v, want %v", f, code)
		}
		_, _, err := ws.Read(ctx)
		if websocket.CloseStatus(err) != 4001 {
			t.Fatalf("connection should close with 4001, got %v", err)
		}
	}
	t.Run("expired token", func(t *testing.T) {
		tok, _ := e.minter.MintAt("bob", time.Now().Add(-2*time.Hour), time.Hour)
		authFail(t, `{"requestId":"1","authenticate":{"token":"`+tok+`"}}`, chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED)
	})
	t.Run("token signed with another secret", func(t *testing.T) {
		other, _ := auth.NewHS256([]byte("another-secret-another-secret"))
		tok, _ := other.Mint("bob", time.Hour)
		authFail(t, `{"requestId":"1","authenticate":{"token":"`+tok+`"}}`, chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED)
	})
	t.Run("device id with a NUL", func(t *testing.T) {
		tok, _ := e.minter.Mint("bob", time.Hour)
		authFail(t, `{"requestId":"1","authenticate":{"token":"`+tok+`","deviceId":"ph\u0000ne"}}`, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	})
	t.Run("request before authenticate", func(t *testing.T) {
		authFail(t, `{"requestId":"1","ping":{}}`, chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED)
	})
	t.Run("garbage before authenticate", func(t *testing.T) {
		authFail(t, `garbage`, chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME)
	})
	t.Run("unknown subprotocol", func(t *testing.T) {
		ws, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{"chat"}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("want policy violation close, got %v", err)
		}
	})
	t.Run("sdk surfaces error codes", func(t *testing.T) {
		_, err := bob.Send(ctx, conv, "let me in")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
		_, err = bob.AddMember(ctx, conv, "bob")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
		_, err = alice.AddMember(ctx, conv, "dave")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS)
		stillWorks(t, bob)
	})
	t.Run("nothing was written by the bad input", func(t *testing.T) {
		waitHistory(t, alice.Client, conv, 1)
		p, err := alice.History(ctx, &clientv1.GetHistory{ConversationId: conv})
		if err != nil || len(p.GetEvents()) != 1 {
			t.Fatalf("history = %v, %v; want only the creation", p, err)
		}
	})
}

// authed returns a raw connection authenticated as user.
func authed(t *testing.T, e *env, user, subprotocol string) *websocket.Conn {
	t.Helper()
	f, _ := wire.FormatFor(subprotocol)
	ws := rawConn(t, e.url, subprotocol)
	tok, _ := e.minter.Mint(user, time.Hour)
	data, _ := wire.Encode(f, &clientv1.ClientFrame{RequestId: "a", Frame: &clientv1.ClientFrame_Authenticate{Authenticate: &clientv1.Authenticate{Token: tok}}})
	typ := websocket.MessageBinary
	if f == wire.JSON {
		typ = websocket.MessageText
	}
	if err := ws.Write(tctx(t), typ, data); err != nil {
		t.Fatal(err)
	}
	if fr := readFrame(t, ws, f); fr.GetAuthenticated() == nil {
		t.Fatalf("authenticate: %v", fr)
	}
	return ws
}

// TestRestartKeepsEverything stops the platform and starts it on the same
// data folder: history, conversation lists, seq numbering and the memory of
// accepted client message ids all survive.
func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	ctx := tctx(t)
	e, stop := start(t, dir)
	alice := e.dial("alice", "a", false)
	acc, err := alice.CreateGroup(ctx, "kept", "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	first, err := alice.SendWithID(ctx, conv, "before-1", "before restart")
	if err != nil {
		t.Fatal(err)
	}
	waitHistory(t, alice.Client, conv, first.GetSeq())
	alice.Close()
	stop()

	e, stop = start(t, dir)
	defer stop()
	bob := e.dial("bob", "b", false)
	list, err := bob.Conversations(ctx, 0)
	if err != nil || len(list) != 1 || list[0].GetLastMessagePreview() != "before restart" {
		t.Fatalf("bob's list after restart = %v, %v", list, err)
	}
	again, err := bob.Client.SendWithID(ctx, conv, "before-1", "same id, other user")
	if err != nil || again.GetDuplicate() {
		t.Fatalf("another user's identical client id must be a new message: %v, %v", again, err)
	}
	if again.GetSeq() != first.GetSeq()+1 {
		t.Fatalf("seq after restart = %d, want %d", again.GetSeq(), first.GetSeq()+1)
	}
	alice = e.dial("alice", "a", false)
	dup, err := alice.SendWithID(ctx, conv, "before-1", "before restart")
	if err != nil || !dup.GetDuplicate() || dup.GetSeq() != first.GetSeq() {
		t.Fatalf("resend after restart = %v, %v; want duplicate of seq %d", dup, err, first.GetSeq())
	}
	waitHistory(t, bob.Client, conv, again.GetSeq())
	p, err := bob.History(ctx, &clientv1.GetHistory{ConversationId: conv})
	if err != nil || len(p.GetEvents()) != 3 {
		t.Fatalf("history after restart = %v, %v", p, err)
	}
}
