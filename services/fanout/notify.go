package fanout

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
	"github.com/parleychat/parley/pkg/server/membership"
	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
)

// Offline notifications. A message for a recipient with no connected
// device, who has not muted the conversation, becomes a NotificationRecord
// on topics.Notifications, produced before the event batch is committed,
// so none is lost to a crash. The notifier, a consumer group of its own,
// delivers them to a webhook (a push gateway in front of FCM and APNs):
// one POST per poll, collapsed per user and conversation, retried with
// jittered backoff, and set aside on topics.DeadLetter when the webhook
// keeps failing, so a dead gateway cannot hold the notifications behind it.

// NotifierGroup is the notifier's consumer group.
const NotifierGroup = "parley-notifier"

// ReasonWebhook is the dead-letter reason of notifications the webhook
// kept refusing.
const ReasonWebhook = "webhook"

// NotifyConfig configures offline notifications; they are off while
// Webhook is empty.
type NotifyConfig struct {
	// Webhook receives the notifications as JSON POSTs: an https URL, or
	// http on loopback.
	Webhook string
	// Secret, when set, signs each POST: X-Parley-Signature is "sha256="
	// and the hex HMAC-SHA256 of the body under it.
	Secret []byte
	// IncludeText puts the message's text in the notification; without it
	// no message content leaves Parley.
	IncludeText bool
	// Attempts bounds the POSTs of one batch before it is set aside (5 if
	// 0); Backoff is the first retry's wait, doubled each time with
	// jitter (500 ms if 0); Timeout bounds one POST (10 s if 0).
	Attempts int
	Backoff  time.Duration
	Timeout  time.Duration
}

func (c *NotifyConfig) defaults() {
	if c.Attempts <= 0 {
		c.Attempts = 5
	}
	if c.Backoff <= 0 {
		c.Backoff = 500 * time.Millisecond
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
}

// checkWebhook refuses a webhook that would carry notifications (and
// their signature) in clear across a network.
func checkWebhook(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("notify webhook: %w", err)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
		return fmt.Errorf("notify webhook %s: http only on loopback; use https", raw)
	}
	return fmt.Errorf("notify webhook %s: the scheme must be https (or http on loopback)", raw)
}

// Kinds of notification (NotificationRecord.kind, Notification.Kind).
const (
	KindMessage        = "message"
	KindContactRequest = "contact_request"
	KindInvitation     = "invitation"
)

// Offline lists the notifications a batch owes: for each message, and
// each inbox item that asks its owner for an answer (a contact request to
// them, an invitation), every recipient but the sender who is not located
// (no connected device) and has not muted the conversation. located holds
// who presence placed.
func Offline(recs []*logv1.EventRecord, located map[string]bool, includeText bool) []*logv1.NotificationRecord {
	var out []*logv1.NotificationRecord
	for _, r := range recs {
		ev := r.GetEvent()
		kind, from := notifyKind(ev)
		if kind == "" {
			continue
		}
		for _, u := range r.GetRecipientIds() {
			if u == ev.GetSenderId() || located[u] || slices.Contains(r.GetMutedIds(), u) || membership.IsAudienceMember(u) {
				// An audience is no one to notify: its users are reached
				// on their devices, live or by resuming.
				continue
			}
			n := &logv1.NotificationRecord{UserId: u, ConversationId: ev.GetConversationId(), Seq: ev.GetSeq(),
				EventId: ev.GetEventId(), SenderId: from, Time: ev.GetTime(), Kind: kind}
			if includeText {
				n.Text = ev.GetMessagePosted().GetText()
			}
			out = append(out, n)
		}
	}
	return out
}

// notifyKind says whether ev asks for its recipients' attention, and who
// it comes from: a message (its sender), or an inbox item asking its owner
// to answer (who asked or invited). Anything else notifies nobody.
func notifyKind(ev *chatv1.Event) (kind, from string) {
	switch {
	case ev.GetMessagePosted() != nil:
		return KindMessage, ev.GetSenderId()
	case ev.GetContactUpdated().GetAction() == chatv1.ContactAction_CONTACT_ACTION_REQUESTED && !ev.GetContactUpdated().GetOutgoing():
		return KindContactRequest, ev.GetContactUpdated().GetUserId()
	case ev.GetInvitationUpdated().GetAction() == chatv1.InvitationAction_INVITATION_ACTION_INVITED:
		return KindInvitation, ev.GetInvitationUpdated().GetInviterId()
	}
	return "", ""
}

