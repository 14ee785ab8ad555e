package edge

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/membership"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

const (
	// membersTTL bounds how stale a cached membership may be: a member who
	// left may see someone typing, or see presence, for that long.
	membersTTL = 5 * time.Second
	// membersMax bounds each cache; it is dropped whole when full.
	membersMax = 10_000
	// coMembersScan is how many of a user's conversations, most recent
	// first, the presence rule looks at (history.MaxLimit).
	coMembersScan = 200
	// consentReads bounds the block lists one command reads at once.
	consentReads = 16
)

// access makes the authorisation decisions the edge takes itself. The
// sequencer decides every command and persistence checks membership on
// every read it serves; typing and presence reach neither, so they are
// decided here, from persistence's view of memberships read through short
// caches:
//
//   - only a member may type into a conversation, and only its other
//     members are sent the indicator (typingMembers);
//   - a user may see and watch the presence only of users they share a
//     conversation with (seePresence), and a watch is asked again before
//     each change it pushes (mayWatch);
//   - a user blocked by another sees them offline and is pushed none of
//     their changes (hideBlockers, mayWatch), and in a direct conversation
//     with a block either way no typing indicator is forwarded (typingTo);
//   - nobody may put into a group, by creating it or adding them, a user
//     who blocks them (consent): blocks are kept in the direct
//     conversation's aggregate, in another partition than the group's, so
//     the sequencer deciding the group cannot see them.
//
// A cache answers "yes" for at most membersTTL after a membership ended,
// less when the departure is pushed through this node (forget); a "no" is
// always read fresh, since the membership may be new. Block lists are
// cached as long for presence, and read fresh for consent.
type access struct {
	persistence persistencev1.PersistenceServiceClient
	// members is each conversation's member list.
	members ttlCache[[]string]
	// coMembers is, for each user, who shares a conversation with them
	// (themselves included).
	coMembers ttlCache[map[string]bool]
	// blocks is, for each user, the users they block.
	blocks ttlCache[[]string]
}

// typingMembers returns the conversation's members if user is one. A
// cached list that lacks the user is read again: they may just have
// joined. Persistence refuses a non-member with NotFound, as it does a
// conversation that does not exist.
func (a *access) typingMembers(ctx context.Context, user, conv string) ([]string, error) {
	now := time.Now()
	if members, ok := a.members.get(conv, now); ok && slices.Contains(members, user) {
		return members, nil
	}
	resp, err := a.persistence.Conversation(ctx, &persistencev1.ConversationRequest{UserId: user, ConversationId: conv})
	if err != nil {
		return nil, err
	}
	members := resp.GetConversation().GetMemberIds()
	a.members.put(conv, members, now)
	return members, nil
}

// seePresence refuses, with PermissionDenied, a user's request for the
// presence of users who share no conversation with them.
func (a *access) seePresence(ctx context.Context, user string, of []string) error {
	allowed, err := a.coMembersOf(ctx, user, false)
	if err != nil {
		return err
	}
	for _, u := range of {
		if !allowed[u] {
			// A conversation may have been made since the cache was filled:
			// a refusal is decided on a fresh read.
			if allowed, err = a.coMembersOf(ctx, user, true); err != nil {
				return err
			}
			break
		}
	}
	for _, u := range of {
		if !allowed[u] {
			// The same answer whether or not the user exists: presence is
			// private to the people one talks with.
			return status.Error(codes.PermissionDenied, fmt.Sprintf("you share no conversation with %q", u))
		}
	}
	return nil
}

// mayWatch reports whether watcher still shares a conversation with user
// and is not blocked by them. A watch outlives the membership that allowed
// it, and a block may come after it, so each change it pushes asks again;
// from the caches, as a "no" only withholds one change.
func (a *access) mayWatch(ctx context.Context, watcher, user string) (bool, error) {
	allowed, err := a.coMembersOf(ctx, watcher, false)
	if err != nil || !allowed[user] {
		return false, err
	}
	blocked, err := a.blocking(ctx, user, false)
	if err != nil {
		return false, err
	}
	return !slices.Contains(blocked, watcher), nil
}

