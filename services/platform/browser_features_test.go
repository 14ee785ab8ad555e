package platform_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	backendv1 "github.com/parleychat/parley/pkg/pb/parley/backend/v1"
	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"
	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/platform"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// webEnv is a platform on Pebble and kfake and a headless Chromium whose
// tabs sign in to its page, for the page tests below.
type webEnv struct {
	t    *testing.T
	p    *platform.Platform
	ctx  context.Context
	page string
}

// pageHelpers is prepended to every expression the tests evaluate: M(text)
// is the newest message shown whose text holds text.
const pageHelpers = `const M = (t) => Array.from(document.querySelectorAll('#messages .message.event')).reverse().find(n => n.querySelector('.text').textContent.includes(t));
const Q = (s) => document.querySelector(s);
const T = (s) => { const n = document.querySelector(s); return n ? n.textContent : ''; };
`

func startWeb(t *testing.T, bound time.Duration) *webEnv {
	t.Helper()
	return startWebWith(t, bound, platform.Config{})
}

// startWebWith is startWeb on cfg (its data folder, dev tokens and
// partitions set here).
func startWebWith(t *testing.T, bound time.Duration, cfg platform.Config) *webEnv {
	t.Helper()
	exe := chromium(t)
	ctx0 := context.Background()
	cfg.DataDir, cfg.DevTokens, cfg.Partitions = t.TempDir(), true, 2
	e, stop := startWith(t, cfg)
	t.Cleanup(stop)
	p := e.p
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.WindowSize(1200, 900))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx0, opts...)
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	// A bound on the whole test, not a measure: the machines this runs on
	// are shared, and Chromium alone can take tens of seconds there.
	ctx, cancel := context.WithTimeout(browser, bound)
	t.Cleanup(cancel)
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &webEnv{t: t, p: p, ctx: ctx, page: "http://" + p.Edge.HTTPAddr() + "/"}
}

// tab signs user in, in a tab of its own (the page keeps its sign-in in
// sessionStorage, which tabs do not share).
func (w *webEnv) tab(user string) context.Context {
	w.t.Helper()
	tctx, _ := chromedp.NewContext(w.ctx)
	if err := chromedp.Run(tctx,
		chromedp.Navigate(w.page),
		chromedp.WaitVisible("#user-input", chromedp.ByQuery),
		chromedp.Evaluate(catchErrors, nil),
		chromedp.SendKeys("#user-input", user, chromedp.ByQuery),
		chromedp.Click("#login-button", chromedp.ByQuery),
		chromedp.WaitVisible("#new-button", chromedp.ByQuery),
	); err != nil {
		w.t.Fatalf("%s signs in: %v", user, err)
	}
	w.waitJS(tctx, user, `Q('#status').dataset.state`, "connected")
	return tctx
}

// client is user's SDK client, straight to the edge.
func (w *webEnv) client(user string) *sdk.Client {
	return w.clientWith(user, sdk.Options{DeviceID: user + "-sdk"})
}

func (w *webEnv) eval(tctx context.Context, expr string, out any) error {
	return chromedp.Run(tctx, chromedp.Evaluate("(() => { "+pageHelpers+" return ("+expr+"); })()", out))
}

// waitJS waits until expr (with pageHelpers) is the string want.
func (w *webEnv) waitJS(tctx context.Context, who, expr, want string) {
	w.t.Helper()
	var got string
	var err error
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		got = ""
		if err = w.eval(tctx, `String(`+expr+`)`, &got); err == nil && got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.t.Fatalf("%s: %s is %q (%v), want %q%s", who, expr, got, err, want, w.dump(tctx))
}

