package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/propagation"
)

// Invocation is one attempt at one job.
type Invocation struct {
	// JobID is the job's ID, sent to the function as Sluice-Job-Id.
	JobID string
	// Function is the function's configured name.
	Function string
	// Attempt counts from 1, sent to the function as Sluice-Attempt.
	Attempt int
	// ContentType is the payload's content type.
	ContentType string
	// Payload is passed to the function verbatim.
	Payload []byte
	// Warmup marks a keep-warm ping: no job, no payload, header
	// Sluice-Warmup: 1.
	Warmup bool
}

// Response is what a function answered.
type Response struct {
	// Status is the HTTP status code.
	Status int
	// ContentType is the response's content type.
	ContentType string
	// Body is the response body.
	Body []byte
	// RetryAfter is the response's Retry-After header, if any.
	RetryAfter string
	// ColdStart is what the platform said about the environment: true for a
	// new one, false for a warm one, nil when it said nothing.
	ColdStart *bool
}

// Invoker calls a function. Invoke returns a Response for any answer the
// function gave, whatever its status, and an error only when there was no
// answer (the function could not be reached, or ctx ended first).
type Invoker interface {
	Invoke(ctx context.Context, inv *Invocation) (*Response, error)
}

// Headers sent with every invocation.
const (
	HeaderJobID   = "Sluice-Job-Id"
	HeaderAttempt = "Sluice-Attempt"
	// HeaderWarmup marks a keep-warm ping, which carries no job.
	HeaderWarmup = "Sluice-Warmup"
)

// coldStartHeaders are response headers in which a platform says whether
// an invocation met a new environment ("true"/"false").
var coldStartHeaders = []string{"Fnsim-Cold-Start", "X-Cold-Start"}

// ErrResponseTooLarge: the function's response exceeded the invoker's limit.
var ErrResponseTooLarge = errors.New("dispatch: function response too large")

// HTTPInvoker POSTs the payload to a function URL. It is safe for
// concurrent use.
type HTTPInvoker struct {
	// URL is the function's address. Required.
	URL string
	// Client sends the requests. Nil means a client with no overall
	// timeout of its own: the invocation's context bounds each call.
	Client *http.Client
	// MaxResponseBytes bounds the response body kept as the job's result.
	// Zero means 1 MiB.
	MaxResponseBytes int64
}

var _ Invoker = (*HTTPInvoker)(nil)

var defaultClient = &http.Client{Transport: &http.Transport{
	Proxy:               nil,
	MaxIdleConnsPerHost: 256,
	ForceAttemptHTTP2:   true,
}}

// Invoke POSTs inv's payload with its content type and the Sluice headers.
func (h *HTTPInvoker) Invoke(ctx context.Context, inv *Invocation) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(inv.Payload))
	if err != nil {
		return nil, fmt.Errorf("dispatch: build request: %w", err)
	}
	if inv.ContentType != "" {
		req.Header.Set("Content-Type", inv.ContentType)
	}
	// W3C traceparent: the function's own spans join the job's trace.
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	if inv.Warmup {
		req.Header.Set(HeaderWarmup, "1")
	} else {
		req.Header.Set(HeaderJobID, inv.JobID)
		req.Header.Set(HeaderAttempt, strconv.Itoa(inv.Attempt))
	}
	client := h.Client
	if client == nil {
		client = defaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := h.MaxResponseBytes
	if limit == 0 {
		limit = 1 << 20
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("dispatch: read response: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrResponseTooLarge, limit)
	}
	out := &Response{
		Status:      resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"),
		Body:        body,
		RetryAfter:  resp.Header.Get("Retry-After"),
	}
	for _, h := range coldStartHeaders {
		if v, err := strconv.ParseBool(resp.Header.Get(h)); err == nil {
			out.ColdStart = &v
			break
		}
	}
	return out, nil
}
