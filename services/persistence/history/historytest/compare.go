package historytest

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// Compare checks that two stores show the same to each of users: their
// conversation list (every entry, with its preview, unread count and
// flags, in order), and for every conversation listed its summary, its
// whole history paged forward as that user reads it (messages as they
// are now, reactions with the user's own) and its receipts; whom each
// user blocks; and each user's contact list. It returns
// nil when they agree, else an error naming the first difference with a
// diff of the two renderings. Lists longer than history.MaxLimit are
// compared up to it.
//
// It is how tests check that replaying the event log into an empty store
// reproduces the views (want: the store the live consumer wrote; got: the
// rebuilt one), on any backend.
func Compare(ctx context.Context, want, got history.Store, users []string) error {
	for _, u := range users {
		wc, werr := want.Contacts(ctx, u)
		gc, gerr := got.Contacts(ctx, u)
		if err := errors.Join(werr, gerr); err != nil {
			return fmt.Errorf("contacts of %s: %w", u, err)
		}
		if err := sameList(fmt.Sprintf("%s's contacts", u), wc, gc); err != nil {
			return err
		}
		wl, err := want.Conversations(ctx, u, history.ListQuery{Limit: history.MaxLimit})
		if err != nil {
			return fmt.Errorf("list %s's conversations in the first store: %w", u, err)
		}
		gl, err := got.Conversations(ctx, u, history.ListQuery{Limit: history.MaxLimit})
		if err != nil {
			return fmt.Errorf("list %s's conversations in the second store: %w", u, err)
		}
		if err := sameList(fmt.Sprintf("%s's conversation list", u), wl, gl); err != nil {
			return err
		}
		wb, werr := want.Blocks(ctx, u)
		gb, gerr := got.Blocks(ctx, u)
		if err := errors.Join(werr, gerr); err != nil {
			return fmt.Errorf("blocks of %s: %w", u, err)
		}
		if w, g := strings.Join(wb, "\n"), strings.Join(gb, "\n"); w != g {
			return fmt.Errorf("%s's blocks differ:\n want %q\n got  %q", u, wb, gb)
		}
		for _, c := range wl {
			conv := c.GetConversationId()
			if err := sameHistory(ctx, want, got, conv, u); err != nil {
				return err
			}
			ws, werr := want.Conversation(ctx, conv)
			gs, gerr := got.Conversation(ctx, conv)
			if err := errors.Join(werr, gerr); err != nil {
				return fmt.Errorf("summary of %s: %w", conv, err)
			}
			if err := same("summary of "+conv, ws, gs); err != nil {
				return err
			}
			wr, werr := want.Receipts(ctx, conv)
			gr, gerr := got.Receipts(ctx, conv)
			if err := errors.Join(werr, gerr); err != nil {
				return fmt.Errorf("receipts of %s: %w", conv, err)
			}
			if err := sameList("receipts of "+conv, wr, gr); err != nil {
				return err
			}
		}
	}
	return nil
}

// sameHistory pages conv forward in both stores, 50 events at a time, as
// user reads it.
func sameHistory(ctx context.Context, want, got history.Store, conv, user string) error {
	q := history.Query{Forward: true, Limit: 50, Viewer: user}
	for page := 1; ; page++ {
		wp, werr := want.History(ctx, conv, q)
		gp, gerr := got.History(ctx, conv, q)
		if err := errors.Join(werr, gerr); err != nil {
			return fmt.Errorf("history of %s after seq %d for %s: %w", conv, q.AfterSeq, user, err)
		}
		what := fmt.Sprintf("history of %s for %s, page %d (after seq %d)", conv, user, page, q.AfterSeq)
		if err := sameList(what, wp.Events, gp.Events); err != nil {
			return err
		}
		if wp.HasMore != gp.HasMore {
			return fmt.Errorf("%s: has_more %v, rebuilt %v", what, wp.HasMore, gp.HasMore)
		}
		if !wp.HasMore || len(wp.Events) == 0 {
			return nil
		}
		q.AfterSeq = wp.Events[len(wp.Events)-1].GetSeq()
	}
}

func sameList[M proto.Message](what string, want, got []M) error {
	for i := range max(len(want), len(got)) {
		var w, g proto.Message
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if err := same(fmt.Sprintf("%s, entry %d of %d/%d", what, i, len(want), len(got)), w, g); err != nil {
			return err
		}
	}
	return nil
}

// same compares two messages (nil for a missing one) and renders the
// difference line by line.
func same(what string, want, got proto.Message) error {
	if want != nil && got != nil && proto.Equal(want, got) {
		return nil
	}
	return fmt.Errorf("%s differs (- first store, + second store):\n%s", what, diff(render(want), render(got)))
}

func render(m proto.Message) []string {
	if m == nil {
		return []string{"<missing>"}
	}
	b, err := prototext.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return []string{fmt.Sprintf("<%T: %v>", m, err)}
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// diff shows the lines two renderings do not share, between their common
// beginning and end, with a line of context either side.
func diff(a, b []string) string {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	var out strings.Builder
	if pre > 0 {
		fmt.Fprintf(&out, "  %s\n", a[pre-1])
	}
	for _, l := range a[pre : len(a)-suf] {
		fmt.Fprintf(&out, "- %s\n", l)
	}
	for _, l := range b[pre : len(b)-suf] {
		fmt.Fprintf(&out, "+ %s\n", l)
	}
	if suf > 0 {
		fmt.Fprintf(&out, "  %s\n", a[len(a)-suf])
	}
	return out.String()
}
