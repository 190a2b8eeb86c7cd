package target

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
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

// Response is what a function answered. Invokers for platforms other than
// HTTP map their answers onto HTTP statuses, which the dispatcher reads:
// 2xx succeeded; 429, or 503 with RetryAfter, is a throttle (the pacing
// window shrinks and the attempt is not counted); any other status is a
// failed attempt, retried if it is 5xx but 501, or 408.
type Response struct {
	// Status is the HTTP status code, or the platform's answer as one.
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
	// Error, if set, says in the platform's words why the invocation did
	// not succeed ("Lambda function error (Unhandled: TypeError)"), for the
	// attempt's and the job's error field; empty means "function answered
	// HTTP <Status>". It reaches clients: no addresses, keys or account
	// numbers.
	Error string
}

// Headers sent with every invocation.
const (
	HeaderJobID   = "Sluice-Job-Id"
	HeaderAttempt = "Sluice-Attempt"
	// HeaderWarmup marks a keep-warm ping, which carries no job.
	HeaderWarmup = "Sluice-Warmup"
)

// ErrResponseTooLarge: the function's response exceeded the invoker's limit.
var ErrResponseTooLarge = errors.New("target: function response too large")

// DefaultMaxResponseBytes is the invokers' MaxResponseBytes default: 1 MiB.
// A larger response fails its job (not retried), with an error saying so.
// What a job's state can hold may be less (buffer's Queue.MaxResultBytes).
const DefaultMaxResponseBytes = 1 << 20

// responseLimit is a MaxResponseBytes setting with its default applied.
func responseLimit(setting int64) int64 {
	if setting <= 0 {
		return DefaultMaxResponseBytes
	}
	return setting
}

// checkResponseSize returns ErrResponseTooLarge for a body over limit.
func checkResponseSize(size int, limit int64) error {
	if int64(size) > limit {
		return fmt.Errorf("%w: more than %d bytes", ErrResponseTooLarge, limit)
	}
	return nil
}

// printable keeps a platform's word short and on one line.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if r := []rune(s); len(r) > 100 {
		s = string(r[:100]) + "…"
	}
	return s
}