// locatedUsers is who of locs has a connected device.
func locatedUsers(locs []*presencev1.UserLocation) map[string]bool {
	out := make(map[string]bool, len(locs))
	for _, l := range locs {
		if len(l.GetPushAddresses()) > 0 {
			out[l.GetUserId()] = true
		}
	}
	return out
}

// emit produces the batch's notifications and waits for every one to be
// acknowledged; the batch is committed only after.
func (s *Service) emit(ctx context.Context, recs []*logv1.EventRecord, locs []*presencev1.UserLocation) error {
	owed := Offline(recs, locatedUsers(locs), s.cfg.Notify.IncludeText)
	if len(owed) == 0 {
		return nil
	}
	out := make([]*kgo.Record, len(owed))
	for i, n := range owed {
		value, err := proto.Marshal(n)
		if err != nil {
			return fmt.Errorf("marshal notification: %w", err)
		}
		out[i] = &kgo.Record{Topic: topics.Notifications, Key: []byte(n.GetUserId()), Value: value}
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		var failed []*kgo.Record
		var firstErr error
		for _, res := range s.cl.ProduceSync(ctx, out...) {
			if res.Err != nil {
				failed = append(failed, res.Record)
				firstErr = cmpErr(firstErr, res.Err)
			}
		}
		if len(failed) == 0 {
			s.notifications.emitted.Add(float64(len(owed)))
			return nil
		}
		s.log.WarnContext(ctx, "fanout: notifications not produced; retrying", "records", len(failed), "err", firstErr)
		out = failed
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// notifyMetrics count what the notifications came to.
type notifyMetrics struct {
	emitted, delivered, setAside prometheus.Counter
	posts                        *prometheus.CounterVec
}

func newNotifyMetrics(reg *prometheus.Registry) notifyMetrics {
	c := func(name, help string) prometheus.Counter {
		ctr := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(ctr)
		return ctr
	}
	m := notifyMetrics{
		emitted:   c("parley_notifications_emitted_total", "Offline notifications produced to "+topics.Notifications+"."),
		delivered: c("parley_notifications_delivered_total", "Offline notifications the webhook accepted, after collapsing."),
		setAside:  c("parley_notifications_set_aside_total", "Notification records set aside on "+topics.DeadLetter+" after the webhook kept failing."),
		posts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_notification_posts_total",
			Help: "Webhook POSTs by result: ok, failed (a retry follows or the batch is set aside)."}, []string{"result"}),
	}
	reg.MustRegister(m.posts)
	m.posts.WithLabelValues("ok")
	m.posts.WithLabelValues("failed")
	return m
}

// Notification is one entry of a webhook POST: the messages a user missed
// in one conversation within the batch, collapsed into the latest.
type Notification struct {
	UserID         string    `json:"user_id"`
	ConversationID string    `json:"conversation_id"`
	LastSeq        uint64    `json:"last_seq"`
	Count          int       `json:"count"`
	SenderID       string    `json:"sender_id"`
	EventID        string    `json:"event_id"`
	Time           time.Time `json:"time"`
	Text           string    `json:"text,omitempty"`
	// Kind is the latest's: KindMessage, KindContactRequest or
	// KindInvitation.
	Kind string `json:"kind"`
}

// WebhookBody is what one POST carries.
type WebhookBody struct {
	Notifications []Notification `json:"notifications"`
}

// Collapse folds notification records into one entry per user and
// conversation, the latest message's, counting them; in order of first
// appearance.
func Collapse(ns []*logv1.NotificationRecord) []Notification {
	type key struct{ user, conv string }
	at := map[key]int{}
	var out []Notification
	for _, n := range ns {
		k := key{n.GetUserId(), n.GetConversationId()}
		i, ok := at[k]
		if !ok {
			at[k] = len(out)
			out = append(out, Notification{UserID: k.user, ConversationID: k.conv})
			i = len(out) - 1
		}
		e := &out[i]
		e.Count++
		if n.GetSeq() >= e.LastSeq {
			e.LastSeq, e.SenderID, e.EventID, e.Text = n.GetSeq(), n.GetSenderId(), n.GetEventId(), n.GetText()
			e.Time = timeOf(n.GetTime())
			e.Kind = n.GetKind()
			if e.Kind == "" {
				e.Kind = KindMessage
			}
		}
	}
	return out
}

func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime().UTC()
}

// newNotifier makes the notifier's consumer client; nil when
// notifications are off.
func newNotifier(cfg Config, log *slog.Logger, m notifyMetrics) (*notifier, error) {
	instance := cfg.InstanceID
	if instance != "" {
		instance += "-notifier"
	}
	cl, err := kgo.NewClient(append(topics.ClientOpts(cfg.Brokers, cfg.Kafka...), topics.GroupOpts(NotifierGroup, instance,
		kgo.ConsumeTopics(topics.Notifications),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
	)...)...)
	if err != nil {
		return nil, fmt.Errorf("notifier kafka client: %w", err)
	}
	return &notifier{cfg: cfg.Notify, cl: cl, http: &http.Client{}, log: log.With("part", "notifier"), metrics: m}, nil
}

