package platform_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// clientWith is user's SDK client with options of its own (a device id,
// acks).
func (w *webEnv) clientWith(user string, o sdk.Options) *sdk.Client {
	w.t.Helper()
	m, _ := auth.NewHS256(secret)
	tok, _ := m.Mint(user, time.Hour)
	o.URL, o.Token = w.p.URL(), tok
	c, err := sdk.Dial(w.ctx, o)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	go func() {
		for range c.Events() {
		}
	}()
	return c
}

// front brings a tab to the front: headless tabs start hidden, which the
// page takes for a user away (idle, and nothing marked read).
func (w *webEnv) front(tctx context.Context, who string) {
	w.t.Helper()
	if err := chromedp.Run(tctx, page.BringToFront()); err != nil {
		w.t.Fatalf("%s to the front: %v", who, err)
	}
	w.waitJS(tctx, who, `document.visibilityState`, "visible")
}

// listOrder is the titles of the page's conversation list, top first.
const listOrder = `Array.from(document.querySelectorAll('#conversation-list .conversation .conv-title')).map(n => n.textContent).join(',')`

func listItem(title string) string {
	return `Array.from(document.querySelectorAll('#conversation-list .conversation')).find(n => n.querySelector('.conv-title').textContent === ` + jsq(title) + `)`
}

func seqOf(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("seq %q: %v", s, err)
	}
	return n
}

