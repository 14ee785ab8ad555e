package pebblestore_test

import (
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"

	"github.com/parleychat/parley/services/persistence/history"
	"github.com/parleychat/parley/services/persistence/history/historytest"
	"github.com/parleychat/parley/services/persistence/history/pebblestore"
)

func TestConformance(t *testing.T) {
	historytest.Run(t, func(t *testing.T) history.Store {
		s, err := pebblestore.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestConformanceClock(t *testing.T) {
	historytest.RunClock(t, func(t *testing.T, now func() time.Time) history.Store {
		s, err := pebblestore.Open(t.TempDir(), pebblestore.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestReopenKeepsHistory(t *testing.T) {
	dir := t.TempDir()
	s, err := pebblestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	recs := []*logv1.EventRecord{historytest.Created("c", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "t", "alice"), historytest.Posted("c", 2, "alice", "kept")}
	if err := s.Apply(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = pebblestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.History(t.Context(), "c", history.Query{})
	if err != nil || len(p.Events) != 2 || p.Events[1].GetMessagePosted().GetText() != "kept" {
		t.Fatalf("after reopen: %v, %v", p.Events, err)
	}
}
