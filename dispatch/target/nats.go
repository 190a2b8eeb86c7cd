package target

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/propagation"
)

// NATS invokes a NATS service by request-reply on a subject: a
// service built with nats.go's micro package, or anything that answers
// requests there. The request carries the payload as its data, and headers
// Content-Type, Sluice-Job-Id, Sluice-Attempt (Sluice-Warmup: 1 for a
// keep-warm ping) and traceparent. The invocation's context bounds the wait
// for the reply: the function's timeout.
//
// Its answers map onto [Response] so:
//   - a reply: 200, its data as the body and its Content-Type header as the
//     content type;
//   - a reply with a service error (Nats-Service-Error-Code and
//     Nats-Service-Error headers, as micro's Request.Error sends them): a
//     failed attempt, the reply's data kept as the body and Error quoting
//     the code and description. A code that is an HTTP error status
//     (400–599) is that status, with its meaning (429 a throttle, 5xx
//     retried, other 4xx not); any other code is 500;
//   - no responders on the subject (no service instance is running): 503
//     with Retry-After 1s, a throttle, so that jobs wait for the service
//     to come back, the window shrinks, and no attempt is spent;
//   - no reply in time: an error, a failed attempt with no answer.
//
// It is safe for concurrent use.
type NATS struct {
	// Conn is the connection requests go out on. Required.
	Conn *nats.Conn
	// Subject is the service's subject. Required.
	Subject string
	// MaxResponseBytes bounds the reply kept as the job's result. Zero
	// means [DefaultMaxResponseBytes].
	MaxResponseBytes int64
}

// noRespondersRetryAfter is how long a function pauses when no service
// listens on its subject.
const noRespondersRetryAfter = "1"

// Invoke sends one request and waits for its reply until ctx ends.
func (n *NATS) Invoke(ctx context.Context, inv *Invocation) (*Response, error) {
	msg := nats.NewMsg(n.Subject)
	msg.Data = inv.Payload
	if inv.ContentType != "" {
		msg.Header.Set("Content-Type", inv.ContentType)
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	for k, v := range carrier {
		msg.Header.Set(k, v) // NATS headers keep their case: "traceparent"
	}
	if inv.Warmup {
		msg.Header.Set(HeaderWarmup, "1")
	} else {
		msg.Header.Set(HeaderJobID, inv.JobID)
		msg.Header.Set(HeaderAttempt, strconv.Itoa(inv.Attempt))
	}
	reply, err := n.Conn.RequestMsgWithContext(ctx, msg)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &Response{
			Status:     http.StatusServiceUnavailable,
			RetryAfter: noRespondersRetryAfter,
			Error:      "no NATS service is listening on the function's subject",
		}, nil
	case err != nil:
		return nil, fmt.Errorf("target: NATS request: %w", err)
	}
	if err := checkResponseSize(len(reply.Data), responseLimit(n.MaxResponseBytes)); err != nil {
		return nil, err
	}
	resp := &Response{Status: http.StatusOK, ContentType: reply.Header.Get("Content-Type"), Body: reply.Data}
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		resp.Status = http.StatusInternalServerError
		if c, err := strconv.Atoi(code); err == nil && c >= 400 && c <= 599 {
			resp.Status = c
		}
		resp.Error = "NATS service error " + printable(code)
		if desc := reply.Header.Get(micro.ErrorHeader); desc != "" {
			resp.Error += ": " + printable(desc)
		}
		resp.RetryAfter = reply.Header.Get("Retry-After")
	}
	return resp, nil
}
