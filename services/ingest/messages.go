package ingest

import (
	"fmt"
	"mime"
	"net/mail"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/parleychat/parley/pkg/server/auth"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Limits on rich messages. They keep one message, with everything it may
// carry, well under the 64 KiB client frame.
const (
	MaxAttachments  = 10
	MaxMentions     = 50
	MaxLinks        = 50
	MaxURLBytes     = 2048
	MaxNameBytes    = 255
	MaxContentType  = 255
	MaxEmojiBytes   = 32
	MaxContactField = 256
	// MaxAttachmentBytes bounds an attachment's declared size_bytes (the
	// bytes live elsewhere; the bound keeps the number honest for the
	// apps that show it or plan a download by it).
	MaxAttachmentBytes = 1 << 40
	// MaxAttachmentPixels bounds an attachment's width and height.
	MaxAttachmentPixels = 1 << 16
	maxReactionsPerMsg  = 100 // distinct emoji on one message
)

// message is what the sequencer remembers of a posted message: enough to
// decide edits (author), deletes (author, or a moderator), reactions and
// replies (exists, not deleted).
type message struct {
	author  string
	deleted bool
	emoji   map[string]int // distinct emoji -> how many users have it
}

// reactionKey is one user's reaction with one emoji on one message.
type reactionKey struct {
	seq   uint64
	emoji string
	user  string
}

// canModerate reports whether user may delete other members' messages:
// the owner and the admins of a group or channel. A direct conversation
// has no moderator.
func canModerate(c *conversation, user string) bool {
	return c.role(user) >= chatv1.MemberRole_MEMBER_ROLE_ADMIN
}

// validText checks text that may be empty (a message with attachments or a
// contact needs none).
func validText(t string) (chatv1.ErrorCode, string) {
	if len(t) > MaxTextBytes || !utf8.ValidString(t) {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, fmt.Sprintf("text must be at most %d bytes of UTF-8", MaxTextBytes)
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// printable reports whether s is valid UTF-8 without control characters,
// which is what every short display string must be.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

// validMentions checks the shape of a mention list and drops repeats, so
// that the event names each user once.
func validMentions(ids []string) ([]string, chatv1.ErrorCode, string) {
	if len(ids) > MaxMentions {
		return nil, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, fmt.Sprintf("at most %d mentions", MaxMentions)
	}
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if !auth.ValidUserID(id) {
			return nil, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, fmt.Sprintf("invalid mentioned user id %q", id)
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// validHTTPURL parses an attachment URL: absolute, http or https, with a
// host, bounded. The object store behind it is not Parley's, so nothing is
// fetched.
func validHTTPURL(raw string) error {
	if raw == "" {
		return fmt.Errorf("url is required")
	}
	if len(raw) > MaxURLBytes {
		return fmt.Errorf("url is longer than %d bytes", MaxURLBytes)
	}
	if !printable(raw) || strings.ContainsAny(raw, " \t") {
		return fmt.Errorf("url has spaces or control characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url does not parse: %w", err)
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return fmt.Errorf("url scheme %q is not http or https", u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("url has no host")
	}
	return nil
}

// preparePost checks a message's shape: something to show, bounded text,
// well-formed attachments and contact card, valid mentions. What needs the
// conversation (reply target, mentions being members) the sequencer checks.
func preparePost(p *logv1.PostMessage) (chatv1.ErrorCode, string) {
	invalid := chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	if code, msg := validText(p.GetText()); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return code, msg
	}
	hasText := strings.TrimSpace(p.GetText()) != ""
	if !hasText && len(p.GetAttachments()) == 0 && p.GetContact() == nil {
		return invalid, "text is empty"
	}
	if n := len(p.GetAttachments()); n > MaxAttachments {
		return invalid, fmt.Sprintf("%d attachments, at most %d", n, MaxAttachments)
	}
	if p.GetContact() != nil && len(p.GetAttachments()) > 0 {
		return invalid, "a contact card cannot go with attachments"
	}
	for i, a := range p.GetAttachments() {
		if _, known := chatv1.AttachmentKind_name[int32(a.GetKind())]; !known || a.GetKind() == chatv1.AttachmentKind_ATTACHMENT_KIND_UNSPECIFIED {
			return invalid, fmt.Sprintf("attachment %d: unknown kind %d", i, a.GetKind())
		}
		if err := validHTTPURL(a.GetUrl()); err != nil {
			return chatv1.ErrorCode_ERROR_CODE_INVALID_URL, fmt.Sprintf("attachment %d: %v", i, err)
		}
		if ct := a.GetContentType(); ct != "" {
			if len(ct) > MaxContentType {
				return invalid, fmt.Sprintf("attachment %d: content type longer than %d bytes", i, MaxContentType)
			}
			if _, _, err := mime.ParseMediaType(ct); err != nil {
				return invalid, fmt.Sprintf("attachment %d: content type %q: %v", i, ct, err)
			}
		}
		if a.GetSizeBytes() > MaxAttachmentBytes {
			return invalid, fmt.Sprintf("attachment %d: size_bytes above %d", i, uint64(MaxAttachmentBytes))
		}
		if a.GetWidth() > MaxAttachmentPixels || a.GetHeight() > MaxAttachmentPixels {
			return invalid, fmt.Sprintf("attachment %d: width and height must be at most %d", i, MaxAttachmentPixels)
		}
		if n := a.GetName(); len(n) > MaxNameBytes || !printable(n) {
			return invalid, fmt.Sprintf("attachment %d: name must be at most %d bytes of printable UTF-8", i, MaxNameBytes)
		}
	}
	if c := p.GetContact(); c != nil {
		if strings.TrimSpace(c.GetDisplayName()) == "" {
			return invalid, "contact: display_name is required"
		}
		for _, f := range []string{c.GetDisplayName(), c.GetPhone(), c.GetEmail()} {
			if len(f) > MaxContactField || !printable(f) {
				return invalid, fmt.Sprintf("contact: fields must be at most %d bytes of printable UTF-8", MaxContactField)
			}
		}
		if c.GetUserId() != "" && !auth.ValidUserID(c.GetUserId()) {
			return invalid, "contact: invalid user id"
		}
		if c.GetEmail() != "" {
			if _, err := mail.ParseAddress(c.GetEmail()); err != nil {
				return invalid, fmt.Sprintf("contact: email: %v", err)
			}
		}
	}
	ms, code, msg := validMentions(p.GetMentionIds())
	if code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return code, msg
	}
	p.MentionIds = ms
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

func prepareEdit(e *logv1.EditMessage) (chatv1.ErrorCode, string) {
	invalid := chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	if e.GetTargetSeq() == 0 {
		return invalid, "target_seq is required"
	}
	if strings.TrimSpace(e.GetText()) == "" {
		// Emptying a message is what delete is for.
		return invalid, "text is empty"
	}
	if code, msg := validText(e.GetText()); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return code, msg
	}
	ms, code, msg := validMentions(e.GetMentionIds())
	if code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return code, msg
	}
	e.MentionIds = ms
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// validEmoji accepts any short printable token without spaces: real emoji
// (which may be several code points joined) and an app's own short codes
// alike. Parley does not keep an emoji table, which would age with every
// Unicode release.
func validEmoji(e string) error {
	switch {
	case e == "":
		return fmt.Errorf("emoji is required")
	case len(e) > MaxEmojiBytes:
		return fmt.Errorf("emoji is longer than %d bytes", MaxEmojiBytes)
	case !printable(e) || strings.ContainsFunc(e, unicode.IsSpace):
		return fmt.Errorf("emoji must be printable UTF-8 without spaces")
	}
	return nil
}

func prepareReact(r *logv1.React) (chatv1.ErrorCode, string) {
	if r.GetTargetSeq() == 0 {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "target_seq is required"
	}
	if err := validEmoji(r.GetEmoji()); err != nil {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, err.Error()
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// target finds the message a command is about, or says why it cannot be
// touched.
func (c *conversation) target(seq uint64) (*message, chatv1.ErrorCode, string) {
	m := c.messages[seq]
	if m == nil {
		return nil, chatv1.ErrorCode_ERROR_CODE_MESSAGE_NOT_FOUND, fmt.Sprintf("seq %d is not a message of this conversation", seq)
	}
	if m.deleted {
		return nil, chatv1.ErrorCode_ERROR_CODE_MESSAGE_DELETED, fmt.Sprintf("message %d was deleted", seq)
	}
	return m, chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// checkMentions requires every mentioned user to be a member: a mention
// notifies, and notifying an outsider would tell them about a conversation
// they cannot read.
func (c *conversation) checkMentions(ids []string) (chatv1.ErrorCode, string) {
	for _, id := range ids {
		if !c.isMember(id) {
			return chatv1.ErrorCode_ERROR_CODE_MENTION_NOT_MEMBER, fmt.Sprintf("mentioned user %s is not a member", id)
		}
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// prepareMessage checks the message commands.
func prepareMessage(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	invalid := chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	switch b := cmd.GetBody().(type) {
	case *logv1.Command_PostMessage:
		if code, msg := preparePost(b.PostMessage); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			return code, msg
		}
	case *logv1.Command_EditMessage:
		if code, msg := prepareEdit(b.EditMessage); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			return code, msg
		}
	case *logv1.Command_DeleteMessage:
		if b.DeleteMessage.GetTargetSeq() == 0 {
			return invalid, "target_seq is required"
		}
	case *logv1.Command_React:
		if code, msg := prepareReact(b.React); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			return code, msg
		}
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}

// decideMessage decides posting, editing, deleting and reacting.
func decideMessage(c *conversation, cmd *logv1.Command, ev *chatv1.Event) verdict {
	// The application posting as itself (the backend API) answers to no
	// membership, role or block; the conversation must exist.
	system := cmd.GetPostMessage().GetSystem()
	if !c.exists() || (!system && !c.isMember(cmd.GetUserId())) {
		return notFound
	}
	if c.kind() == chatv1.ConversationKind_CONVERSATION_KIND_INBOX {
		return refuse(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "only Parley writes to an inbox")
	}
	switch cmd.GetBody().(type) {
	case *logv1.Command_PostMessage, *logv1.Command_EditMessage:
		if system {
			break
		}
		// Editing puts words in the conversation as posting does:
		// followers of a channel, muted members and a blocked pair may do
		// neither. Reacting and deleting one's own are left to them.
		if code, msg := c.mayPost(cmd.GetUserId()); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			return refuse(code, msg)
		}
	}
	seq, noop, code, msg := decideMessageBody(c, cmd, ev)
	switch {
	case code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED:
		return refuse(code, msg)
	case noop:
		// A reaction already there, or one to remove that is not.
		return verdict{noop: true, seq: seq}
	}
	return verdict{}
}

// decideMessage decides the message commands against an existing
// conversation of which the user is a member: it sets ev's body, or
// returns an error code, or noop (with the seq that holds the state) when
// the command would change nothing.
func decideMessageBody(c *conversation, cmd *logv1.Command, ev *chatv1.Event) (noopSeq uint64, noop bool, code chatv1.ErrorCode, msg string) {
	ok := chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	user := cmd.GetUserId()
	switch b := cmd.GetBody().(type) {
	case *logv1.Command_PostMessage:
		p := b.PostMessage
		if r := p.GetReplyToSeq(); r != 0 {
			if _, code, msg := c.target(r); code != ok {
				return 0, false, code, "reply: " + msg
			}
		}
		if code, msg := c.checkMentions(p.GetMentionIds()); code != ok {
			return 0, false, code, msg
		}
		ev.Body = &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{
			Text: p.GetText(), Attachments: p.GetAttachments(), Contact: p.GetContact(),
			ReplyToSeq: p.GetReplyToSeq(), MentionIds: p.GetMentionIds(), Links: FindLinks(p.GetText()),
			System: p.GetSystem(),
		}}
		return 0, false, ok, ""
	case *logv1.Command_EditMessage:
		e := b.EditMessage
		m, code, msg := c.target(e.GetTargetSeq())
		if code != ok {
			return 0, false, code, msg
		}
		if m.author != user {
			return 0, false, chatv1.ErrorCode_ERROR_CODE_NOT_AUTHOR, "only the author may edit a message"
		}
		if code, msg := c.checkMentions(e.GetMentionIds()); code != ok {
			return 0, false, code, msg
		}
		ev.Body = &chatv1.Event_MessageEdited{MessageEdited: &chatv1.MessageEdited{
			TargetSeq: e.GetTargetSeq(), Text: e.GetText(), Links: FindLinks(e.GetText()),
			MentionIds: e.GetMentionIds(), Latest: e.GetTargetSeq() == c.lastMessage,
		}}
		return 0, false, ok, ""
	case *logv1.Command_DeleteMessage:
		d := b.DeleteMessage
		m, code, msg := c.target(d.GetTargetSeq())
		if code != ok {
			return 0, false, code, msg
		}
		if m.author != user && !canModerate(c, user) {
			return 0, false, chatv1.ErrorCode_ERROR_CODE_NOT_AUTHOR, "only the author or a moderator may delete a message"
		}
		ev.Body = &chatv1.Event_MessageDeleted{MessageDeleted: &chatv1.MessageDeleted{
			TargetSeq: d.GetTargetSeq(), Latest: d.GetTargetSeq() == c.lastMessage,
		}}
		return 0, false, ok, ""
	case *logv1.Command_React:
		r := b.React
		m, code, msg := c.target(r.GetTargetSeq())
		if code != ok {
			return 0, false, code, msg
		}
		k := reactionKey{r.GetTargetSeq(), r.GetEmoji(), user}
		held, has := c.reactions[k]
		if r.GetRemove() {
			if !has {
				return 0, true, ok, ""
			}
			ev.Body = &chatv1.Event_ReactionRemoved{ReactionRemoved: &chatv1.ReactionRemoved{TargetSeq: k.seq, Emoji: k.emoji}}
			return 0, false, ok, ""
		}
		if has {
			return held, true, ok, ""
		}
		if _, known := m.emoji[k.emoji]; !known && len(m.emoji) >= maxReactionsPerMsg {
			return 0, false, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, fmt.Sprintf("a message holds at most %d different reactions", maxReactionsPerMsg)
		}
		ev.Body = &chatv1.Event_ReactionAdded{ReactionAdded: &chatv1.ReactionAdded{TargetSeq: k.seq, Emoji: k.emoji}}
		return 0, false, ok, ""
	}
	return 0, false, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "command has no known body"
}

// fold applies a message event to the aggregate. decide and replay both
// call it, so the live aggregate and the rebuilt one agree.
func (c *conversation) fold(ev *chatv1.Event) {
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MessagePosted:
		author := ev.GetSenderId()
		if b.MessagePosted.GetSystem() {
			// No member wrote it, so none edits it as its author (a
			// member named like the application's sender included); a
			// moderator may still delete it.
			author = ""
		}
		c.messages[ev.GetSeq()] = &message{author: author}
		c.lastMessage = ev.GetSeq()
	case *chatv1.Event_MessageDeleted:
		if m := c.messages[b.MessageDeleted.GetTargetSeq()]; m != nil {
			m.deleted = true
		}
	case *chatv1.Event_ReactionAdded:
		k := reactionKey{b.ReactionAdded.GetTargetSeq(), b.ReactionAdded.GetEmoji(), ev.GetSenderId()}
		m := c.messages[k.seq]
		if _, has := c.reactions[k]; has || m == nil {
			return
		}
		c.reactions[k] = ev.GetSeq()
		if m.emoji == nil {
			m.emoji = map[string]int{}
		}
		m.emoji[k.emoji]++
	case *chatv1.Event_ReactionRemoved:
		k := reactionKey{b.ReactionRemoved.GetTargetSeq(), b.ReactionRemoved.GetEmoji(), ev.GetSenderId()}
		if _, has := c.reactions[k]; !has {
			return
		}
		delete(c.reactions, k)
		if m := c.messages[k.seq]; m != nil {
			if m.emoji[k.emoji]--; m.emoji[k.emoji] <= 0 {
				delete(m.emoji, k.emoji)
			}
		}
	}
}

// FindLinks returns the http and https URLs in text as byte spans, in
// order, at most MaxLinks. It is deterministic (the sequencer runs it, and
// a replay must agree) and conservative: a candidate starts at "http://"
// or "https://" (any case) not preceded by a letter, digit or '/', runs to
// the next space, control character or one of <>"`, loses trailing
// punctuation that usually ends a sentence (and a ')' without its '('),
// and counts only if net/url parses it with a host.
func FindLinks(text string) []*chatv1.LinkSpan {
	var out []*chatv1.LinkSpan
	for start := 0; start < len(text) && len(out) < MaxLinks; start++ {
		// Byte by byte: 'h' is ASCII, so it never sits inside a multi-byte
		// rune, and offsets stay those of text (strings.ToLower would not
		// keep them).
		if c := text[start]; c != 'h' && c != 'H' {
			continue
		}
		if !hasPrefixFold(text[start:], "http://") && !hasPrefixFold(text[start:], "https://") {
			continue
		}
		if start > 0 {
			if r, _ := utf8.DecodeLastRuneInString(text[:start]); unicode.IsLetter(r) || unicode.IsDigit(r) || r == '/' {
				continue
			}
		}
		end := start
		for end < len(text) {
			r, n := utf8.DecodeRuneInString(text[end:])
			if r == utf8.RuneError || unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("<>\"`", r) {
				break
			}
			end += n
		}
		end = trimLinkEnd(text, start, end)
		if end-start > MaxURLBytes {
			start = end - 1
			continue
		}
		if u, err := url.Parse(text[start:end]); err == nil && u.Hostname() != "" {
			out = append(out, &chatv1.LinkSpan{Start: uint32(start), End: uint32(end), Url: u.String()})
		}
		start = end - 1
	}
	return out
}

// hasPrefixFold is strings.HasPrefix ignoring ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// trimLinkEnd drops trailing sentence punctuation, and closing brackets
// that have no opening one inside the link (so "(see https://x.y/a)"
// stops before the ')', while "https://x.y/wiki/A_(b)" keeps it).
func trimLinkEnd(text string, start, end int) int {
	for end > start {
		last := text[end-1]
		switch last {
		case '.', ',', ';', ':', '!', '?', '\'', '*':
			end--
			continue
		case ')', ']', '}':
			open := map[byte]byte{')': '(', ']': '[', '}': '{'}[last]
			if strings.Count(text[start:end], string(open)) < strings.Count(text[start:end], string(last)) {
				end--
				continue
			}
		}
		return end
	}
	return end
}
