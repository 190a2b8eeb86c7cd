package callback

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

const (
	// defaultUserAgent is sent when [Sender.UserAgent] is empty.
	defaultUserAgent = "Sluice-Callback/1"
	// maxDrainBytes is how much of an answer's body is read, and thrown
	// away, so that its connection can be reused.
	maxDrainBytes = 64 << 10
)

// defaultClient is used by a [Sender] with no Client: it refuses every
// address a zero [Guard] refuses.
var defaultClient = sync.OnceValue(func() *http.Client {
	return (*Guard)(nil).Client(defaultClientTimeout)
})

// Sender POSTs signed JSON. Its fields are read, never written, by Send, so
// a Sender is safe for concurrent use once set up.
type Sender struct {
	// Client sends the requests. It should come from [Guard.Client]: any
	// other client may follow redirects or reach forbidden addresses.
	// Nil means a shared client from a zero Guard with a 30-second timeout.
	Client *http.Client
	// Keys sign every request, with the secrets of the job's tenant. It
	// is required: Send refuses to send unsigned callbacks.
	Keys *Keyring
	// UserAgent is the User-Agent header. Empty means "Sluice-Callback/1".
	UserAgent string
}

// Send POSTs body (application/json) to url with the Standard Webhooks
// headers for msgID at time now, signed with the tenant's secrets (see
// [Keyring]). It returns nil for a 2xx answer;
// otherwise an [*Error] saying what happened: the status code if an answer
// came, and whether it is worth retrying. Connection errors, timeouts,
// cancellation of ctx, 408, 429 and 5xx are retryable; a refused address
// (wrapping [ErrRefusedAddress]), a URL of the wrong form (wrapping
// [ErrRefusedURL]), a 3xx (the redirect is not followed), any other 4xx or
// other status, and missing Keys or a bad msgID are not.
func (s *Sender) Send(ctx context.Context, tenant, url, msgID string, body []byte, now time.Time) error {
	signer := s.Keys.Signer(tenant)
	if signer == nil || len(signer.keys) == 0 {
		return &Error{Err: errors.New("callback: sender has no signing secret")}
	}
	if err := checkMsgID(msgID); err != nil {
		return &Error{Err: err}
	}
	if _, err := parseCallbackURL(url); err != nil {
		return &Error{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return &Error{Err: fmt.Errorf("callback: building request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", cmp.Or(s.UserAgent, defaultUserAgent))
	signer.Headers(req.Header, msgID, now, body)

	client := s.Client
	if client == nil {
		client = defaultClient()
	}
	resp, err := client.Do(req)
	if err != nil {
		return &Error{Retryable: !errors.Is(err, ErrRefusedAddress), Err: err}
	}
	drain(resp.Body)
	return statusError(resp.StatusCode)
}

// checkMsgID refuses an ID that cannot be sent in a header or that
// receivers would not expect: it must be non-empty printable ASCII without
// spaces.
func checkMsgID(id string) error {
	if id == "" {
		return errors.New("callback: empty message ID")
	}
	if strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		return errors.New("callback: message ID must be printable ASCII without spaces")
	}
	return nil
}

// drain reads up to maxDrainBytes of body and closes it, so that the
// connection returns to the pool when the answer is small. Errors are
// ignored: the answer's status is all that matters, and a failed read
// only costs the connection.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxDrainBytes))
	_ = body.Close()
}

// statusError is the outcome of an answer with the given status.
func statusError(code int) error {
	switch {
	case code >= 200 && code <= 299:
		return nil
	case code >= 300 && code <= 399:
		return &Error{Status: code, Err: errors.New("redirect not followed; a callback URL must answer directly")}
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500 && code <= 599:
		return &Error{Status: code, Retryable: true, Err: errors.New(statusText(code))}
	default:
		return &Error{Status: code, Err: errors.New(statusText(code))}
	}
}

func statusText(code int) string {
	return cmp.Or(http.StatusText(code), "unexpected status")
}

// Error is a failed delivery. Callers find it with errors.As and decide
// from Retryable whether to try again later.
type Error struct {
	// Status is the HTTP status of the answer; zero if none arrived.
	Status int
	// Retryable says whether the same delivery might succeed later.
	Retryable bool
	// Err says what went wrong: the transport's error, or a description
	// of the answer.
	Err error
}

// Error describes the failure, its status if any, and whether it is
// retryable.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("callback: delivery failed")
	if e.Status != 0 {
		fmt.Fprintf(&b, " with status %d", e.Status)
	}
	if e.Retryable {
		b.WriteString(" (retryable)")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }
