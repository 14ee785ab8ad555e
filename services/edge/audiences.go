package edge

import (
	"github.com/parleychat/parley/pkg/server/membership"

	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// A connection whose token gives its user attributes belongs to their
// audiences (membership.AudienceID): the hub registers it under each
// audience's member as under its user, and presence is told of a session
// of that member on this node, so fan-out finds it as it finds a user,
// and a broadcast is pushed to it like any event. Reads of an audience's
// conversation (history, resume) are made as its member, which persistence
// and the sequencer hold to be its one member; the connection may make
// them only for its own audiences.

// audience is one of a connection's audiences.
type audience struct {
	selector, conv, member string
}

func audiencesOf(selectors []string) []audience {
	if len(selectors) == 0 {
		return nil
	}
	out := make([]audience, len(selectors))
	for i, s := range selectors {
		out[i] = audience{selector: s, conv: membership.AudienceID(s), member: membership.AudienceMember(s)}
	}
	return out
}

// reader is who reads conv for this connection: its audience's member
// for an audience of its own, else its user.
func (c *conn) reader(conv string) string {
	for _, a := range c.audiences {
		if a.conv == conv {
			return a.member
		}
	}
	return c.user
}

// audienceMember is the member of conv if it is one of the connection's
// audiences, else "".
func (c *conn) audienceMember(conv string) string {
	for _, a := range c.audiences {
		if a.conv == conv {
			return a.member
		}
	}
	return ""
}

// audienceSessions are the sessions of the connection's audiences, as
// presence knows them: one per audience, under its member.
func (c *conn) audienceSessions() []*presencev1.Session {
	if len(c.audiences) == 0 {
		return nil
	}
	out := make([]*presencev1.Session, len(c.audiences))
	for i, a := range c.audiences {
		out[i] = &presencev1.Session{SessionId: c.session + "/" + a.selector, UserId: a.member, DeviceId: c.device}
	}
	return out
}

// audienceRefs are what Authenticated tells the client of its audiences.
func (c *conn) audienceRefs() []*clientv1.Audience {
	if len(c.audiences) == 0 {
		return nil
	}
	out := make([]*clientv1.Audience, len(c.audiences))
	for i, a := range c.audiences {
		out[i] = &clientv1.Audience{Selector: a.selector, ConversationId: a.conv}
	}
	return out
}
