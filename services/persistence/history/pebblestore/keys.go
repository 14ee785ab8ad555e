package pebblestore

import (
	"bytes"
	"encoding/binary"
)

// Key layout; 0x00 separates parts because ids never contain it.
//
//	e 0 <conversation> 0 <seq, 8 bytes big endian>  -> chat.v1.Event
//	c 0 <conversation>                               -> chat.v1.Conversation
//	t 0 <conversation>                               -> changed-at (8 bytes)
//	u 0 <user> 0 <conversation>                      -> empty (membership)
//	r 0 <conversation> 0 <user>                      -> read seq, changed-at (8+8 bytes)
//	d 0 <conversation> 0 <user> 0 <device>           -> delivered seq (8 bytes)
//	m 0 <conversation> 0 <seq>                       -> latest chat.v1.Event editing seq
//	k 0 <conversation> 0 <seq>                       -> seq of the event deleting seq (8 bytes)
//	x 0 <conversation> 0 <seq> <emoji> 0 <user>      -> seq that set it (8 bytes), present (1 byte)
//	f 0 <user> 0 <conversation>                      -> flags version (8), muted (1), pinned (1), changed-at (8)
//	b 0 <blocker> 0 <blocked>                        -> block stamp (8), blocked (1)
//	n 0 <owner> 0 <user>                             -> inbox seq (8), contact state (1), time in Unix µs (8)
//
// The original message event is never rewritten by what happens to it
// later (m, k and x keys hold that), so applying the message again, as a
// replay does, cannot undo an edit. Each of m and x keeps the value of the
// highest seq that set it, which makes their writes idempotent in any
// order. Reactions are keyed by message seq first, so a message's counts
// are one range scan.
//
// A b key stays when its block is lifted (blocked 0): its stamp (see
// history.NewerBlock) is what keeps an older record, applied again, from
// bringing the block back. Keyed by blocker, a user's blocks are one range
// scan. An n key is the owner's contact entry for another user, folded
// from the owner's inbox items (the highest seq wins); one of state none
// stays, for the same reason as a lifted block.
//
// Numbers are big endian; a changed-at is the store's clock in Unix
// nanoseconds when Apply changed the summary (t), moved the user's read
// position (r) or changed the user's flags (f). Flags are keyed by user
// first, next to the u keys the conversation list walks; each keeps the
// highest version, so its writes are idempotent in any order. Positions are keyed by conversation first, so Receipts is
// two range scans in (user, device) order, while Conversations reads one
// r key per listed conversation.
const (
	prefixEvent        = 'e'
	prefixConversation = 'c'
	prefixChanged      = 't'
	prefixUser         = 'u'
	prefixRead         = 'r'
	prefixDelivered    = 'd'
	prefixEdit         = 'm'
	prefixDeleted      = 'k'
	prefixReaction     = 'x'
	prefixFlags        = 'f'
	prefixBlock        = 'b'
	prefixContact      = 'n'
)

func eventKey(conv string, seq uint64) []byte {
	k := make([]byte, 0, 3+len(conv)+8)
	k = append(k, prefixEvent, 0)
	k = append(k, conv...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// seqKey is the key of a per-message entry (edit, delete, reactions).
func seqKey(kind byte, conv string, seq uint64) []byte {
	k := make([]byte, 0, 3+len(conv)+8)
	k = append(k, kind, 0)
	k = append(k, conv...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func reactionKey(conv string, seq uint64, emoji, user string) []byte {
	k := append(seqKey(prefixReaction, conv, seq), emoji...)
	k = append(k, 0)
	return append(k, user...)
}

func convKey(conv string) []byte {
	return append([]byte{prefixConversation, 0}, conv...)
}

func changedKey(conv string) []byte {
	return append([]byte{prefixChanged, 0}, conv...)
}

func userPrefix(user string) []byte {
	k := append([]byte{prefixUser, 0}, user...)
	return append(k, 0)
}

// positionPrefix is where a conversation's read (r) or delivered (d)
// positions start.
func positionPrefix(kind byte, conv string) []byte {
	k := make([]byte, 0, 3+len(conv))
	k = append(k, kind, 0)
	k = append(k, conv...)
	return append(k, 0)
}

func readKey(conv, user string) []byte {
	return append(positionPrefix(prefixRead, conv), user...)
}

func deliveredKey(conv, user, device string) []byte {
	k := append(positionPrefix(prefixDelivered, conv), user...)
	k = append(k, 0)
	return append(k, device...)
}

// prefixEnd is the smallest key above every key starting with prefix,
// which ends in the 0 separator.
func prefixEnd(prefix []byte) []byte {
	return append(bytes.Clone(prefix[:len(prefix)-1]), 1)
}

func flagsKey(user, conv string) []byte {
	return append(append([]byte{prefixFlags, 0}, user...), append([]byte{0}, conv...)...)
}

func blockPrefix(blocker string) []byte {
	k := append([]byte{prefixBlock, 0}, blocker...)
	return append(k, 0)
}

func contactPrefix(owner string) []byte {
	k := append([]byte{prefixContact, 0}, owner...)
	return append(k, 0)
}