// retry runs f until it succeeds: the edge checks membership against the
// conversation list, which shows a new conversation a moment late.
func retry(t *testing.T, what string, f func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

// TestWebChatFlags: alice pins a conversation from its header and mutes
// another from its list menu; the list puts the pinned one first with a
// pin, marks the muted one and subdues its unread badge, and leaves it out
// of the tab title's count. Flags set on alice's other device (the SDK)
// update the page live, and a reload shows the server's list the same way.
func TestWebChatFlags(t *testing.T) {
	w := startWeb(t, 5*time.Minute)
	alice := w.tab("alice")
	w.front(alice, "alice")
	phone := w.clientWith("alice", sdk.Options{DeviceID: "alice-phone"})
	bob := w.client("bob")
	ctx := w.ctx

	ids := map[string]string{}
	for _, title := range []string{"one", "two", "three"} {
		g, err := phone.CreateGroup(ctx, title, "bob")
		if err != nil {
			t.Fatal(err)
		}
		ids[title] = g.GetConversationId()
		if _, err := phone.Send(ctx, g.GetConversationId(), "about "+title); err != nil {
			t.Fatal(err)
		}
	}
	w.waitJS(alice, "alice", listOrder, "three,two,one")
	w.waitJS(alice, "alice", `document.querySelectorAll('#conversation-list .flag-marker').length`, "0")

	// Pin from the conversation's header.
	w.openConv(alice, "alice", "one")
	w.waitJS(alice, "alice", `Q('#pin-button').getAttribute('aria-pressed')`, "false")
	w.click(alice, "alice", `Q('#pin-button')`)
	w.waitJS(alice, "alice", `Q('#pin-button').getAttribute('aria-pressed')`, "true")
	w.waitHas(alice, "alice", `T('#pin-button')`, "Unpin")
	w.waitJS(alice, "alice", listOrder, "one,three,two")
	w.waitJS(alice, "alice", listItem("one")+`.dataset.pinned`, "true")
	w.waitJS(alice, "alice", `!!`+listItem("one")+`.querySelector('.pin-marker')`, "true")
	w.waitJS(alice, "alice", `!!`+listItem("three")+`.querySelector('.pin-marker')`, "false")

	// Mute from the list item's menu, without opening the conversation.
	w.click(alice, "alice", listItem("two")+`.querySelector('.conv-menu-button')`)
	w.waitJS(alice, "alice", `Q('#conv-menu').hidden`, "false")
	w.waitHas(alice, "alice", `T('#conv-menu-mute')`, "Mute")
	w.click(alice, "alice", `Q('#conv-menu-mute')`)
	w.waitJS(alice, "alice", `Q('#conv-menu').hidden`, "true")
	w.waitJS(alice, "alice", listItem("two")+`.dataset.muted`, "true")
	w.waitJS(alice, "alice", `!!`+listItem("two")+`.querySelector('.muted-marker')`, "true")
	w.waitJS(alice, "alice", `T('#conversation-title')`, "one")

	// The other device heard of both.
	flags := map[string]*chatv1.ConversationFlags{}
	for deadline := time.After(45 * time.Second); !(flags[ids["one"]].GetPinned() && flags[ids["two"]].GetMuted()); {
		select {
		case f := <-phone.FlagUpdates():
			flags[f.GetConversationId()] = f
		case <-deadline:
			t.Fatalf("alice's phone was never pushed the page's flags: %v", flags)
		}
	}

	// Unread: a muted conversation's badge is subdued and not in the title.
	if _, err := bob.Send(ctx, ids["two"], "to two"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, ids["three"], "to three"); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", listItem("two")+`.querySelector('.unread').textContent`, "1")
	w.waitJS(alice, "alice", listItem("two")+`.querySelector('.unread').className`, "unread unread-muted")
	w.waitJS(alice, "alice", listItem("three")+`.querySelector('.unread').className`, "unread")
	w.waitJS(alice, "alice", `document.title`, "(1) Parley")
	w.waitJS(alice, "alice", listOrder, "one,three,two")

	// Alice's phone pins two and unmutes it: the page follows live.
	if _, err := phone.SetPinned(ctx, ids["two"], true); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", listOrder, "two,one,three")
	w.waitJS(alice, "alice", `!!`+listItem("two")+`.querySelector('.pin-marker')`, "true")
	if _, err := phone.SetMuted(ctx, ids["two"], false); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", listItem("two")+`.dataset.muted`, "false")
	w.waitJS(alice, "alice", `!!`+listItem("two")+`.querySelector('.muted-marker')`, "false")
	w.waitJS(alice, "alice", listItem("two")+`.querySelector('.unread').className`, "unread")
	w.waitJS(alice, "alice", `document.title`, "(2) Parley")
	// Unpinning the open one from the page, and its header shows it.
	if _, err := phone.SetPinned(ctx, ids["one"], false); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `Q('#pin-button').getAttribute('aria-pressed')`, "false")
	w.waitJS(alice, "alice", listOrder, "two,three,one")
	w.click(alice, "alice", `Q('#mute-button')`)
	w.waitJS(alice, "alice", listItem("one")+`.dataset.muted`, "true")
	w.waitJS(alice, "alice", `Q('#mute-button').getAttribute('aria-pressed')`, "true")

	// A reload reads it all from the server's list, in the server's order.
	if err := chromedp.Run(alice, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `Q('#status').dataset.state`, "connected")
	w.waitJS(alice, "alice", listOrder, "two,three,one")
	w.waitJS(alice, "alice", listItem("two")+`.dataset.pinned`, "true")
	w.waitJS(alice, "alice", listItem("one")+`.dataset.muted`, "true")
	w.waitJS(alice, "alice", listItem("one")+`.dataset.pinned`, "false")
	list, err := phone.Conversations(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var titles []string
	for _, c := range list {
		titles = append(titles, c.GetTitle())
	}
	if strings.Join(titles, ",") != "two,three,one" {
		t.Fatalf("the server lists %v", titles)
	}
}

// TestWebChatReceipts: alice's own messages go from sent to delivered to
// read as bob's and carol's SDK devices report positions, and the latest
// one names who has seen it, as the SDK's SeenBy does; a reload shows the
// same from getReceipts. In a direct chat the status says Read.
func TestWebChatReceipts(t *testing.T) {
	w := startWeb(t, 5*time.Minute)
	alice := w.tab("alice")
	w.front(alice, "alice")
	bob := w.clientWith("bob", sdk.Options{DeviceID: "bob-phone"})
	carol := w.clientWith("carol", sdk.Options{DeviceID: "carol-phone"})
	ctx := w.ctx

	w.typeInto(alice, "alice", "#new-group-title", "Receipts")
	w.typeInto(alice, "alice", "#new-group-members", "bob, carol")
	w.click(alice, "alice", `Q('#new-group-button')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "Receipts")
	conv := w.str(alice, `Q('#conversation-title').title`)
	w.typeInto(alice, "alice", "#composer-input", "status check")
	w.click(alice, "alice", `Q('#send-button')`)
	status := func(text string) string { return `M(` + jsq(text) + `).querySelector('.receipt')` }
	w.waitJS(alice, "alice", status("status check")+`.dataset.status`, "sent")
	w.waitJS(alice, "alice", status("status check")+`.textContent`, "✓ Sent")
	seq := seqOf(t, w.str(alice, `M('status check').dataset.seq`))

	retry(t, "bob marks delivered", func() error { _, err := bob.Mark(ctx, conv, seq, 0); return err })
	w.waitJS(alice, "alice", status("status check")+`.dataset.status`, "delivered")
	w.waitJS(alice, "alice", status("status check")+`.textContent`, "✓✓ Delivered")
	w.waitJS(alice, "alice", `document.querySelectorAll('#messages .seen-by').length`, "0")

	if _, err := bob.Mark(ctx, conv, seq, seq); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", status("status check")+`.textContent`, "✓✓ Read by 1")
	w.waitJS(alice, "alice", `M('status check').querySelector('.seen-by').textContent`, "Seen by bob")
	retry(t, "carol marks read", func() error { _, err := carol.Mark(ctx, conv, seq, seq); return err })
	w.waitJS(alice, "alice", status("status check")+`.textContent`, "✓✓ Read by 2")
	w.waitJS(alice, "alice", `M('status check').querySelector('.seen-by').textContent`, "Seen by bob, carol")
	seen, err := bob.SeenBy(ctx, conv, seq)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.str(alice, `M('status check').querySelector('.seen-by').dataset.users`); got != strings.Join(seen, ",") {
		t.Fatalf("the page says seen by %q, the SDK %v", got, seen)
	}

	// A newer message of alice's takes the line; nobody has seen it yet.
	w.typeInto(alice, "alice", "#composer-input", "second")
	w.click(alice, "alice", `Q('#send-button')`)
	w.waitJS(alice, "alice", status("second")+`.dataset.status`, "sent")
	w.waitJS(alice, "alice", `document.querySelectorAll('#messages .seen-by').length`, "0")
	w.waitJS(alice, "alice", status("status check")+`.textContent`, "✓✓ Read by 2")
	seq2 := seqOf(t, w.str(alice, `M('second').dataset.seq`))
	if _, err := bob.Mark(ctx, conv, seq2, seq2); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `M('second').querySelector('.seen-by').textContent`, "Seen by bob")
	w.waitJS(alice, "alice", status("second")+`.textContent`, "✓✓ Read by 1")
	w.waitJS(alice, "alice", `document.querySelectorAll('#messages .seen-by').length`, "1")

	// Carol posts without marking anything: posting moves her read
	// position past alice's message. Her message has no status on
	// alice's page, and the line stays under alice's latest.
	if _, err := carol.Send(ctx, conv, "from carol"); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `!!M('from carol').querySelector('.receipt')`, "false")
	w.waitJS(alice, "alice", `M('second').querySelector('.seen-by').textContent`, "Seen by bob, carol")
	w.waitJS(alice, "alice", status("second")+`.textContent`, "✓✓ Read by 2")

	// A reload reads the positions again.
	if err := chromedp.Run(alice, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `Q('#status').dataset.state`, "connected")
	w.waitJS(alice, "alice", `M('second').querySelector('.seen-by').textContent`, "Seen by bob, carol")
	w.waitJS(alice, "alice", status("status check")+`.textContent`, "✓✓ Read by 2")

	// A direct chat: Read, and no seen-by line.
	w.typeInto(alice, "alice", "#new-direct-input", "bob")
	w.click(alice, "alice", `Q('#new-direct-button')`)
	w.waitJS(alice, "alice", `T('#conversation-sub')`, "Direct chat")
	direct := w.str(alice, `Q('#conversation-title').title`)
	w.typeInto(alice, "alice", "#composer-input", "direct hi")
	w.click(alice, "alice", `Q('#send-button')`)
	w.waitJS(alice, "alice", status("direct hi")+`.dataset.status`, "sent")
	dseq := seqOf(t, w.str(alice, `M('direct hi').dataset.seq`))
	retry(t, "bob reads the direct chat", func() error { _, err := bob.Mark(ctx, direct, dseq, dseq); return err })
	w.waitJS(alice, "alice", status("direct hi")+`.textContent`, "✓✓ Read")
	w.waitJS(alice, "alice", `document.querySelectorAll('#messages .seen-by').length`, "0")
}

// TestWebChatTyping: bob's SDK typing shows "bob is typing…" on alice's
// page, which goes by itself after the indicator's expiry, and at once on
// a stop or a message; several typists are named together, and a
// conversation not open shows it in the list. Alice typing in the page is
// pushed to bob, and stopped when she sends.
func TestWebChatTyping(t *testing.T) {
	w := startWeb(t, 5*time.Minute)
	alice := w.tab("alice")
	w.front(alice, "alice")
	bob := w.clientWith("bob", sdk.Options{DeviceID: "bob-phone"})
	carol := w.clientWith("carol", sdk.Options{DeviceID: "carol-phone"})
	ctx := w.ctx

	d, err := bob.OpenDirect(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	direct := d.GetConversationId()
	if _, err := bob.Send(ctx, direct, "hey"); err != nil {
		t.Fatal(err)
	}
	w.openConv(alice, "alice", "bob")
	w.waitJS(alice, "alice", `T('#typing-line')`, "")

	retry(t, "bob types", func() error { return bob.SetTyping(ctx, direct, false) })
	w.waitJS(alice, "alice", `T('#typing-line')`, "bob is typing…")
	shown := time.Now()
	// Nothing more from bob: the indicator expires by itself.
	w.waitJS(alice, "alice", `T('#typing-line')`, "")
	if took := time.Since(shown); took < 2*time.Second {
		t.Fatalf("bob's indicator went after %v, before its expiry", took)
	}
	// A stop ends it at once.
	if err := bob.SetTyping(ctx, direct, false); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `T('#typing-line')`, "bob is typing…")
	if err := bob.SetTyping(ctx, direct, true); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w.waitJS(alice, "alice", `T('#typing-line')`, "")
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("a stop took %v to show", took)
	}

	// A group: two typists, then bob's message ends his.
	w.typeInto(alice, "alice", "#new-group-title", "Typers")
	w.typeInto(alice, "alice", "#new-group-members", "bob, carol")
	w.click(alice, "alice", `Q('#new-group-button')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "Typers")
	group := w.str(alice, `Q('#conversation-title').title`)
	time.Sleep(600 * time.Millisecond) // the edge forwards one indicator per 500 ms per connection
	retry(t, "bob types in the group", func() error { return bob.SetTyping(ctx, group, false) })
	retry(t, "carol types in the group", func() error { return carol.SetTyping(ctx, group, false) })
	w.waitJS(alice, "alice", `T('#typing-line')`, "bob and carol are typing…")
	if _, err := bob.Send(ctx, group, "done typing"); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `T('#typing-line')`, "carol is typing…")
	// Typing where alice is not looking shows in the list.
	time.Sleep(600 * time.Millisecond)
	if err := bob.SetTyping(ctx, direct, false); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", listItem("bob")+`.querySelector('.conv-preview').textContent`, "typing…")
	w.waitJS(alice, "alice", listItem("bob")+`.querySelector('.conv-preview').textContent`, "hey")

	// Alice types in the page: bob is told, and told she stopped when she
	// sends.
	for len(bob.Typing()) > 0 {
		<-bob.Typing()
	}
	w.typeInto(alice, "alice", "#composer-input", "typing away")
	next := func(stopped bool) {
		t.Helper()
		for deadline := time.After(45 * time.Second); ; {
			select {
			case ind := <-bob.Typing():
				if ind.GetUserId() == "alice" && ind.GetConversationId() == group && ind.GetStopped() == stopped {
					return
				}
			case <-deadline:
				t.Fatalf("bob never got alice's indicator (stopped %v)", stopped)
			}
		}
	}
	next(false)
	w.click(alice, "alice", `Q('#send-button')`)
	next(true)
	w.waitJS(alice, "alice", `!!M('typing away')`, "true")
}

