package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/membership"
	"google.golang.org/grpc/metadata"

	backendv1 "github.com/parleychat/parley/pkg/pb/parley/backend/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// TestAudienceBroadcastOnTheStack (real stack, two edges, two presence
// instances): a broadcast to this run's region reaches the matching user
// online on edge1 live, the matching user who connects later on edge0 by
// resuming from the audience's start, each once, and neither the user of
// another region nor anyone else.
func TestAudienceBroadcastOnTheStack(t *testing.T) {
	s := requireStack(t)
	c := startClusterEdges(t, s, [2][]string{backendArgs(t), nil})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	api := backendClient(t, c)
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+backendToken)

	// A region of this run's own, so the stack's earlier runs do not
	// share the audience.
	region := fmt.Sprintf("r%d", time.Now().UnixNano())
	dial := func(edge int, user, device string, attrs map[string]string, resume ...*clientv1.Cursor) *sdk.Client {
		tok, err := c.minter.MintWith(user, time.Now(), time.Hour, attrs)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := sdk.Dial(ctx, sdk.Options{URL: c.edgeURLs[edge], Token: tok, DeviceID: device, Resume: resume})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	aud := membership.AudienceID("region=" + region)
	alice := dial(1, "alice-"+region, "a1", map[string]string{"region": region})
	bob := dial(1, "bob-"+region, "b1", map[string]string{"region": region + "x"})

	for i, text := range []string{"first", "second"} {
		resp, err := api.Broadcast(authed, &backendv1.BroadcastRequest{Key: "region", Value: region, Text: text, ClientMsgId: fmt.Sprint("b-", i)})
		if err != nil || resp.GetConversationId() != aud {
			t.Fatalf("broadcast %s: %v, %v", text, resp, err)
		}
	}
	// alice, online on the other edge, gets both live, once each.
	seen := map[uint64]int{}
	for deadline := time.After(30 * time.Second); seen[3] == 0; {
		select {
		case ev := <-alice.Events():
			if ev.GetConversationId() == aud {
				seen[ev.GetSeq()]++
			}
		case <-deadline:
			t.Fatalf("alice got %v of the audience after 30s", seen)
		}
	}
	if seen[1] != 1 || seen[2] != 1 || seen[3] != 1 {
		t.Fatalf("alice got the audience's seqs %v, want 1, 2 and 3 once each", seen)
	}
	// carol connects later and resumes from the start, once history
	// holds the broadcasts (a resume of history that lags the log past
	// the edge's wait is reported failed, and a cold stack's first writes
	// can lag that much).
	catchUp(t, ctx, alice, aud, 0, 3)
	// carol connects later and resumes from the start.
	carol := dial(0, "carol-"+region, "c1", map[string]string{"region": region}, &clientv1.Cursor{ConversationId: aud})
	got := map[uint64]string{}
	for deadline := time.After(30 * time.Second); len(got) < 3; {
		select {
		case ev := <-carol.Events():
			if ev.GetConversationId() == aud {
				if _, dup := got[ev.GetSeq()]; dup {
					t.Fatalf("carol got seq %d twice", ev.GetSeq())
				}
				got[ev.GetSeq()] = ev.GetMessagePosted().GetText()
			}
		case <-deadline:
			t.Fatalf("carol resumed %v after 30s", got)
		}
	}
	if got[2] != "first" || got[3] != "second" {
		t.Fatalf("carol resumed %v", got)
	}
	select {
	case ev := <-bob.Events():
		t.Fatalf("bob, of another region, got %v", ev)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := bob.History(ctx, &clientv1.GetHistory{ConversationId: aud}); err == nil {
		t.Fatal("bob reads an audience he is not in")
	}
}
