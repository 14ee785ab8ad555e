package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chzyer/readline"
	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

const chatHelp = `commands:
  /list                      your conversations
  /open N                    open conversation N of /list
  /to USER                   open the direct conversation with USER
  /group TITLE [USER...]     open your group TITLE, creating it with USERs
  /add USER                  add USER to the open group
  /history                   the last 20 events of the open conversation
  /contact USER              ask USER to be your contact
  /accept USER               accept USER's contact request (/decline USER)
  /contacts                  your contacts and requests
  /inbox                     requests and invitations sent to you
  /join N                    accept invitation N of /inbox (/refuse N)
  /contacts-only on|off      take direct chats from your contacts only
  /quit                      leave (or Ctrl-D)
anything else is sent to the open conversation`

func chatCmd(args []string) int {
	fs := flag.NewFlagSet("parley chat", flag.ExitOnError)
	url := fs.String("url", daemon.Env("PARLEY_URL", "ws://127.0.0.1:8080/ws"), "edge WebSocket endpoint (PARLEY_URL)")
	user := fs.String("user", "", "who you are")
	device := fs.String("device", "", "device id (random when empty)")
	to := fs.String("to", "", "open the direct conversation with this user")
	group := fs.String("group", "", "open (or create) the group with this title")
	with := fs.String("with", "", "members for a new -group, comma-separated")
	daemon.Parse(fs, args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	// The line editor keeps the line being typed below everything printed
	// through rl.Stdout(), and erases a line once it is entered: the
	// message comes back as its delivery, so it shows once, in the order
	// the server gave it.
	rl, err := readline.NewEx(&readline.Config{Prompt: "> ", UniqueEditLine: true, InterruptPrompt: "^C"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer rl.Close()
	ch, err := newChat(ctx, *url, *user, *device, rl.Stdout())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ch.c.Close()
	ch.onOpen = func(name string) { rl.SetPrompt(name + "> ") }
	switch {
	case *to != "":
		ch.command(ctx, "/to "+*to)
	case *group != "":
		ch.command(ctx, strings.TrimSpace("/group "+*group+" "+strings.ReplaceAll(*with, ",", " ")))
	default:
		ch.command(ctx, "/list")
	}
	ch.printf("type /help for commands\n")
	lines := make(chan string)
	go func() {
		defer close(lines)
		for {
			// Ctrl-C (readline.ErrInterrupt) and Ctrl-D (io.EOF) end it.
			line, err := rl.Readline()
			if err != nil {
				return
			}
			select {
			case lines <- line:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-ch.c.Done():
			fmt.Fprintln(os.Stderr, "connection closed:", ch.c.Err())
			return 1
		case line, ok := <-lines:
			if !ok || strings.TrimSpace(line) == "/quit" {
				return 0
			}
			ch.command(ctx, line)
		}
	}
}

// chat is the terminal client's state.
type chat struct {
	c   *sdk.Client
	me  string
	out io.Writer
	// onOpen, if set, is told the name of each conversation opened.
	onOpen func(name string)
	// outMu keeps lines whole: the event printer and commands both print.
	outMu sync.Mutex
	// mu guards open, list and names: the event printer reads them.
	mu    sync.Mutex
	open  string
	list  []*chatv1.Conversation
	names map[string]string
	// invites are the invitations /inbox listed, for /join and /refuse.
	invites []*chatv1.InvitationUpdated
	// inboxSeen is the highest seq of the inbox shown live, which /inbox
	// waits for history to reach.
	inboxSeen uint64
}

func newChat(ctx context.Context, url, user, device string, out io.Writer) (*chat, error) {
	tok, err := mint(user, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// A chat session outlives dropped connections: the SDK redials and
	// resumes by itself.
	c, err := sdk.Dial(dctx, sdk.Options{URL: url, Token: tok, DeviceID: device, Reconnect: &sdk.ReconnectPolicy{}})
	if err != nil {
		return nil, err
	}
	ch := &chat{c: c, me: c.UserID, out: out, names: map[string]string{}}
	// Names for what the printer shows of other conversations; one that
	// is not known yet is looked up when its first event comes.
	if list, err := c.Conversations(dctx, 200); err == nil {
		ch.remember(list)
	}
	go ch.printEvents()
	return ch, nil
}

func (ch *chat) printf(format string, args ...any) {
	ch.outMu.Lock()
	defer ch.outMu.Unlock()
	fmt.Fprintf(ch.out, format, args...)
}

func (ch *chat) printEvents() {
	for ev := range ch.c.Events() {
		conv := ev.GetConversationId()
		ch.mu.Lock()
		if name, ok := nameFromEvent(ev, ch.me); ok {
			ch.names[conv] = name
		}
		if conv == ch.c.InboxID {
			ch.inboxSeen = max(ch.inboxSeen, ev.GetSeq())
		}
		open, name, known := ch.open, ch.names[conv], ch.names[conv] != ""
		ch.mu.Unlock()
		if conv != open && !known {
			name = ch.lookup(conv)
		}
		ch.printf("%s\n", eventLine(ev, open, name, ch.me, time.Local))
	}
}

// inbox reads the inbox's history. History is a view that trails live
// delivery by a moment, so it asks again, for up to 2 seconds, until the
// page holds what was shown live.
func (ch *chat) inbox(ctx context.Context) (*clientv1.HistoryPage, error) {
	ch.mu.Lock()
	seen := ch.inboxSeen
	ch.mu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	for {
		page, err := ch.c.History(ctx, &clientv1.GetHistory{ConversationId: ch.c.InboxID, Limit: 200})
		var last uint64
		if evs := page.GetEvents(); len(evs) > 0 {
			last = evs[len(evs)-1].GetSeq()
		}
		notYet := seen > 0 && (isNotFound(err) || err == nil && last < seen)
		if !notYet || time.Now().After(deadline) {
			return page, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// isNotFound says whether err is the server's NOT_FOUND.
func isNotFound(err error) bool {
	we := (*wire.Error)(nil)
	return errors.As(err, &we) && we.Code == chatv1.ErrorCode_ERROR_CODE_NOT_FOUND
}

// lookup names a conversation the client has not seen yet (a group it
// was added to, say) from a fresh conversation list. The list is a view
// that trails live delivery by a moment, so it asks for up to 2 seconds.
func (ch *chat) lookup(conv string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		if list, err := ch.c.Conversations(ctx, 200); err == nil {
			ch.remember(list)
		}
		ch.mu.Lock()
		name := ch.names[conv]
		ch.mu.Unlock()
		if name != "" {
			return name
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (ch *chat) remember(list []*chatv1.Conversation) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, c := range list {
		ch.names[c.GetConversationId()] = title(c, ch.me)
	}
}

// eventLine is how the printer shows ev: events of conversations other
// than the open one are labelled with the conversation's name (name;
// its id's first 8 characters when no name is known).
func eventLine(ev *chatv1.Event, open, name, me string, loc *time.Location) string {
	line := describe(ev, me, loc)
	if conv := ev.GetConversationId(); conv != open {
		if name == "" {
			name = conv[:min(8, len(conv))]
		}
		line = "[" + name + "] " + line
	}
	return line
}

// describe renders one event for me, with its time in loc.
func describe(ev *chatv1.Event, me string, loc *time.Location) string {
	at := ev.GetTime().AsTime().In(loc).Format("15:04:05")
	who := ev.GetSenderId()
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MessagePosted:
		return fmt.Sprintf("%s %s: %s", at, who, b.MessagePosted.GetText())
	case *chatv1.Event_MemberAdded:
		return fmt.Sprintf("%s * %s added %s", at, who, b.MemberAdded.GetUserId())
	case *chatv1.Event_MemberRemoved:
		return fmt.Sprintf("%s * %s removed %s", at, who, b.MemberRemoved.GetUserId())
	case *chatv1.Event_MemberLeft:
		return fmt.Sprintf("%s * %s left", at, b.MemberLeft.GetUserId())
	case *chatv1.Event_MemberJoined:
		return fmt.Sprintf("%s * %s joined", at, b.MemberJoined.GetUserId())
	case *chatv1.Event_ConversationRenamed:
		return fmt.Sprintf("%s * %s renamed this conversation %q", at, who, b.ConversationRenamed.GetTitle())
	case *chatv1.Event_MessageEdited:
		return fmt.Sprintf("%s * %s edited message %d: %s", at, who, b.MessageEdited.GetTargetSeq(), b.MessageEdited.GetText())
	case *chatv1.Event_MessageDeleted:
		return fmt.Sprintf("%s * %s deleted message %d", at, who, b.MessageDeleted.GetTargetSeq())
	case *chatv1.Event_ConversationCreated:
		if b.ConversationCreated.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_INBOX {
			return fmt.Sprintf("%s * your inbox", at)
		}
		return fmt.Sprintf("%s * %s", at, created(who, b.ConversationCreated))
	case *chatv1.Event_MemberInvited:
		return fmt.Sprintf("%s * %s invited %s", at, who, b.MemberInvited.GetUserId())
	case *chatv1.Event_ContactUpdated:
		return fmt.Sprintf("%s * %s", at, contactLine(b.ContactUpdated))
	case *chatv1.Event_InvitationUpdated:
		return fmt.Sprintf("%s * %s", at, invitationLine(b.InvitationUpdated))
	case *chatv1.Event_SettingsChanged:
		if b.SettingsChanged.GetContactsOnly() {
			return fmt.Sprintf("%s * you take direct chats from your contacts only", at)
		}
		return fmt.Sprintf("%s * you take direct chats from anyone", at)
	}
	return fmt.Sprintf("%s * event %d", at, ev.GetSeq())
}

// contactLine describes an inbox item about a contact request, as its
// owner reads it.
func contactLine(u *chatv1.ContactUpdated) string {
	who := u.GetUserId()
	switch a := u.GetAction(); {
	case a == chatv1.ContactAction_CONTACT_ACTION_REQUESTED && u.GetOutgoing():
		return "you asked " + who + " to be your contact"
	case a == chatv1.ContactAction_CONTACT_ACTION_REQUESTED:
		return who + " asks to be your contact (/accept " + who + " or /decline " + who + ")"
	case a == chatv1.ContactAction_CONTACT_ACTION_ACCEPTED && u.GetOutgoing():
		return "you and " + who + " are contacts now"
	case a == chatv1.ContactAction_CONTACT_ACTION_ACCEPTED:
		return who + " accepted: you are contacts now"
	case a == chatv1.ContactAction_CONTACT_ACTION_DECLINED:
		return "you declined " + who + "'s request"
	case a == chatv1.ContactAction_CONTACT_ACTION_CANCELLED && u.GetOutgoing():
		return "you withdrew your request to " + who
	case a == chatv1.ContactAction_CONTACT_ACTION_CANCELLED:
		return who + " withdrew their request"
	case a == chatv1.ContactAction_CONTACT_ACTION_REMOVED && u.GetOutgoing():
		return "you removed " + who + " from your contacts"
	case a == chatv1.ContactAction_CONTACT_ACTION_REMOVED:
		return who + " removed you from their contacts"
	}
	return "contact " + who + ": " + u.GetState().String()
}

// invitationLine describes an inbox item about an invitation.
func invitationLine(u *chatv1.InvitationUpdated) string {
	switch u.GetAction() {
	case chatv1.InvitationAction_INVITATION_ACTION_INVITED:
		return fmt.Sprintf("%s invites you to %q (/inbox, then /join N)", u.GetInviterId(), u.GetTitle())
	case chatv1.InvitationAction_INVITATION_ACTION_ACCEPTED:
		return fmt.Sprintf("you joined %q", u.GetTitle())
	case chatv1.InvitationAction_INVITATION_ACTION_DECLINED:
		return fmt.Sprintf("you declined the invitation to %q", u.GetTitle())
	}
	return fmt.Sprintf("invitation to %q", u.GetTitle())
}

// pendingInvitations are the invitations of an inbox's events (in seq
// order) not answered since, oldest first.
func pendingInvitations(events []*chatv1.Event) []*chatv1.InvitationUpdated {
	var out []*chatv1.InvitationUpdated
	for _, ev := range events {
		u := ev.GetInvitationUpdated()
		if u == nil {
			continue
		}
		out = slices.DeleteFunc(out, func(p *chatv1.InvitationUpdated) bool { return p.GetConversationId() == u.GetConversationId() })
		if u.GetAction() == chatv1.InvitationAction_INVITATION_ACTION_INVITED {
			out = append(out, u)
		}
	}
	return out
}

// created describes a creation: memberIds holds the creator too, who is
// not among the people they started it with.
func created(creator string, cc *chatv1.ConversationCreated) string {
	var others []string
	for _, m := range cc.GetMemberIds() {
		if m != creator {
			others = append(others, m)
		}
	}
	with := ""
	if len(others) > 0 {
		with = " with " + strings.Join(others, ", ")
	}
	switch cc.GetKind() {
	case chatv1.ConversationKind_CONVERSATION_KIND_GROUP:
		return fmt.Sprintf("%s created the group %q%s", creator, cc.GetTitle(), with)
	case chatv1.ConversationKind_CONVERSATION_KIND_CHANNEL:
		return fmt.Sprintf("%s created the channel %q%s", creator, cc.GetTitle(), with)
	}
	return fmt.Sprintf("%s started this conversation%s", creator, with)
}

// nameFromEvent is the conversation's name for me when ev tells it: its
// creation (a title, or the other member of a direct conversation) or a
// rename.
func nameFromEvent(ev *chatv1.Event, me string) (string, bool) {
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_ConversationCreated:
		cc := b.ConversationCreated
		return title(&chatv1.Conversation{Kind: cc.GetKind(), Title: cc.GetTitle(), MemberIds: cc.GetMemberIds()}, me), true
	case *chatv1.Event_ConversationRenamed:
		return b.ConversationRenamed.GetTitle(), true
	}
	return "", false
}

// directNamespace and directID derive a direct conversation's id as
// docs/PROTOCOL.md ("Direct conversation ids") says: the client knows it
// before it sends createConversation, so it can show the conversation's
// header before the creation event arrives.
var directNamespace = uuid.MustParse("6f0e5bb4-6a42-4a50-9d0c-8f7b4b7d9a11")

func directID(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return uuid.NewSHA1(directNamespace, []byte(a+"\x00"+b)).String()
}

// setOpen makes conv the open conversation and prints its header; it
// returns the conversation open before, for undoing.
func (ch *chat) setOpen(conv, name string) (prevConv, prevName string) {
	ch.mu.Lock()
	prevConv, prevName = ch.open, ch.names[ch.open]
	ch.open = conv
	ch.names[conv] = name
	ch.mu.Unlock()
	ch.printf("-- %s --\n", name)
	if ch.onOpen != nil {
		ch.onOpen(name)
	}
	return prevConv, prevName
}

// restore goes back to the conversation open before a failed open.
func (ch *chat) restore(conv, name string) {
	ch.mu.Lock()
	ch.open = conv
	ch.mu.Unlock()
	if ch.onOpen != nil {
		ch.onOpen(name)
	}
}

func (ch *chat) command(ctx context.Context, line string) {
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := ch.do(rctx, strings.TrimSpace(line)); err != nil {
		ch.printf("! %v\n", err)
	}
}

func (ch *chat) do(ctx context.Context, line string) error {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return nil
	}
	ch.mu.Lock()
	open := ch.open
	ch.mu.Unlock()
	switch fields[0] {
	case "/help":
		ch.printf("%s\n", chatHelp)
	case "/list":
		list, err := ch.c.Conversations(ctx, 50)
		if err != nil {
			return err
		}
		ch.remember(list)
		ch.mu.Lock()
		ch.list = list
		ch.mu.Unlock()
		if len(list) == 0 {
			ch.printf("no conversations yet: /to USER or /group TITLE USER...\n")
		}
		for i, c := range list {
			ch.printf("%2d. %-24s %s\n", i+1, title(c, ch.me), c.GetLastMessagePreview())
		}
	case "/open":
		n, err := number(fields)
		if err != nil {
			return err
		}
		ch.mu.Lock()
		if n < 1 || n > len(ch.list) {
			ch.mu.Unlock()
			return fmt.Errorf("no conversation %d; /list shows them", n)
		}
		c := ch.list[n-1]
		ch.mu.Unlock()
		ch.setOpen(c.GetConversationId(), title(c, ch.me))
		return ch.history(ctx, c.GetConversationId())
	case "/to":
		if len(fields) != 2 {
			return fmt.Errorf("usage: /to USER")
		}
		// Open it before asking, so that its creation event, which may
		// come before the answer, prints under its header.
		conv := directID(ch.me, fields[1])
		prev, prevName := ch.setOpen(conv, fields[1])
		acc, err := ch.c.OpenDirect(ctx, fields[1])
		if err != nil {
			ch.restore(prev, prevName)
			return err
		}
		if acc.GetConversationId() != conv {
			ch.setOpen(acc.GetConversationId(), fields[1])
		}
		if acc.GetDuplicate() {
			return ch.history(ctx, acc.GetConversationId())
		}
	case "/group":
		if len(fields) < 2 {
			return fmt.Errorf("usage: /group TITLE [USER...]")
		}
		list, err := ch.c.Conversations(ctx, 200)
		if err != nil {
			return err
		}
		ch.remember(list)
		for _, c := range list {
			if c.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_GROUP && c.GetTitle() == fields[1] {
				ch.setOpen(c.GetConversationId(), c.GetTitle())
				return ch.history(ctx, c.GetConversationId())
			}
		}
		// The client picks the id, so the header can come first here too.
		conv := uuid.Must(uuid.NewV7()).String()
		prev, prevName := ch.setOpen(conv, fields[1])
		_, err = ch.c.Do(ctx, &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{
			ClientMsgId: sdk.NewClientMsgID(), Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: fields[1], MemberIds: fields[2:],
			ConversationId: conv,
		}}})
		if err != nil {
			ch.restore(prev, prevName)
			return err
		}
	case "/add":
		if open == "" || len(fields) != 2 {
			return fmt.Errorf("usage: /add USER, with a group open")
		}
		_, err := ch.c.AddMember(ctx, open, fields[1])
		return err
	case "/history":
		if open == "" {
			return fmt.Errorf("no conversation open")
		}
		return ch.history(ctx, open)
	case "/contact", "/accept", "/decline":
		if len(fields) != 2 {
			return fmt.Errorf("usage: %s USER", fields[0])
		}
		var st chatv1.ContactState
		var err error
		switch fields[0] {
		case "/contact":
			st, err = ch.c.RequestContact(ctx, fields[1])
		default:
			st, err = ch.c.RespondContact(ctx, fields[1], fields[0] == "/accept")
		}
		if err != nil {
			return err
		}
		ch.printf("%s: %s\n", fields[1], contactState(st))
	case "/contacts":
		list, err := ch.c.Contacts(ctx)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			ch.printf("no contacts yet: /contact USER\n")
		}
		for _, c := range list {
			ch.printf("  %-24s %s\n", c.GetUserId(), contactState(c.GetState()))
		}
	case "/inbox":
		page, err := ch.inbox(ctx)
		if err != nil {
			if isNotFound(err) {
				ch.printf("your inbox is empty\n")
				return nil
			}
			return err
		}
		for _, ev := range page.GetEvents() {
			if ev.GetConversationCreated() == nil {
				ch.printf("%s\n", describe(ev, ch.me, time.Local))
			}
		}
		invites := pendingInvitations(page.GetEvents())
		ch.mu.Lock()
		ch.invites = invites
		ch.mu.Unlock()
		for i, u := range invites {
			ch.printf("%2d. %s invites you to %q\n", i+1, u.GetInviterId(), u.GetTitle())
		}
	case "/contacts-only":
		if len(fields) != 2 || fields[1] != "on" && fields[1] != "off" {
			return fmt.Errorf("usage: /contacts-only on|off")
		}
		s, err := ch.c.SetContactsOnly(ctx, fields[1] == "on")
		if err != nil {
			return err
		}
		if s.GetContactsOnly() {
			ch.printf("only your contacts can start a chat with you now\n")
		} else {
			ch.printf("anyone can start a chat with you now\n")
		}
	case "/join", "/refuse":
		n, err := number(fields)
		if err != nil {
			return err
		}
		ch.mu.Lock()
		if n < 1 || n > len(ch.invites) {
			ch.mu.Unlock()
			return fmt.Errorf("no invitation %d; /inbox shows them", n)
		}
		u := ch.invites[n-1]
		ch.mu.Unlock()
		st, err := ch.c.RespondInvitation(ctx, u.GetConversationId(), fields[0] == "/join")
		if err != nil {
			return err
		}
		if !st.GetJoined() {
			ch.printf("declined %q\n", u.GetTitle())
			return nil
		}
		ch.setOpen(u.GetConversationId(), u.GetTitle())
		return ch.history(ctx, u.GetConversationId())
	default:
		if strings.HasPrefix(fields[0], "/") {
			return fmt.Errorf("unknown command %s; /help lists them", fields[0])
		}
		if open == "" {
			return fmt.Errorf("no conversation open: /to USER, /group TITLE or /open N")
		}
		_, err := ch.c.Send(ctx, open, line)
		return err
	}
	return nil
}

// number is the N of a command "/cmd N" (one of a listing).
func number(fields []string) (int, error) {
	var n int
	if len(fields) != 2 {
		return 0, fmt.Errorf("usage: %s N", fields[0])
	}
	if _, err := fmt.Sscan(fields[1], &n); err != nil {
		return 0, fmt.Errorf("usage: %s N", fields[0])
	}
	return n, nil
}

func (ch *chat) history(ctx context.Context, conv string) error {
	// Persistence may trail the log by a moment right after a create.
	var page *clientv1.HistoryPage
	var err error
	for range 20 {
		if page, err = ch.c.History(ctx, &clientv1.GetHistory{ConversationId: conv, Limit: 20}); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	for _, ev := range page.GetEvents() {
		ch.printf("%s\n", describe(ev, ch.me, time.Local))
	}
	return nil
}

// contactState is how the chat shows where a pair stands.
func contactState(st chatv1.ContactState) string {
	switch st {
	case chatv1.ContactState_CONTACT_STATE_OUTGOING:
		return "asked, waiting for an answer"
	case chatv1.ContactState_CONTACT_STATE_INCOMING:
		return "asks to be your contact"
	case chatv1.ContactState_CONTACT_STATE_CONTACT:
		return "contact"
	}
	return "not a contact"
}

// title names a conversation for user: the group's or channel's title,
// the other member of a direct conversation, or "inbox".
func title(c *chatv1.Conversation, user string) string {
	if c.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_INBOX {
		return "inbox"
	}
	if c.GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_DIRECT {
		return c.GetTitle()
	}
	for _, m := range c.GetMemberIds() {
		if m != user {
			return m
		}
	}
	return user
}
