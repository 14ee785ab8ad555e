package platform_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/services/platform"
)

// chromium finds the browser for the page test: PARLEY_CHROMIUM, or
// Debian's chromium. Without one the test skips, unless
// PARLEY_INTEGRATION=require (CI), where that is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("PARLEY_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	msg := "no chromium: apt-get install chromium, or set PARLEY_CHROMIUM"
	if os.Getenv("PARLEY_INTEGRATION") == "require" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestWebChatPage drives the page in two headless browser tabs: alice and
// bob sign in, alice opens a direct chat with bob and sends; bob sees the
// conversation and the message arrive live, and answers. Then bob's page
// is cut off (the tabs reach the edge through a proxy the test can cut)
// while alice posts from another device: it reconnects by itself,
// resumes from what it had shown, and shows each missed message once and
// in order, and the missed ones of a conversation not open as unread.
func TestWebChatPage(t *testing.T) {
	exe := chromium(t)
	ctx0 := context.Background()
	p, err := platform.Start(ctx0, platform.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", JWTSecret: secret, DevTokens: true, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopPlatform := context.WithCancel(ctx0)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() { stopPlatform(); <-done }()
	for !p.Ready() {
		time.Sleep(20 * time.Millisecond)
	}
	px := newProxy(t, p.Edge.HTTPAddr())
	page := "http://" + px.addr() + "/"

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.WindowSize(1200, 800))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx0, opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	// A bound on the whole test, not a measure: on a loaded CI machine
	// (other packages' tests run beside this one) Chromium alone can take
	// tens of seconds.
	ctx, cancel := context.WithTimeout(browser, 3*time.Minute)
	defer cancel()
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Each user gets a tab of its own; the page keeps its sign-in in
	// sessionStorage, which tabs do not share.
	tab := func(user string) context.Context {
		tctx, _ := chromedp.NewContext(ctx)
		if err := chromedp.Run(tctx,
			chromedp.Navigate(page),
			chromedp.WaitVisible("#user-input", chromedp.ByQuery),
			chromedp.SendKeys("#user-input", user, chromedp.ByQuery),
			chromedp.Click("#login-button", chromedp.ByQuery),
			chromedp.WaitVisible("#new-button", chromedp.ByQuery),
		); err != nil {
			t.Fatalf("%s signs in: %v", user, err)
		}
		return tctx
	}
	alice, bob := tab("alice"), tab("bob")

	waitText := func(tctx context.Context, who, sel, want string) {
		t.Helper()
		var got string
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if err := chromedp.Run(tctx, chromedp.Text(sel, &got, chromedp.ByQuery, chromedp.AtLeast(0))); err == nil && strings.Contains(got, want) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: %s never showed %q (last: %q)", who, sel, want, got)
	}

	if err := chromedp.Run(alice,
		chromedp.Click("#new-button", chromedp.ByQuery),
		chromedp.SendKeys("#new-direct-input", "bob", chromedp.ByQuery),
		chromedp.Click("#new-direct-button", chromedp.ByQuery),
		chromedp.WaitVisible("#composer-input", chromedp.ByQuery),
		chromedp.SendKeys("#composer-input", "hello bob, from the browser", chromedp.ByQuery),
		chromedp.Click("#send-button", chromedp.ByQuery),
	); err != nil {
		t.Fatalf("alice opens a chat and sends: %v", err)
	}
	waitText(alice, "alice", "#messages", "hello bob, from the browser")
	// Bob never refreshed: the conversation and the message arrive live.
	waitText(bob, "bob", "#conversation-list", "alice")
	if err := chromedp.Run(bob, chromedp.Click("#conversation-list .conversation", chromedp.ByQuery)); err != nil {
		t.Fatalf("bob opens the conversation: %v", err)
	}
	waitText(bob, "bob", "#messages", "hello bob, from the browser")
	if err := chromedp.Run(bob,
		chromedp.SendKeys("#composer-input", "hi alice", chromedp.ByQuery),
		chromedp.Click("#send-button", chromedp.ByQuery),
	); err != nil {
		t.Fatalf("bob answers: %v", err)
	}
	waitText(alice, "alice", "#messages", "hi alice")
	screenshot(t, alice, "parley-webui-alice.png")

	// waitJS waits until a JavaScript expression's string value is want.
	waitJS := func(tctx context.Context, who, expr, want string) {
		t.Helper()
		var got string
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if err := chromedp.Run(tctx, chromedp.Evaluate(expr, &got)); err == nil && got == want {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: %s is %q, want %q", who, expr, got, want)
	}

	// Alice's other device, straight to the edge: it keeps posting while
	// bob's page is cut off.
	m, _ := auth.NewHS256(secret)
	tok, _ := m.Mint("alice", time.Hour)
	phone, err := sdk.Dial(ctx, sdk.Options{URL: p.URL(), Token: tok, DeviceID: "alice-phone"})
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	go func() {
		for range phone.Events() {
		}
	}()
	direct, err := phone.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	side, err := phone.CreateGroup(ctx, "side", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := phone.Send(ctx, side.GetConversationId(), "side 0"); err != nil {
		t.Fatal(err)
	}
	unread := `(document.querySelector('#conversation-list .conversation[data-id="` + side.GetConversationId() + `"] .unread') || {}).textContent || ""`
	waitJS(bob, "bob", unread, "1")

	px.setRefuse(true)
	px.sever()
	waitJS(bob, "bob", `document.getElementById('status').dataset.state`, "disconnected")
	for i := 1; i <= 3; i++ {
		if _, err := phone.Send(ctx, direct.GetConversationId(), fmt.Sprintf("missed %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 2; i++ {
		if _, err := phone.Send(ctx, side.GetConversationId(), fmt.Sprintf("side %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	px.setRefuse(false)
	waitText(bob, "bob", "#messages", "missed 3")
	waitJS(bob, "bob", `document.getElementById('status').dataset.state`, "connected")
	// Every message shown once, in seq order, none skipped.
	var shown []struct {
		Seq  string `json:"seq"`
		Text string `json:"text"`
	}
	if err := chromedp.Run(bob, chromedp.Evaluate(`Array.from(document.querySelectorAll('#messages .event')).map(n => ({seq: n.dataset.seq, text: n.querySelector('.text').textContent}))`, &shown)); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for i, m := range shown {
		count[m.Text]++
		if i > 0 {
			var prev, cur int
			fmt.Sscan(shown[i-1].Seq, &prev)
			fmt.Sscan(m.Seq, &cur)
			if cur != prev+1 {
				t.Fatalf("bob's page shows seq %d after %d: %v", cur, prev, shown)
			}
		}
	}
	for _, text := range []string{"hello bob, from the browser", "hi alice", "missed 1", "missed 2", "missed 3"} {
		if count[text] != 1 {
			t.Fatalf("bob's page shows %q %d times: %v", text, count[text], shown)
		}
	}
	// The other conversation's missed messages came with the resume: they
	// count as unread, which a reload of the list alone would not do.
	waitJS(bob, "bob", unread, "3")
}
