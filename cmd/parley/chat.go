package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/daemon"

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
  /quit                      leave
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
	ch, err := newChat(ctx, *url, *user, *device, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ch.c.Close()
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
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
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
	out io.Writer
	// mu guards open, list and titles: the event printer reads them.
	mu     sync.Mutex
	open   string
	list   []*chatv1.Conversation
	titles map[string]string
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
	ch := &chat{c: c, out: out, titles: map[string]string{}}
	go ch.printEvents()
	return ch, nil
}

func (ch *chat) printf(format string, args ...any) { fmt.Fprintf(ch.out, format, args...) }

func (ch *chat) printEvents() {
	for ev := range ch.c.Events() {
		ch.mu.Lock()
		open, title := ch.open, ch.titles[ev.GetConversationId()]
		ch.mu.Unlock()
		prefix := ""
		if ev.GetConversationId() != open {
			if title == "" {
				title = ev.GetConversationId()[:8]
			}
			prefix = "[" + title + "] "
		}
		ch.printf("%s%s\n", prefix, describe(ev))
	}
}

func describe(ev *chatv1.Event) string {
	at := ev.GetTime().AsTime().Local().Format("15:04:05")
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MessagePosted:
		return fmt.Sprintf("%s %s: %s", at, ev.GetSenderId(), b.MessagePosted.GetText())
	case *chatv1.Event_MemberAdded:
		return fmt.Sprintf("%s * %s added %s", at, ev.GetSenderId(), b.MemberAdded.GetUserId())
	case *chatv1.Event_ConversationCreated:
		return fmt.Sprintf("%s * %s started this conversation with %s", at, ev.GetSenderId(), strings.Join(b.ConversationCreated.GetMemberIds(), ", "))
	}
	return fmt.Sprintf("%s * event %d", at, ev.GetSeq())
}

func (ch *chat) setOpen(conv, title string) {
	ch.mu.Lock()
	ch.open = conv
	ch.titles[conv] = title
	ch.mu.Unlock()
	ch.printf("-- %s --\n", title)
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
		ch.mu.Lock()
		ch.list = list
		for _, c := range list {
			ch.titles[c.GetConversationId()] = title(c, ch.c.UserID)
		}
		ch.mu.Unlock()
		if len(list) == 0 {
			ch.printf("no conversations yet: /to USER or /group TITLE USER...\n")
		}
		for i, c := range list {
			ch.printf("%2d. %-24s %s\n", i+1, title(c, ch.c.UserID), c.GetLastMessagePreview())
		}
	case "/open":
		var n int
		if len(fields) != 2 || func() bool { _, err := fmt.Sscan(fields[1], &n); return err != nil }() {
			return fmt.Errorf("usage: /open N")
		}
		ch.mu.Lock()
		if n < 1 || n > len(ch.list) {
			ch.mu.Unlock()
			return fmt.Errorf("no conversation %d; /list shows them", n)
		}
		c := ch.list[n-1]
		ch.mu.Unlock()
		ch.setOpen(c.GetConversationId(), title(c, ch.c.UserID))
		return ch.history(ctx, c.GetConversationId())
	case "/to":
		if len(fields) != 2 {
			return fmt.Errorf("usage: /to USER")
		}
		acc, err := ch.c.OpenDirect(ctx, fields[1])
		if err != nil {
			return err
		}
		ch.setOpen(acc.GetConversationId(), fields[1])
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
		for _, c := range list {
			if c.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_GROUP && c.GetTitle() == fields[1] {
				ch.setOpen(c.GetConversationId(), c.GetTitle())
				return ch.history(ctx, c.GetConversationId())
			}
		}
		acc, err := ch.c.CreateGroup(ctx, fields[1], fields[2:]...)
		if err != nil {
			return err
		}
		ch.setOpen(acc.GetConversationId(), fields[1])
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
		ch.printf("%s\n", describe(ev))
	}
	return nil
}

// title names a conversation for user: the group title, or the other
// member of a direct conversation.
func title(c *chatv1.Conversation, user string) string {
	if c.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_GROUP {
		return c.GetTitle()
	}
	for _, m := range c.GetMemberIds() {
		if m != user {
			return m
		}
	}
	return user
}
