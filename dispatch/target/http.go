package target

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
)

// coldStartHeaders are response headers in which a platform says whether
// an invocation met a new environment ("true"/"false").
var coldStartHeaders = []string{"Fnsim-Cold-Start", "X-Cold-Start"}

// HTTP invokes a function by POSTing the payload to its URL. It follows
// redirects only within the URL's origin (scheme, host and port), so that
// the configured Header (often a secret) never goes anywhere else: a
// redirect to another origin is not followed and is the function's answer,
// a failed attempt that is not retried (a configuration to fix, not a
// passing fault), with Error saying why. It is safe for concurrent use.
type HTTP struct {
	// URL is the function's address. Required.
	URL string
	// Client sends the requests. Nil means a client with no overall
	// timeout of its own: the invocation's context bounds each call.
	// Its CheckRedirect, if any, is asked only about redirects within the
	// origin.
	Client *http.Client
	// MaxResponseBytes bounds the response body kept as the job's result.
	// Zero means [DefaultMaxResponseBytes].
	MaxResponseBytes int64
	// Header is sent with every request (an API key, say). The payload's
	// Content-Type, traceparent and the Sluice headers take precedence.
	Header http.Header
}

// MaxIdleConnsPerHost is how many idle connections to one host the
// invokers keep for reuse: as many as the most invocations a function may
// have in flight, so that a function at its concurrency limit reuses its
// connections rather than opening and closing one per invocation over the
// pool's size (at 256 and a concurrency of 1,024, bench pipeline completed
// 6% fewer jobs for the churn). Idle ones close after IdleConnTimeout.
const (
	MaxIdleConnsPerHost = 10_000
	IdleConnTimeout     = 90 * time.Second
)

var defaultClient = &http.Client{
	Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: MaxIdleConnsPerHost,
		IdleConnTimeout:     IdleConnTimeout,
		ForceAttemptHTTP2:   true,
	},
	CheckRedirect: withinOrigin(nil),
}

// maxRedirects is how many redirects within its origin an invocation
// follows, as net/http's default client does.
const maxRedirects = 10

// withinOrigin is a CheckRedirect that stops at a redirect off the first
// request's origin, returning it as the answer; within the origin it asks
// next, or follows up to maxRedirects when next is nil.
func withinOrigin(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if !sameOrigin(req.URL, via[0].URL) {
			return http.ErrUseLastResponse
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("target: stopped after %d redirects", maxRedirects)
		}
		return nil
	}
}

// sameOrigin reports whether a and b have one origin: scheme, host and
// port, a port not written being the scheme's default.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && portOf(a) == portOf(b)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

// redirectedAway is the Error of an answer that redirects off the
// function's origin. It names no address: it reaches clients.
const redirectedAway = "function redirected to another origin: not followed, so that the configured headers go nowhere else"

// Invoke POSTs inv's payload with its content type and the Sluice headers.
func (h *HTTP) Invoke(ctx context.Context, inv *Invocation) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(inv.Payload))
	if err != nil {
		return nil, fmt.Errorf("target: build request: %w", err)
	}
	for k, vs := range h.Header {
		req.Header[k] = slices.Clone(vs)
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
	client := defaultClient
	if h.Client != nil {
		c := *h.Client
		c.CheckRedirect = withinOrigin(h.Client.CheckRedirect)
		client = &c
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := responseLimit(h.MaxResponseBytes)
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("target: read response: %w", err)
	}
	if err := checkResponseSize(len(body), limit); err != nil {
		return nil, err
	}
	out := &Response{
		Status:      resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"),
		Body:        body,
		RetryAfter:  resp.Header.Get("Retry-After"),
	}
	if loc, err := resp.Location(); err == nil && resp.StatusCode/100 == 3 && !sameOrigin(loc, req.URL) {
		out.Error = redirectedAway
	}
	for _, h := range coldStartHeaders {
		if v, err := strconv.ParseBool(resp.Header.Get(h)); err == nil {
			out.ColdStart = &v
			break
		}
	}
	return out, nil
}
