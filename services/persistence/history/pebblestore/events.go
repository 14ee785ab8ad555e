package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

func (a *applier) event(ev *chatv1.Event) error {
	conv := ev.GetConversationId()
	if conv == "" || ev.GetSeq() == 0 {
		return fmt.Errorf("apply event %q: missing conversation id or seq", ev.GetEventId())
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("marshal event %s/%d: %w", conv, ev.GetSeq(), err)
	}
	if err := a.b.Set(eventKey(conv, ev.GetSeq()), data, nil); err != nil {
		return fmt.Errorf("write event %s/%d: %w", conv, ev.GetSeq(), err)
	}
	sum, ok := a.summaries[conv]
	if !ok {
		sum, err = getConversation(a.b, conv)
		if errors.Is(err, history.ErrNotFound) {
			sum, err = &chatv1.Conversation{}, nil
		}
		if err != nil {
			return err
		}
		a.summaries[conv] = sum
	}
	if err := a.messageState(conv, ev); err != nil {
		return err
	}
	if u := ev.GetContactUpdated(); u != nil {
		if err := a.contact(ev, u); err != nil {
			return err
		}
	}
	joined, left, changed := history.Summarize(sum, ev)
	if changed {
		a.changed[conv] = true
	}
	for _, u := range joined {
		if err := a.b.Set(append(userPrefix(u), conv...), nil, nil); err != nil {
			return fmt.Errorf("write membership %s/%s: %w", conv, u, err)
		}
	}
	for _, u := range left {
		if err := a.b.Delete(append(userPrefix(u), conv...), nil); err != nil {
			return fmt.Errorf("delete membership %s/%s: %w", conv, u, err)
		}
	}
	if u := ev.GetSenderId(); u != "" {
		// What you post you have, and have read.
		return a.move(conv, u, ev.GetSenderDeviceId(), &chatv1.Receipt{DeliveredSeq: ev.GetSeq(), ReadSeq: ev.GetSeq()})
	}
	return nil
}

// messageState records what an edit, delete or reaction did to its
// target message, keeping the value of the highest seq.
func (a *applier) messageState(conv string, ev *chatv1.Event) error {
	seq := ev.GetSeq()
	switch b := ev.GetBody().(type) {
	case *chatv1.Event_MessageEdited:
		k := seqKey(prefixEdit, conv, b.MessageEdited.GetTargetSeq())
		prev, err := getEvent(a.b, k)
		if err != nil {
			return err
		}
		if prev != nil && prev.GetSeq() >= seq {
			return nil
		}
		data, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("marshal edit %s/%d: %w", conv, seq, err)
		}
		if err := a.b.Set(k, data, nil); err != nil {
			return fmt.Errorf("write edit %s/%d: %w", conv, seq, err)
		}
	case *chatv1.Event_MessageDeleted:
		// A message is deleted once (the sequencer refuses a second
		// delete), so the value needs no comparison.
		if err := a.b.Set(seqKey(prefixDeleted, conv, b.MessageDeleted.GetTargetSeq()), binary.BigEndian.AppendUint64(nil, seq), nil); err != nil {
			return fmt.Errorf("write delete %s/%d: %w", conv, seq, err)
		}
	case *chatv1.Event_ReactionAdded:
		return a.reaction(conv, seq, b.ReactionAdded.GetTargetSeq(), b.ReactionAdded.GetEmoji(), ev.GetSenderId(), true)
	case *chatv1.Event_ReactionRemoved:
		return a.reaction(conv, seq, b.ReactionRemoved.GetTargetSeq(), b.ReactionRemoved.GetEmoji(), ev.GetSenderId(), false)
	}
	return nil
}

func (a *applier) reaction(conv string, seq, target uint64, emoji, user string, present bool) error {
	k := reactionKey(conv, target, emoji, user)
	v, closer, err := a.b.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read reaction %s/%d: %w", conv, target, err)
	default:
		newer := len(v) == 9 && binary.BigEndian.Uint64(v) >= seq
		closer.Close()
		if newer {
			return nil
		}
	}
	val := binary.BigEndian.AppendUint64(nil, seq)
	if present {
		val = append(val, 1)
	} else {
		val = append(val, 0)
	}
	if err := a.b.Set(k, val, nil); err != nil {
		return fmt.Errorf("write reaction %s/%d: %w", conv, seq, err)
	}
	return nil
}