// waitHas waits until expr (a string) contains want.
func (w *webEnv) waitHas(tctx context.Context, who, expr, want string) {
	w.t.Helper()
	var got string
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		got = ""
		if err := w.eval(tctx, `String(`+expr+`)`, &got); err == nil && strings.Contains(got, want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.t.Fatalf("%s: %s is %q, want it to contain %q%s", who, expr, got, want, w.dump(tctx))
}

// click waits for the element expr yields and clicks it, as a user would
// (the element's own click, so a button shown on hover counts too).
func (w *webEnv) click(tctx context.Context, who, expr string) {
	w.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		var ok bool
		if err := w.eval(tctx, `(() => { const n = `+expr+`; if (!n || n.disabled) return false; n.click(); return true; })()`, &ok); err == nil && ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.t.Fatalf("%s: nothing to click at %s%s", who, expr, w.dump(tctx))
}

// typeInto types text into the input sel, after clearing it; an input
// of the forms behind the sidebar's "New" button opens them first.
func (w *webEnv) typeInto(tctx context.Context, who, sel, text string) {
	w.t.Helper()
	var cleared bool
	if err := w.eval(tctx, `(() => { const p = Q(`+jsq(sel)+`).closest('#new-panel'); if (p && p.hidden) Q('#new-button').click(); return true; })()`, &cleared); err != nil {
		w.t.Fatalf("%s opens the form of %s: %v", who, sel, err)
	}
	if err := chromedp.Run(tctx, chromedp.WaitVisible(sel, chromedp.ByQuery)); err != nil {
		w.t.Fatalf("%s types into %s: %v", who, sel, err)
	}
	if err := w.eval(tctx, `(() => { const n = Q(`+jsq(sel)+`); n.value = ''; return true; })()`, &cleared); err != nil {
		w.t.Fatalf("%s clears %s: %v", who, sel, err)
	}
	if err := chromedp.Run(tctx, chromedp.SendKeys(sel, text, chromedp.ByQuery)); err != nil {
		w.t.Fatalf("%s types into %s: %v", who, sel, err)
	}
}

// catchErrors keeps the page's uncaught errors for dump.
const catchErrors = `window.__errs = [];
window.addEventListener('error', e => window.__errs.push(String(e.error && e.error.stack || e.message)));
window.addEventListener('unhandledrejection', e => window.__errs.push(String(e.reason && e.reason.stack || e.reason)));`

// dump is what a failure shows of a page: the status, the toast, the
// conversation's header and messages and what is being sent.
func (w *webEnv) dump(tctx context.Context) string {
	var s string
	_ = w.eval(tctx, `['status', 'toast-text', 'conversation-title', 'conversation-sub', 'member-list', 'messages', 'outbox', 'composer-note']
		.map(id => id + ': ' + T('#' + id)).join('\n') + '\ncomposer: ' + Q('#composer-input').value + '\nerrors: ' + (window.__errs || []).join('\n')`, &s)
	return "\npage:\n" + s
}

func (w *webEnv) str(tctx context.Context, expr string) string {
	w.t.Helper()
	var s string
	if err := w.eval(tctx, `String(`+expr+`)`, &s); err != nil {
		w.t.Fatalf("%s: %v", expr, err)
	}
	return s
}

func jsq(s string) string { b, _ := json.Marshal(s); return string(b) }

// openConv clicks the conversation named title in the list.
func (w *webEnv) openConv(tctx context.Context, who, title string) {
	w.t.Helper()
	w.click(tctx, who, `Array.from(document.querySelectorAll('#conversation-list .conversation')).find(n => n.querySelector('.conv-title').textContent === `+jsq(title)+`)`)
	w.waitJS(tctx, who, `T('#conversation-title')`, title)
}

func listEntry(title, sel string) string {
	return `((Array.from(document.querySelectorAll('#conversation-list .conversation')).find(n => n.querySelector('.conv-title').textContent === ` + jsq(title) + `) || document.createElement('i')).querySelector(` + jsq(sel) + `) || {}).textContent || ''`
}

// TestWebChatGroupMessages drives a group through the page: alice creates
// it and adds carol, posts a link and a mention; bob (another tab) sees
// the preview and unread count, reacts, replies and attaches a file;
// carol (SDK) reacts and shares a contact; alice edits her message and
// deletes bob's, and both pages show the edited marker, the tombstone and
// the reaction counts with the viewer's own highlighted.
func TestWebChatGroupMessages(t *testing.T) {
	w := startWeb(t, 6*time.Minute)
	alice, bob := w.tab("alice"), w.tab("bob")
	carol := w.client("carol")

	w.typeInto(alice, "alice", "#new-group-title", "Project X")
	w.typeInto(alice, "alice", "#new-group-members", "bob")
	w.click(alice, "alice", `Q('#new-group-button')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "Project X")
	w.waitHas(alice, "alice", `T('#conversation-sub')`, "Group")
	w.click(alice, "alice", `Q('#members-button')`)
	w.waitJS(alice, "alice", `Q('#member-list .member-row[data-user="alice"]').dataset.role`, "owner")
	w.typeInto(alice, "alice", "#add-member-input", "carol")
	w.click(alice, "alice", `Q('#add-member-button')`)
	w.waitJS(alice, "alice", `!!Q('#member-list .member-row[data-user="carol"]')`, "true")
	conv := w.str(alice, `T('#conv-id')`)

	// The mention is picked from the suggestions, as a user would.
	w.typeInto(alice, "alice", "#composer-input", "hi @b")
	w.click(alice, "alice", `Q('#mention-suggest .mention-option[data-user="bob"]')`)
	if err := chromedp.Run(alice, chromedp.SendKeys("#composer-input", "see https://example.com/x?a=1. ok", chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `Q('#composer-input').value`, "hi @bob see https://example.com/x?a=1. ok")
	w.click(alice, "alice", `Q('#send-button')`)
	w.waitJS(alice, "alice", `M('hi @bob').querySelector('.text a.link').getAttribute('href')`, "https://example.com/x?a=1")
	w.waitJS(alice, "alice", `M('hi @bob').querySelector('.text a.link').textContent`, "https://example.com/x?a=1")
	w.waitJS(alice, "alice", `M('hi @bob').querySelector('.text a.link').rel`, "noopener noreferrer nofollow")
	w.waitJS(alice, "alice", `M('hi @bob').querySelector('.text .mention').dataset.user`, "bob")
	hiSeq := w.str(alice, `M('hi @bob').dataset.seq`)

	// Bob's list: the group, its kind, the preview and one unread message.
	w.waitJS(bob, "bob", listEntry("Project X", ".kind-tag"), "group")
	w.waitJS(bob, "bob", listEntry("Project X", ".conv-preview"), "hi @bob see https://example.com/x?a=1. ok")
	w.waitJS(bob, "bob", listEntry("Project X", ".unread"), "1")
	w.openConv(bob, "bob", "Project X")
	w.waitJS(bob, "bob", `M('hi @bob').querySelector('.mention').className`, "mention mention-me")

	// Reactions: bob from the page, carol from the SDK.
	w.click(bob, "bob", `M('hi @bob').querySelector('.act-react')`)
	w.click(bob, "bob", `M('hi @bob').querySelector('.react-picker button[data-emoji="👍"]')`)
	var seq uint64
	for _, c := range hiSeq {
		seq = seq*10 + uint64(c-'0')
	}
	if _, err := carol.React(w.ctx, conv, seq, "👍"); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.React(w.ctx, conv, seq, "🎉"); err != nil {
		t.Fatal(err)
	}
	thumbs := `M('hi @bob').querySelector('.reaction[data-emoji="👍"]')`
	w.waitJS(alice, "alice", thumbs+`.textContent`, "👍 2")
	w.waitJS(alice, "alice", thumbs+`.classList.contains('mine')`, "false")
	w.waitJS(bob, "bob", thumbs+`.textContent`, "👍 2")
	w.waitJS(bob, "bob", thumbs+`.getAttribute('aria-pressed')`, "true")
	w.waitJS(bob, "bob", `M('hi @bob').querySelector('.reaction[data-emoji="🎉"]').textContent`, "🎉 1")
	// Clicking one's own reaction takes it back.
	w.click(bob, "bob", thumbs)
	w.waitJS(alice, "alice", thumbs+`.textContent`, "👍 1")
	w.waitJS(bob, "bob", thumbs+`.classList.contains('mine')`, "false")
	// Alice adds one from the chip: hers is highlighted on her page only.
	w.click(alice, "alice", thumbs)
	w.waitJS(alice, "alice", thumbs+`.className`, "reaction mine")
	w.waitJS(bob, "bob", thumbs+`.textContent`, "👍 2")

	// Bob replies, quoting alice's message.
	w.click(bob, "bob", `M('hi @bob').querySelector('.act-reply')`)
	w.waitHas(bob, "bob", `T('#composer-context-text')`, "Replying to alice")
	w.typeInto(bob, "bob", "#composer-input", "on it")
	w.click(bob, "bob", `Q('#send-button')`)
	w.waitJS(alice, "alice", `M('on it').querySelector('.quote').dataset.replyTo`, hiSeq)
	w.waitJS(alice, "alice", `M('on it').querySelector('.quote .quote-sender').textContent`, "alice")
	w.waitHas(alice, "alice", `M('on it').querySelector('.quote .quote-text').textContent`, "hi @bob")
	w.click(alice, "alice", `M('on it').querySelector('.quote')`)
	w.waitJS(alice, "alice", `M('hi @bob').classList.contains('highlight')`, "true")

	// Bob attaches a file by its metadata.
	w.click(bob, "bob", `Q('#attach-button')`)
	w.typeInto(bob, "bob", "#attach-url", "https://files.example/cat.png")
	w.typeInto(bob, "bob", "#attach-name", "cat.png")
	w.typeInto(bob, "bob", "#attach-type", "image/png")
	w.typeInto(bob, "bob", "#attach-size", "2048")
	w.typeInto(bob, "bob", "#attach-width", "640")
	w.typeInto(bob, "bob", "#attach-height", "480")
	w.click(bob, "bob", `Q('#attach-add')`)
	w.waitHas(bob, "bob", `T('#pending-attachments')`, "cat.png")
	w.typeInto(bob, "bob", "#composer-input", "a cat")
	w.click(bob, "bob", `Q('#send-button')`)
	att := `M('a cat').querySelector('.attachment')`
	w.waitJS(alice, "alice", att+`.querySelector('a.att-name').getAttribute('href')`, "https://files.example/cat.png")
	w.waitJS(alice, "alice", att+`.querySelector('a.att-name').textContent`, "cat.png")
	w.waitJS(alice, "alice", att+`.querySelector('.att-meta').textContent`, "image/png · 2.0 KB · 640×480")
	w.waitJS(alice, "alice", att+`.dataset.kind`, "image")

	// Carol shares a contact card.
	if _, err := carol.SendRich(w.ctx, &clientv1.SendMessage{ConversationId: conv, Contact: &chatv1.ContactCard{DisplayName: "Dana Scully", UserId: "dana", Email: "dana@example.com"}}); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `Q('#messages .message.event .contact .contact-name').textContent`, "Dana Scully")
	w.waitHas(alice, "alice", `Q('#messages .message.event .contact').textContent`, "dana@example.com")

	// Alice edits her message; bob sees the new text, marked edited.
	w.click(alice, "alice", `M('hi @bob').querySelector('.act-edit')`)
	w.waitJS(alice, "alice", `Q('#composer-input').value`, "hi @bob see https://example.com/x?a=1. ok")
	w.typeInto(alice, "alice", "#composer-input", "hello @bob, updated: https://example.org/y")
	w.click(alice, "alice", `Q('#send-button')`)
	edited := `Q('#messages .message[data-seq="` + hiSeq + `"]')`
	w.waitJS(bob, "bob", edited+`.querySelector('.text').textContent`, "hello @bob, updated: https://example.org/y")
	w.waitJS(bob, "bob", edited+`.querySelector('.edited').textContent`, "edited")
	w.waitJS(bob, "bob", edited+`.querySelector('.text a.link').getAttribute('href')`, "https://example.org/y")
	w.waitJS(bob, "bob", edited+`.querySelector('.reaction[data-emoji="👍"]').textContent`, "👍 2")
	// The quote follows the edit.
	w.waitHas(bob, "bob", `M('on it').querySelector('.quote .quote-text').textContent`, "hello @bob, updated")

	// Bob can delete his own messages only; alice, the owner, deletes his.
	w.waitJS(bob, "bob", `!!M('hello @bob').querySelector('.act-delete')`, "false")
	w.click(alice, "alice", `M('a cat').querySelector('.act-delete')`)
	w.waitHas(alice, "alice", `M('a cat').querySelector('.act-delete').textContent`, "Delete?")
	w.click(alice, "alice", `M('a cat').querySelector('.act-delete')`)
	tomb := `Array.from(document.querySelectorAll('#messages .message.deleted')).map(n => n.querySelector('.text').textContent + '|' + n.dataset.sender + '|' + n.querySelectorAll('.attachment').length).join(',')`
	w.waitJS(bob, "bob", tomb, "This message was deleted|bob|0")
	w.waitJS(alice, "alice", tomb, "This message was deleted|bob|0")

	// A reload rebuilds the same from history: the edit, the tombstone,
	// the counts and the viewer's own reaction.
	if err := chromedp.Run(bob, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	w.waitJS(bob, "bob", edited+`.querySelector('.edited').textContent`, "edited")
	w.waitJS(bob, "bob", edited+`.querySelector('.reaction[data-emoji="👍"]').textContent`, "👍 2")
	w.waitJS(bob, "bob", edited+`.querySelector('.reaction[data-emoji="👍"]').classList.contains('mine')`, "false")
	w.waitJS(bob, "bob", tomb, "This message was deleted|bob|0")
	w.waitJS(bob, "bob", `M('on it').querySelector('.quote .quote-sender').textContent`, "alice")
	if err := chromedp.Run(alice, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", edited+`.querySelector('.reaction[data-emoji="👍"]').className`, "reaction mine")
	screenshot(t, alice, "parley-webui-group.png")
}

// screenshot saves the tab's page to the temporary directory, for a person
// to look at; it is not checked. The tab comes to the front first:
// Chromium paints no frames for a background tab, and a capture of one
// waits for a frame that never comes (one in two, in a run of ten). It
// is bounded so a missing picture never fails or stalls the test.
func screenshot(t *testing.T, tctx context.Context, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tctx, 15*time.Second)
	defer cancel()
	var shot []byte
	if err := chromedp.Run(ctx, page.BringToFront(), chromedp.FullScreenshot(&shot, 100)); err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(os.TempDir(), name), shot, 0o644); err != nil {
		t.Logf("screenshot %s: %v", name, err)
	}
}

// TestWebChatGroupAdmin drives roles through the page: alice (owner)
// makes bob an admin, mutes carol, is refused leaving while the owner,
// manages an invite that dave (SDK) joins with, removes carol, hands
// ownership to bob and leaves; bob renames the group. Every change shows
// live on the other page.
func TestWebChatGroupAdmin(t *testing.T) {
	w := startWeb(t, 6*time.Minute)
	alice, bob := w.tab("alice"), w.tab("bob")
	carol, dave, erin := w.client("carol"), w.client("dave"), w.client("erin")

	w.typeInto(alice, "alice", "#new-group-title", "Crew")
	w.typeInto(alice, "alice", "#new-group-members", "bob, carol")
	w.click(alice, "alice", `Q('#new-group-button')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "Crew")
	conv := w.str(alice, `Q('#conversation-title').title`)
	w.click(alice, "alice", `Q('#members-button')`)
	row := func(u string) string { return `Q('#member-list .member-row[data-user="` + u + `"]')` }
	w.waitJS(alice, "alice", row("carol")+`.dataset.role`, "member")

	w.typeInto(alice, "alice", "#composer-input", "welcome")
	w.click(alice, "alice", `Q('#send-button')`)

	w.waitJS(bob, "bob", listEntry("Crew", ".kind-tag"), "group")
	w.openConv(bob, "bob", "Crew")
	w.click(bob, "bob", `Q('#members-button')`)
	// A plain member sees no moderation.
	w.waitJS(bob, "bob", `!!M('welcome').querySelector('.act-delete')`, "false")
	w.waitJS(bob, "bob", `Q('#rename-button').hidden`, "true")
	w.waitJS(bob, "bob", `Q('#member-list .member-actions') === null`, "true")
	w.waitJS(bob, "bob", `Q('#invite-box').hidden`, "true")

	// Alice makes bob an admin: his page shows it and gives him the tools.
	w.click(alice, "alice", row("bob")+`.querySelector('.act-role')`)
	w.waitJS(alice, "alice", row("bob")+`.dataset.role`, "admin")
	w.waitJS(bob, "bob", row("bob")+`.dataset.role`, "admin")
	w.waitJS(bob, "bob", `Q('#rename-button').hidden`, "false")
	w.waitJS(bob, "bob", `!!M('welcome').querySelector('.act-delete')`, "true")
	// An admin manages plain members, not the owner.
	w.waitJS(bob, "bob", `!!`+row("carol")+`.querySelector('.act-mute')`, "true")
	w.waitJS(bob, "bob", `!!`+row("alice")+`.querySelector('.member-actions')`, "false")

	// Alice mutes carol: carol's posts are refused with MUTED.
	w.click(alice, "alice", row("carol")+`.querySelector('.act-mute')`)
	w.waitJS(bob, "bob", row("carol")+`.dataset.muted`, "true")
	w.waitJS(alice, "alice", row("carol")+`.querySelector('.badge.muted').textContent`, "muted")
	if _, err := carol.Send(w.ctx, conv, "can I talk?"); err == nil || !strings.Contains(err.Error(), "MUTED") {
		t.Fatalf("muted carol posts: %v", err)
	}
	w.waitHas(bob, "bob", `T('#messages')`, "alice muted carol")

	// The owner may not leave: the refusal shows with its code.
	w.click(alice, "alice", `Q('#leave-button')`)
	w.click(alice, "alice", `Q('#leave-button')`)
	w.waitJS(alice, "alice", `Q('#toast').hidden`, "false")
	w.waitJS(alice, "alice", `Q('#toast').dataset.code`, "PERMISSION_DENIED")
	w.waitHas(alice, "alice", `T('#toast-text')`, "[PERMISSION_DENIED]")

	// Bob, an admin now, renames the group.
	w.click(bob, "bob", `Q('#rename-button')`)
	w.typeInto(bob, "bob", "#rename-input", "Crew 2")
	w.click(bob, "bob", `Q('#rename-save')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "Crew 2")
	w.waitJS(alice, "alice", listEntry("Crew 2", ".kind-tag"), "group")

	// An invite: alice creates it, dave joins with it, alice revokes it
	// and erin's join with it is refused.
	w.click(alice, "alice", `Q('#create-invite')`)
	w.waitJS(alice, "alice", `document.querySelectorAll('#invite-list .invite').length`, "1")
	code := w.str(alice, `Q('#invite-list .invite').dataset.code`)
	if _, err := dave.JoinByInvite(w.ctx, conv, code); err != nil {
		t.Fatalf("dave joins with the page's invite %q: %v", code, err)
	}
	w.waitJS(alice, "alice", `!!`+row("dave"), "true")
	w.waitJS(bob, "bob", `!!`+row("dave"), "true")
	w.waitHas(alice, "alice", `T('#messages')`, "dave joined with an invite")
	w.click(alice, "alice", `Q('#invite-list .invite[data-code="`+code+`"] .act-revoke')`)
	w.waitJS(alice, "alice", `document.querySelectorAll('#invite-list .invite').length`, "0")
	if _, err := erin.JoinByInvite(w.ctx, conv, code); err == nil || !strings.Contains(err.Error(), "NOT_FOUND") {
		t.Fatalf("erin joins with a revoked code: %v", err)
	}

	// Bob removes carol (two clicks: it asks first).
	w.click(bob, "bob", row("carol")+`.querySelector('.act-remove')`)
	w.click(bob, "bob", row("carol")+`.querySelector('.act-remove')`)
	w.waitJS(alice, "alice", `!!`+row("carol"), "false")
	w.waitHas(alice, "alice", `T('#messages')`, "bob removed carol")

	// Alice hands ownership to bob, then may leave; the group leaves her
	// list and bob sees her go.
	w.click(alice, "alice", row("bob")+`.querySelector('.act-owner')`)
	w.click(alice, "alice", row("bob")+`.querySelector('.act-owner')`)
	w.waitJS(bob, "bob", row("bob")+`.dataset.role`, "owner")
	w.waitJS(bob, "bob", row("alice")+`.dataset.role`, "admin")
	w.waitJS(alice, "alice", row("alice")+`.dataset.role`, "admin")
	w.click(alice, "alice", `Q('#leave-button')`)
	w.click(alice, "alice", `Q('#leave-button')`)
	w.waitJS(alice, "alice", listEntry("Crew 2", ".conv-title"), "")
	w.waitJS(alice, "alice", `Q('#chat-view').hidden`, "true")
	w.waitJS(bob, "bob", `!!`+row("alice"), "false")
	w.waitHas(bob, "bob", `T('#messages')`, "alice left")
}

// TestWebChatChannelsAndBlocks: a follower of a public channel reads but
// has no composer, following a private channel is refused with its code,
// and a block refuses bob's post (BLOCKED, shown on the message) until
// alice unblocks and he retries; a reload of alice's page in between still
// offers Unblock (listBlocks). The list previews an attachment and a
// deleted message.
func TestWebChatChannelsAndBlocks(t *testing.T) {
	w := startWeb(t, 6*time.Minute)
	alice, bob := w.tab("alice"), w.tab("bob")

	w.typeInto(alice, "alice", "#new-group-title", "News")
	if err := chromedp.Run(alice, chromedp.SetValue("#new-group-kind", "public", chromedp.ByQuery, chromedp.NodeVisible)); err != nil {
		t.Fatal(err)
	}
	w.click(alice, "alice", `Q('#new-group-button')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "News")
	w.waitHas(alice, "alice", `T('#conversation-sub')`, "Public channel")
	w.waitJS(alice, "alice", `Q('#composer').hidden`, "false")
	news := w.str(alice, `Q('#conversation-title').title`)

	// Bob follows by the channel's id, with no code.
	w.typeInto(bob, "bob", "#join-id", news)
	w.click(bob, "bob", `Q('#join-button')`)
	w.waitJS(bob, "bob", `T('#conversation-title')`, "News")
	w.waitJS(bob, "bob", listEntry("News", ".kind-tag"), "channel")
	w.waitJS(bob, "bob", `Q('#composer').hidden`, "true")
	w.waitHas(bob, "bob", `T('#composer-note')`, "Only the owner and admins post")
	w.typeInto(alice, "alice", "#composer-input", "breaking")
	w.click(alice, "alice", `Q('#send-button')`)
	w.waitJS(bob, "bob", `M('breaking').dataset.sender`, "alice")
	w.waitJS(bob, "bob", `!!M('breaking').querySelector('.act-reply')`, "false")

	// A private channel cannot be followed: to a non-member it is not
	// there, and the refusal shows its code.
	w.typeInto(alice, "alice", "#new-group-title", "Board")
	if err := chromedp.Run(alice, chromedp.SetValue("#new-group-kind", "private", chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	w.click(alice, "alice", `Q('#new-group-button')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "Board")
	board := w.str(alice, `Q('#conversation-title').title`)
	w.typeInto(bob, "bob", "#join-id", board)
	w.click(bob, "bob", `Q('#join-button')`)
	w.waitJS(bob, "bob", `Q('#toast').dataset.code`, "NOT_FOUND")
	w.waitHas(bob, "bob", `T('#toast-text')`, "[NOT_FOUND]")
	w.waitJS(bob, "bob", listEntry("Board", ".conv-title"), "")

	// A block: alice opens the direct chat and blocks bob.
	w.typeInto(alice, "alice", "#new-direct-input", "bob")
	w.click(alice, "alice", `Q('#new-direct-button')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "bob")
	w.waitJS(alice, "alice", `T('#conversation-sub')`, "Direct chat")
	w.click(alice, "alice", `Q('#block-button')`)
	w.waitJS(alice, "alice", `T('#block-button')`, "Unblock bob")
	w.waitHas(alice, "alice", `T('#composer-note')`, "You blocked bob")
	w.waitJS(bob, "bob", listEntry("alice", ".kind-tag"), "direct")
	w.openConv(bob, "bob", "alice")
	w.typeInto(bob, "bob", "#composer-input", "hello?")
	w.click(bob, "bob", `Q('#send-button')`)
	w.waitJS(bob, "bob", `Q('#outbox .message.failed').dataset.code`, "BLOCKED")
	w.waitHas(bob, "bob", `T('#outbox .message.failed .state')`, "[BLOCKED]")
	// A reload forgets what the page was told; listBlocks brings the
	// block back. The page's list is read from persistence, so the
	// reload waits until the block is stored there.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, err := w.p.Store().Blocks(context.Background(), "alice")
		if err == nil && strings.Join(b, ",") == "bob" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's block of bob not stored: %v, %v", b, err)
		}
	}
	if err := chromedp.Run(alice, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `T('#conversation-title')`, "bob")
	w.waitJS(alice, "alice", `T('#block-button')`, "Unblock bob")
	w.waitHas(alice, "alice", `T('#composer-note')`, "You blocked bob")
	w.click(alice, "alice", `Q('#block-button')`)
	w.waitJS(alice, "alice", `T('#block-button')`, "Block bob")
	w.click(bob, "bob", `Array.from(document.querySelectorAll('#outbox .message.failed button')).find(b => b.textContent === 'Retry')`)
	w.waitJS(alice, "alice", `M('hello?').dataset.sender`, "bob")
	w.waitJS(bob, "bob", `document.querySelectorAll('#outbox .message').length`, "0")

	// Previews: alice looks at the channel while bob sends an attachment
	// alone, then deletes it.
	w.openConv(alice, "alice", "News")
	w.click(bob, "bob", `Q('#attach-button')`)
	w.typeInto(bob, "bob", "#attach-url", "https://files.example/report.pdf")
	w.typeInto(bob, "bob", "#attach-type", "application/pdf")
	w.click(bob, "bob", `Q('#attach-add')`)
	w.click(bob, "bob", `Q('#send-button')`)
	w.waitJS(alice, "alice", listEntry("bob", ".conv-preview"), "📎 Attachment")
	w.waitJS(alice, "alice", listEntry("bob", ".unread"), "1")
	w.waitJS(bob, "bob", `Array.from(document.querySelectorAll('#messages .message.own')).pop().querySelector('.attachment a.att-name').textContent`, "report.pdf")
	w.click(bob, "bob", `Array.from(document.querySelectorAll('#messages .message.own')).pop().querySelector('.act-delete')`)
	w.click(bob, "bob", `Array.from(document.querySelectorAll('#messages .message.own')).pop().querySelector('.act-delete')`)
	w.waitJS(alice, "alice", listEntry("bob", ".conv-preview"), "Message deleted")
	w.waitJS(alice, "alice", `(Array.from(document.querySelectorAll('#conversation-list .conversation')).find(n => n.querySelector('.conv-title').textContent === 'bob')).querySelector('.conv-preview').dataset.kind`, "deleted")
}

// TestWebChatContactsAndInvitations drives the inbox through the page:
// alice asks bob to be her contact from the "New" panel; bob finds the
// request in his inbox and accepts it with its button, and alice's inbox
// says so; then alice creates a group joined by accepting, naming bob,
// who joins it from his inbox.
func TestWebChatContactsAndInvitations(t *testing.T) {
	w := startWeb(t, 4*time.Minute)
	alice, bob := w.tab("alice"), w.tab("bob")

	w.typeInto(alice, "alice", "#new-contact-input", "bob")
	w.click(alice, "alice", `Q('#new-contact-button')`)
	w.waitHas(alice, "alice", `T('#toast-text')`, "Asked bob: the request waits in their inbox.")

	w.waitJS(bob, "bob", listEntry("Inbox", ".kind-tag"), "inbox")
	w.openConv(bob, "bob", "Inbox")
	w.waitHas(bob, "bob", `T('#messages')`, "alice asks to be your contact")
	w.waitJS(bob, "bob", `Q('#composer').hidden`, "true")
	w.waitHas(bob, "bob", `T('#composer-note')`, "Your inbox")
	w.click(bob, "bob", `Q('#messages .inbox-accept')`)
	w.waitHas(bob, "bob", `T('#messages')`, "You and alice are contacts now")
	// Answered: the request's buttons are gone.
	w.waitJS(bob, "bob", `document.querySelectorAll('#messages .inbox-actions').length`, "0")
	// Also after a reload, which renders the request from history before
	// the answer that settles it.
	if err := chromedp.Run(bob, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	w.waitJS(bob, "bob", `T('#conversation-title')`, "Inbox")
	w.waitHas(bob, "bob", `T('#messages')`, "You and alice are contacts now")
	w.waitJS(bob, "bob", `document.querySelectorAll('#messages .system').length + ' ' + document.querySelectorAll('#messages .inbox-actions').length`, "3 0")
	w.openConv(alice, "alice", "Inbox")
	w.waitHas(alice, "alice", `T('#messages')`, "bob accepted: you are contacts now")

	w.typeInto(alice, "alice", "#new-group-title", "Club")
	w.typeInto(alice, "alice", "#new-group-members", "bob")
	if err := chromedp.Run(alice, chromedp.SetValue("#new-group-kind", "consent", chromedp.ByQuery, chromedp.NodeVisible)); err != nil {
		t.Fatal(err)
	}
	w.click(alice, "alice", `Q('#new-group-button')`)
	w.waitJS(alice, "alice", `T('#conversation-title')`, "Club")
	w.waitHas(alice, "alice", `T('#messages')`, "alice invited bob (they join by accepting)")
	w.waitHas(bob, "bob", `T('#messages')`, "alice invites you to “Club”")
	w.click(bob, "bob", `Q('#messages .inbox-accept')`)
	w.waitJS(bob, "bob", `T('#conversation-title')`, "Club")
	w.waitHas(alice, "alice", `T('#messages')`, "bob joined")
	w.typeInto(bob, "bob", "#composer-input", "thanks for the invite")
	w.click(bob, "bob", `Q('#send-button')`)
	w.waitJS(alice, "alice", `M('thanks for the invite').dataset.sender`, "bob")
}

// TestWebChatAnnouncements: a page whose token puts alice in region=eu
// lists that audience; a broadcast shows in it live, without a composer;
// after a reload it is still there, with what was broadcast meanwhile.
func TestWebChatAnnouncements(t *testing.T) {
	w := startWebWith(t, 4*time.Minute, platform.Config{BackendAddr: "127.0.0.1:0",
		BackendTokens: []edge.BackendToken{{Name: "test-app", Token: backendToken}}})
	alice := w.tab("alice")
	// The page keeps its token in sessionStorage: one with attributes
	// there, and a reload, sign it in as an app's login service would.
	m, err := auth.NewHS256(secret)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.MintWith("alice", time.Now(), time.Hour, map[string]string{"region": "eu"})
	if err != nil {
		t.Fatal(err)
	}
	var ok bool
	if err := w.eval(alice, `(sessionStorage.setItem('parley.token', `+jsq(tok)+`), true)`, &ok); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Run(alice, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", listEntry("Announcements · region=eu", ".kind-tag"), "announcements")

	cc, err := grpc.NewClient(w.p.Edge.BackendAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := backendv1.NewBackendServiceClient(cc)
	ctx := withToken(context.Background(), backendToken)
	if _, err := api.Broadcast(ctx, &backendv1.BroadcastRequest{Key: "region", Value: "eu", Text: "Maintenance at 22:00", ClientMsgId: "b-1"}); err != nil {
		t.Fatal(err)
	}
	w.openConv(alice, "alice", "Announcements · region=eu")
	w.waitHas(alice, "alice", `T('#messages')`, "Maintenance at 22:00")
	w.waitJS(alice, "alice", `Q('#composer').hidden`, "true")
	w.waitHas(alice, "alice", `T('#composer-note')`, "Announcements to everyone with region=eu")
	if _, err := api.Broadcast(ctx, &backendv1.BroadcastRequest{Key: "region", Value: "eu", Text: "Done", ClientMsgId: "b-2"}); err != nil {
		t.Fatal(err)
	}
	w.waitHas(alice, "alice", `T('#messages')`, "Done")
	// The reload reads the audience from history: wait until it is stored.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := w.p.Store().Conversation(context.Background(), membership.AudienceID("region=eu")); err == nil && c.GetLastSeq() == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second broadcast never stored")
		}
	}
	if err := chromedp.Run(alice, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	w.waitJS(alice, "alice", `T('#conversation-title')`, "Announcements · region=eu")
	w.waitHas(alice, "alice", `T('#messages')`, "Done")
}