// notifier delivers the notification records to the webhook.
type notifier struct {
	cfg     NotifyConfig
	cl      *kgo.Client
	http    *http.Client
	log     *slog.Logger
	metrics notifyMetrics
}

// handle delivers one poll's notifications; true once they reached the
// webhook or were set aside, false when ctx ended first (the poll is
// read again).
func (n *notifier) handle(ctx context.Context, recs []*kgo.Record) bool {
	var ns []*logv1.NotificationRecord
	var good []*kgo.Record
	var bad []records.Rejected
	for _, r := range recs {
		rec := &logv1.NotificationRecord{}
		if err := proto.Unmarshal(r.Value, rec); err != nil || rec.GetUserId() == "" {
			if err == nil {
				err = errors.New("no user_id")
			}
			bad = append(bad, records.Rejected{Record: r, Err: &records.BadRecord{Reason: records.ReasonUndecodable, Err: err}})
			continue
		}
		ns, good = append(ns, rec), append(good, r)
	}
	if len(ns) > 0 {
		body, err := json.Marshal(WebhookBody{Notifications: Collapse(ns)})
		if err != nil {
			n.log.ErrorContext(ctx, "notifier: encode", "err", err)
			return false
		}
		if err := n.post(ctx, body); err != nil {
			if ctx.Err() != nil {
				return false
			}
			// Set aside whole: the records keep everything a later
			// replay to the webhook needs.
			for _, r := range good {
				bad = append(bad, records.Rejected{Record: r, Err: &records.BadRecord{Reason: ReasonWebhook, Err: err}})
			}
			n.metrics.setAside.Add(float64(len(ns)))
		} else {
			n.metrics.delivered.Add(float64(len(Collapse(ns))))
		}
	}
	if len(bad) > 0 {
		if err := records.SetAside(ctx, n.cl, n.log, NotifierGroup, bad); err != nil {
			return false
		}
	}
	return true
}

// post sends body, retrying with jittered exponential backoff up to
// Attempts times. A 4xx other than 408 and 429 is not retried: the
// webhook refuses what it was sent.
func (n *notifier) post(ctx context.Context, body []byte) error {
	backoff := n.cfg.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		var retry bool
		retry, err = n.postOnce(ctx, body)
		if err == nil {
			n.metrics.posts.WithLabelValues("ok").Inc()
			return nil
		}
		n.metrics.posts.WithLabelValues("failed").Inc()
		if !retry || attempt >= n.cfg.Attempts {
			break
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		n.log.WarnContext(ctx, "notifier: webhook failed; retrying", "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	n.log.ErrorContext(ctx, "notifier: webhook gave up; setting the batch aside", "to", topics.DeadLetter, "attempts", n.cfg.Attempts, "err", err)
	return err
}

func (n *notifier) postOnce(ctx context.Context, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	if len(n.cfg.Secret) > 0 {
		req.Header.Set("X-Parley-Signature", Sign(n.cfg.Secret, body))
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return true, fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return false, nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return true, fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return false, fmt.Errorf("webhook refused the batch: %s", resp.Status)
	}
}

// Sign is the X-Parley-Signature of body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// RegisterFlags adds the notification flags to fs, each with a PARLEY_*
// environment fallback; the fan-out binary and `parley run` share them.
func (c *NotifyConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Webhook, "notify-webhook", os.Getenv("PARLEY_NOTIFY_WEBHOOK"),
		"POST offline notifications (a message for a user with no connected device) to this URL: https, or http on loopback; off if empty (PARLEY_NOTIFY_WEBHOOK)")
	c.Secret = []byte(os.Getenv("PARLEY_NOTIFY_SECRET"))
	fs.Func("notify-secret", "sign each notification POST with HMAC-SHA256 under this secret, in X-Parley-Signature (PARLEY_NOTIFY_SECRET)", func(v string) error {
		c.Secret = []byte(v)
		return nil
	})
	c.IncludeText = os.Getenv("PARLEY_NOTIFY_TEXT") == "1"
	fs.BoolFunc("notify-text", "put the message's text in notifications; without it no message content leaves Parley (PARLEY_NOTIFY_TEXT=1)", func(v string) error {
		b, err := strconv.ParseBool(v)
		c.IncludeText = b
		return err
	})
}