// hideBlockers shows viewer every user in ps who blocks them as offline,
// with no last seen: what a user who never connected looks like, so that
// the block is not told by a refusal.
func (a *access) hideBlockers(ctx context.Context, viewer string, ps []*chatv1.Presence) ([]*chatv1.Presence, error) {
	out := make([]*chatv1.Presence, len(ps))
	for i, p := range ps {
		out[i] = p
		if p.GetUserId() == viewer {
			continue
		}
		blocked, err := a.blocking(ctx, p.GetUserId(), false)
		if err != nil {
			return nil, err
		}
		if slices.Contains(blocked, viewer) {
			out[i] = &chatv1.Presence{UserId: p.GetUserId(), State: chatv1.PresenceState_PRESENCE_STATE_OFFLINE}
		}
	}
	return out, nil
}

// typingTo is who is sent user's typing indicator in conv, of its other
// members: nobody in a direct conversation with a block either way, where
// neither may post either. A group's indicators go to every other
// member, as its messages do. Direct conversation ids are UUIDv5 (the
// pair's), groups' and channels' UUIDv7, so no read tells them apart.
func (a *access) typingTo(ctx context.Context, user, conv string, others []string) ([]string, error) {
	if id, err := uuid.Parse(conv); err != nil || id.Version() != 5 || len(others) != 1 {
		return others, nil
	}
	for _, pair := range [][2]string{{others[0], user}, {user, others[0]}} {
		blocked, err := a.blocking(ctx, pair[0], false)
		if err != nil {
			return nil, err
		}
		if slices.Contains(blocked, pair[1]) {
			return nil, nil
		}
	}
	return others, nil
}

// errNotConsented answers a command that would put into a group someone
// who blocks its sender. It names nobody and is the same whichever of the
// named users refused: the sender learns that someone they named will not
// be put in a group by them, which a direct conversation's BLOCKED tells
// them already, and not who.
var errNotConsented = errorFrame(chatv1.ErrorCode_ERROR_CODE_BLOCKED, "someone you named cannot be added by you", "")

// consent refuses a command that would put into a group a user who blocks
// its sender; the others go to the sequencer. Block lists are read fresh:
// a block is in persistence's view a moment after it is accepted, and a
// command in that moment is let through.
func consent[B any](users func(B) []string, next func(context.Context, *conn, B) *clientv1.ServerFrame) func(context.Context, *conn, B) *clientv1.ServerFrame {
	return func(ctx context.Context, c *conn, body B) *clientv1.ServerFrame {
		refused, err := c.svc.access.blockedBy(ctx, c.user, users(body))
		if err != nil {
			return failed(err)
		}
		if refused {
			out := proto.CloneOf(errNotConsented)
			out.GetError().ClientMsgId = clientMsgID(body)
			return out
		}
		return next(ctx, c, body)
	}
}

// groupMembers are the users a creation names, for a group or a channel;
// a direct conversation's block is the sequencer's to decide.
func groupMembers(b *clientv1.ClientFrame_CreateConversation) []string {
	if b.CreateConversation.GetKind() == chatv1.ConversationKind_CONVERSATION_KIND_DIRECT {
		return nil
	}
	return b.CreateConversation.GetMemberIds()
}

func addedMember(b *clientv1.ClientFrame_AddMember) []string {
	return []string{b.AddMember.GetUserId()}
}

// clientMsgID is the client message id of a command frame's body.
func clientMsgID(body any) string {
	switch b := body.(type) {
	case *clientv1.ClientFrame_CreateConversation:
		return b.CreateConversation.GetClientMsgId()
	case *clientv1.ClientFrame_AddMember:
		return b.AddMember.GetClientMsgId()
	}
	return ""
}

