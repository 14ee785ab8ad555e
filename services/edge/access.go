package edge

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
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
//     each change it pushes (mayWatch).
//
// A cache answers "yes" for at most membersTTL after a membership ended,
// less when the departure is pushed through this node (forget); a "no" is
// always read fresh, since the membership may be new.
type access struct {
	persistence persistencev1.PersistenceServiceClient
	// members is each conversation's member list.
	members ttlCache[[]string]
	// coMembers is, for each user, who shares a conversation with them
	// (themselves included).
	coMembers ttlCache[map[string]bool]
}

// typingMembers returns the conversation's members if user is one. A
// cached list that lacks the user is read again: they may just have
// joined. Persistence refuses a non-member with PermissionDenied.
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

// mayWatch reports whether watcher still shares a conversation with user.
// A watch outlives the membership that allowed it, so each change it
// pushes asks again; from the cache, as a "no" only withholds one change.
func (a *access) mayWatch(ctx context.Context, watcher, user string) (bool, error) {
	allowed, err := a.coMembersOf(ctx, watcher, false)
	if err != nil {
		return false, err
	}
	return allowed[user], nil
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