// TestWebChatPresence: the page shows bob online in their direct chat,
// away once his SDK says it is idle, online again, and offline with a
// last seen once he disconnects; a group counts who is around and the
// members panel shows each. Hiding alice's page makes her away for bob.
func TestWebChatPresence(t *testing.T) {
	w := startWeb(t, 5*time.Minute)
	alice := w.tab("alice")
	w.front(alice, "alice")
	bob := w.clientWith("bob", sdk.Options{DeviceID: "bob-phone"})
	ctx := w.ctx

	d, err := bob.OpenDirect(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, d.GetConversationId(), "hi"); err != nil {
		t.Fatal(err)
	}
	w.openConv(alice, "alice", "bob")
	w.waitJS(alice, "alice", `Q('#presence').dataset.state`, "online")
	w.waitJS(alice, "alice", `T('#presence')`, "online")
	if err := bob.SetIdle(ctx, true); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `Q('#presence').dataset.state`, "away")
	w.waitJS(alice, "alice", `T('#presence')`, "away")
	if err := bob.SetIdle(ctx, false); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `T('#presence')`, "online")
	bob.Close()
	w.waitJS(alice, "alice", `Q('#presence').dataset.state`, "offline")
	w.waitHas(alice, "alice", `T('#presence')`, "last seen ")
	if got := w.str(alice, `T('#presence')`); !strings.HasPrefix(got, "last seen today at ") && !strings.HasPrefix(got, "last seen yesterday at ") {
		t.Fatalf("bob offline shows %q", got)
	}

	// A group: bob is back on another device, carol never came.
	bob2 := w.clientWith("bob", sdk.Options{DeviceID: "bob-laptop"})
	w.typeInto(alice, "alice", "#new-group-title", "Around")
	w.typeInto(alice, "alice", "#new-group-members", "bob, carol")
	w.click(alice, "alice", `Q('#new-group-button')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "Around")
	w.waitJS(alice, "alice", `T('#presence')`, "1 online")
	w.click(alice, "alice", `Q('#members-button')`)
	w.waitJS(alice, "alice", `Q('#member-list .member-row[data-user="bob"]').dataset.presence`, "online")
	w.waitJS(alice, "alice", `Q('#member-list .member-row[data-user="carol"]').dataset.presence`, "offline")
	w.waitJS(alice, "alice", `Q('#member-list .member-row[data-user="carol"] .presence-dot').textContent`, "offline")

	// Alice's page hidden: she is idle there, her only device, so away.
	retry(t, "bob watches alice, online", func() error {
		now, err := bob2.WatchPresence(ctx, "alice")
		if err == nil && (len(now) != 1 || now[0].GetState() != chatv1.PresenceState_PRESENCE_STATE_ONLINE) {
			err = fmt.Errorf("alice shows %v", now)
		}
		return err
	})
	next := func(want chatv1.PresenceState) {
		t.Helper()
		for deadline := time.After(45 * time.Second); ; {
			select {
			case p := <-bob2.PresenceUpdates():
				if p.GetUserId() == "alice" && p.GetState() == want {
					return
				}
			case <-deadline:
				t.Fatalf("alice never showed %v to bob", want)
			}
		}
	}
	var ok bool
	if err := w.eval(alice, `(() => { Object.defineProperty(document, 'hidden', {configurable: true, get: () => true}); document.dispatchEvent(new Event('visibilitychange')); return true; })()`, &ok); err != nil {
		t.Fatal(err)
	}
	next(chatv1.PresenceState_PRESENCE_STATE_AWAY)
	if err := w.eval(alice, `(() => { delete document.hidden; document.dispatchEvent(new Event('visibilitychange')); return !document.hidden; })()`, &ok); err != nil || !ok {
		t.Fatalf("show the page again: %v %v", ok, err)
	}
	next(chatv1.PresenceState_PRESENCE_STATE_ONLINE)
}