// blockedBy reports whether any of users (the sender aside) blocks
// sender, each read fresh. A list that ingest refuses anyway (more than
// membership.MaxCreateMembers, or an invalid id) is left to it unread, so
// that a client cannot make the edge read thousands of block lists.
func (a *access) blockedBy(ctx context.Context, sender string, users []string) (bool, error) {
	users = slices.DeleteFunc(slices.Clone(users), func(u string) bool { return u == sender })
	users = slices.Compact(slices.Sorted(slices.Values(users)))
	if len(users) == 0 || len(users)+1 > membership.MaxCreateMembers || slices.ContainsFunc(users, func(u string) bool { return !auth.ValidUserID(u) }) {
		return false, nil
	}
	var found atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(consentReads)
	for _, u := range users {
		g.Go(func() error {
			blocked, err := a.blocking(gctx, u, true)
			if err != nil {
				return err
			}
			if slices.Contains(blocked, sender) {
				found.Store(true)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return false, err
	}
	return found.Load(), nil
}

// blocking is the users user blocks, in byte order; from the cache unless
// fresh is set.
func (a *access) blocking(ctx context.Context, user string, fresh bool) ([]string, error) {
	now := time.Now()
	if ids, ok := a.blocks.get(user, now); ok && !fresh {
		return ids, nil
	}
	resp, err := a.persistence.Blocks(ctx, &persistencev1.BlocksRequest{UserId: user})
	if err != nil {
		return nil, err
	}
	a.blocks.put(user, resp.GetBlockedIds(), now)
	return resp.GetBlockedIds(), nil
}

// forget drops what is cached of a membership that ev ends: the
// conversation's member list, and who the users it is delivered to share
// conversations with. Else a removed member could type into the
// conversation, and see its members' presence, for as long as the caches
// keep them. Push calls it before the event is queued, so once a client
// has its removal, this node decides by persistence's view.
func (a *access) forget(ev *chatv1.Event, users []string) {
	if ev.GetMemberRemoved() == nil && ev.GetMemberLeft() == nil {
		return
	}
	a.members.drop(ev.GetConversationId())
	for _, u := range users {
		a.coMembers.drop(u)
	}
}

// coMembersOf is the set of users who share a conversation with user (user
// included), from their most recent conversations; from the cache unless
// fresh is set.
func (a *access) coMembersOf(ctx context.Context, user string, fresh bool) (map[string]bool, error) {
	now := time.Now()
	if users, ok := a.coMembers.get(user, now); ok && !fresh {
		return users, nil
	}
	resp, err := a.persistence.Conversations(ctx, &persistencev1.ConversationsRequest{UserId: user, Limit: coMembersScan})
	if err != nil {
		return nil, err
	}
	users := map[string]bool{user: true}
	for _, cv := range resp.GetConversations() {
		for _, m := range cv.GetMemberIds() {
			users[m] = true
		}
	}
	a.coMembers.put(user, users, now)
	return users, nil
}

// ttlCache keeps values for membersTTL; it is dropped whole once it holds
// membersMax of them, which bounds it without bookkeeping.
type ttlCache[V any] struct {
	// mu guards m; a leaf in the lock order (package doc).
	mu sync.Mutex
	m  map[string]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v  V
	at time.Time
}

// get returns the value of key if it is younger than membersTTL.
func (c *ttlCache[V]) get(key string, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.Sub(e.at) >= membersTTL {
		var zero V
		return zero, false
	}
	return e.v, true
}

// drop forgets key.
func (c *ttlCache[V]) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

func (c *ttlCache[V]) put(key string, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= membersMax {
		c.m = map[string]ttlEntry[V]{}
	}
	c.m[key] = ttlEntry[V]{v, now}
}

// contactsOnly reports whether user takes direct conversations from their
// contacts only (their inbox's summary; false without an inbox), read
// fresh.
func (a *access) contactsOnly(ctx context.Context, user string) (bool, error) {
	resp, err := a.persistence.Summaries(ctx, &persistencev1.SummariesRequest{UserId: user, ConversationIds: []string{membership.InboxID(user)}})
	if err != nil {
		return false, err
	}
	for _, c := range resp.GetConversations() {
		return c.GetContactsOnly(), nil
	}
	return false, nil
}
