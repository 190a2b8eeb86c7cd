// Package callbacks keeps the callbacks of finished jobs until they are
// delivered: one message each in a work-queue stream of their own
// ([Store]), the JSON a receiver gets ([Event]), and their delivery from
// that stream ([Callback]).
package callbacks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/provision"
	"github.com/sluicehq/sluice/buffer/store"
)

// Callbacks waiting to be delivered are kept in a work-queue stream, one
// message per finished job (per redrive), so that a callback survives the
// gateway that published it and is retried until it is delivered.
const (
	// Stream holds callbacks not yet delivered.
	Stream = "SLUICE_CALLBACKS"
	// Prefix starts every callback's subject; the function's name and the
	// job's ID follow it.
	Prefix = "sluice.callbacks."
	// ConsumerName is the durable consumer that delivers callbacks.
	ConsumerName = "sluice-callbacks"
	// URLHeader carries the callback URL, on a callback and on its job's
	// message.
	URLHeader = "Sluice-Callback-Url"

	headerWebhookID = "Sluice-Webhook-Id"
)

// maxResultBytes bounds the function's response carried in a
// callback; a larger one is left out (result_omitted), and the receiver
// reads it with GET /v1/jobs/{id}/result.
const maxResultBytes = 256 << 10

// StreamConfig is the configuration of the callback stream: l.MaxAge is
// how long a callback is kept undelivered, the job retention (a callback
// not delivered within it is of no use: the job it names is gone).
func StreamConfig(l provision.StreamLimits) jetstream.StreamConfig {
	return l.Apply(jetstream.StreamConfig{
		Name:        Stream,
		Description: "Sluice: callbacks of finished jobs not yet delivered",
		Subjects:    []string{Prefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
	})
}

// Event is the JSON body a callback receiver gets, in the shape
// Standard Webhooks recommends: a type, a timestamp and the data.
type Event struct {
	// Type is "job." and the job's terminal state in lower case, e.g.
	// "job.succeeded".
	Type string `json:"type"`
	// Timestamp is when the job finished.
	Timestamp time.Time `json:"timestamp"`
	// Data is the job, as GET /v1/jobs/{id} shows it.
	Data json.RawMessage `json:"data"`
	// ResultOmitted says the function's response body was too large to
	// carry; GET /v1/jobs/{id}/result has it.
	ResultOmitted bool `json:"result_omitted,omitempty"`
}

// WebhookID is the webhook-id of a job's callback: the same on every retry
// of it, so that receivers can deduplicate, and new for each redrive.
func WebhookID(job *sluicev1.Job) string {
	return "msg_" + job.Id + "_" + strconv.Itoa(int(job.Redrives))
}

// Store is the callback stream.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	shares *store.Shares
}

// New is the Store over stream, the callback stream ([StreamConfig]);
// gauge reads how full it is, for the shares of it.
func New(js jetstream.JetStream, stream jetstream.Stream, gauge *store.Gauge) *Store {
	return &Store{js: js, stream: stream, shares: store.NewShares(gauge, store.Callbacks, stream, Prefix)}
}

// Publish stores a finished job's callback to be delivered. The message
// ID makes it once per job and redrive, however often a finish is seen
// again within the stream's duplicate window.
func (s *Store) Publish(ctx context.Context, job *sluicev1.Job) error {
	event := Event{
		Type:      "job." + strings.ToLower(job.State.String()),
		Timestamp: job.GetFinishTime().AsTime(),
	}
	data := job
	if r := job.GetResult(); len(r.GetBody()) > maxResultBytes ||
		(len(r.GetBody()) > 0 && s.shares.Over(ctx, job.Tenant, job.Function)) {
		data = proto.CloneOf(job)
		data.Result.Body = nil
		event.ResultOmitted = true
	}
	var err error
	if event.Data, err = protojson.Marshal(data); err != nil {
		return fmt.Errorf("buffer: encode callback of %s: %w", job.Id, err)
	}
	body, err := json.Marshal(event)
	if err != nil {
		return fmt.Errorf("buffer: encode callback of %s: %w", job.Id, err)
	}
	id := WebhookID(job)
	msg := nats.NewMsg(Prefix + job.Function + "." + job.Id)
	msg.Data = body
	msg.Header.Set(URLHeader, job.CallbackUrl)
	msg.Header.Set(headerWebhookID, id)
	if job.Tenant != "" {
		msg.Header.Set(store.TenantHeader, job.Tenant) // whose secrets sign it; its share of the store and deliveries
	}
	if _, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		return store.MarkFull(store.Callbacks, fmt.Errorf("buffer: store callback of %s: %w", job.Id, store.PublishError(err)))
	}
	s.shares.Add(job.Tenant, job.Function, len(body))
	return nil
}

