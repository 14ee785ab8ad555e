package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/parleychat/parley/services/persistence/history"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// setFlags folds a flags record in: the highest version wins. Like a
// receipt, it is kept even before its conversation is stored.
func (a *applier) setFlags(f *chatv1.ConversationFlags) error {
	conv, user := f.GetConversationId(), f.GetUserId()
	if conv == "" || user == "" {
		return fmt.Errorf("apply flags of %q in %q: missing conversation or user id", user, conv)
	}
	k := userConv{conv, user}
	st := a.flags[k]
	if st == nil {
		held, err := getFlags(a.b, user, conv)
		if err != nil {
			return err
		}
		st = &flagsState{f: held.f}
		a.flags[k] = st
	}
	if history.NewerFlags(f, st.f.GetVersion()) {
		st.f, st.moved = f, true
	}
	return nil
}

// storedFlags are a user's flags of one conversation as stored, and when
// they last changed (Unix nanoseconds; zeros when never set).
type storedFlags struct {
	f       *chatv1.ConversationFlags
	changed int64
}

func getFlags(r getter, user, conv string) (storedFlags, error) {
	v, closer, err := r.Get(flagsKey(user, conv))
	if errors.Is(err, pebble.ErrNotFound) {
		return storedFlags{}, nil
	}
	if err != nil {
		return storedFlags{}, fmt.Errorf("read flags of %s in %s: %w", user, conv, err)
	}
	defer closer.Close()
	if len(v) != 18 {
		return storedFlags{}, fmt.Errorf("read flags of %s in %s: %d bytes, want 18", user, conv, len(v))
	}
	return storedFlags{
		f: &chatv1.ConversationFlags{ConversationId: conv, UserId: user, Version: binary.BigEndian.Uint64(v),
			Muted: v[8] == 1, Pinned: v[9] == 1},
		changed: int64(binary.BigEndian.Uint64(v[10:])),
	}, nil
}
