package platform_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
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
// conversation and the message arrive live, and answers.
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
	page := "http://" + p.Edge.HTTPAddr() + "/"

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.WindowSize(1200, 800))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx0, opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(browser, 60*time.Second)
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
			chromedp.WaitVisible("#new-direct-input", chromedp.ByQuery),
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
	var shot []byte
	if err := chromedp.Run(alice, chromedp.FullScreenshot(&shot, 100)); err == nil {
		_ = os.WriteFile(os.TempDir()+"/parley-webui-alice.png", shot, 0o644)
	}
}