// Callback is one callback to deliver. Exactly one of Done, Retry or Drop
// should end it.
type Callback struct {
	msg jetstream.Msg
	// URL is where to POST it.
	URL string
	// WebhookID is its webhook-id, the same on every attempt.
	WebhookID string
	// Tenant is the tenant of the job, whose secrets sign it; "" for a
	// gateway without tenants.
	Tenant string
	// Body is the JSON to POST: an [Event].
	Body []byte
	// Attempt counts deliveries of it, from 1.
	Attempt int
	// Stored is when it was stored, which bounds its retries.
	Stored time.Time
}

// Done removes a delivered callback.
func (c *Callback) Done() error { return ackErr(c.msg.Ack(), "ack callback") }

// Retry hands the callback back to be tried again after delay.
func (c *Callback) Retry(delay time.Duration) error {
	return ackErr(c.msg.NakWithDelay(delay), "retry callback")
}

// Drop gives up on the callback for good.
func (c *Callback) Drop() error { return ackErr(c.msg.Term(), "drop callback") }

func ackErr(err error, op string) error {
	if err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return fmt.Errorf("buffer: %s: %w", op, err)
	}
	return nil
}

// Buffered is how many callbacks a process pulls ahead of handling them,
// of maxPending unfinished at once.
func Buffered(maxPending int) int { return min(maxPending, 64) }

// Consumer is the consumer that delivers the stored callbacks, at most
// maxPending unfinished at once across every gateway process (those
// waiting to be retried included). A callback left unfinished comes back
// after ackWait.
func (s *Store) Consumer(ctx context.Context, maxPending int, ackWait time.Duration) (jetstream.Consumer, error) {
	cons, err := s.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "Sluice: callback delivery",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: maxPending,
		MaxDeliver:    -1,
		MaxWaiting:    512,
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: callback consumer: %w", err)
	}
	return cons, nil
}

// FromMsg is the callback msg, from the [Store.Consumer], holds.
func FromMsg(msg jetstream.Msg) *Callback {
	cb := &Callback{
		msg:       msg,
		URL:       msg.Headers().Get(URLHeader),
		WebhookID: msg.Headers().Get(headerWebhookID),
		Tenant:    msg.Headers().Get(store.TenantHeader),
		Body:      msg.Data(),
		Attempt:   1,
	}
	if cb.Tenant == "" {
		cb.Tenant = callbackTenant(cb.Body)
	}
	if md, err := msg.Metadata(); err == nil {
		cb.Attempt, cb.Stored = int(md.NumDelivered), md.Timestamp
	}
	return cb
}

// callbackTenant reads the job's tenant from a callback's body, for
// callbacks stored before the tenant was kept in a header: signed with the
// gateway's secrets, they would reach the tenant's receivers unverifiable.
func callbackTenant(body []byte) string {
	if !bytes.Contains(body, []byte(`"tenant"`)) {
		return "" // a gateway without tenants; no need to parse the body
	}
	var event struct {
		Data struct {
			Tenant string `json:"tenant"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &event) != nil {
		return ""
	}
	return event.Data.Tenant
}
