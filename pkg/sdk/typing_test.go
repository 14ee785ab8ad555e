package sdk

import (
	"fmt"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

func TestTypingTrackerExpires(t *testing.T) {
	now := time.Unix(1000, 0)
	tr := NewTypingTracker(func() time.Time { return now })
	ind := func(user string, stopped bool) *chatv1.Typing {
		return &chatv1.Typing{ConversationId: "g", UserId: user, Stopped: stopped, ExpiresInMs: 6000}
	}
	tr.Apply(ind("bob", false))
	tr.Apply(ind("carol", false))
	if got := fmt.Sprint(tr.Typing("g")); got != "[bob carol]" {
		t.Fatalf("typing %s", got)
	}
	now = now.Add(4 * time.Second)
	tr.Apply(ind("bob", false))  // renewed
	tr.Apply(ind("carol", true)) // stopped: gone at once
	if got := fmt.Sprint(tr.Typing("g")); got != "[bob]" {
		t.Fatalf("after carol stopped: %s", got)
	}
	now = now.Add(5 * time.Second) // 9 s after bob's first, 5 after his renewal
	if got := fmt.Sprint(tr.Typing("g")); got != "[bob]" {
		t.Fatalf("renewed indicator expired early: %s", got)
	}
	now = now.Add(1 * time.Second)
	if got := tr.Typing("g"); len(got) != 0 {
		t.Fatalf("indicator outlived its expiry: %v", got)
	}
}
