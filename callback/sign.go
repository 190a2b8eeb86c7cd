package callback

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers.
const (
	headerID        = "webhook-id"
	headerTimestamp = "webhook-timestamp"
	headerSignature = "webhook-signature"
)

const (
	// secretPrefix starts every secret in the Standard Webhooks form.
	secretPrefix = "whsec_"
	// minKeyBytes is the shortest key accepted; the specification asks for
	// 24 to 64 bytes.
	minKeyBytes = 24
	// signatureVersion marks an HMAC-SHA256 signature.
	signatureVersion = "v1"
	// defaultTolerance is how far a timestamp may be from now when
	// [Verify] is given no tolerance: the reference libraries' five minutes.
	defaultTolerance = 5 * time.Minute
)

// Errors returned by [Verify].
var (
	// ErrBadSignature means no signature in the message matches the secret,
	// or the headers needed to check one are missing or malformed.
	ErrBadSignature = errors.New("callback: bad webhook signature")
	// ErrStaleTimestamp means the message's timestamp is too far from now,
	// in either direction, so it may be a replay.
	ErrStaleTimestamp = errors.New("callback: webhook timestamp outside tolerance")
)

// Signer signs webhook messages with one or more secrets (several during a
// rotation: every one signs, receivers accept any).
//
// Build one with [NewSigner]. The zero value has no secrets and signs
// nothing: [Signer.Sign] returns "". A Signer is immutable and safe for
// concurrent use.
type Signer struct {
	keys [][]byte
}

// NewSigner takes secrets in the Standard Webhooks form "whsec_" + base64
// (the raw key bytes), at least one. A secret without the prefix is
// rejected, as is one whose rest is not standard base64 or decodes to
// fewer than 24 bytes. Errors name the secret by position, never by value.
func NewSigner(secrets []string) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("callback: at least one signing secret is required")
	}
	keys := make([][]byte, 0, len(secrets))
	for i, secret := range secrets {
		key, err := decodeSecret(secret)
		if err != nil {
			return nil, fmt.Errorf("callback: signing secret %d: %w", i+1, err)
		}
		keys = append(keys, key)
	}
	return &Signer{keys: keys}, nil
}

// decodeSecret turns a "whsec_" secret into its key bytes. Its errors carry
// no package prefix: callers add one with context.
func decodeSecret(secret string) ([]byte, error) {
	encoded, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return nil, fmt.Errorf("must start with %q followed by the base64 key", secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, errors.New("the part after \"whsec_\" is not valid standard base64")
	}
	if len(key) < minKeyBytes {
		return nil, fmt.Errorf("key is %d bytes, want at least %d", len(key), minKeyBytes)
	}
	return key, nil
}

// Sign returns the webhook-signature header value:
// "v1,<base64(HMAC-SHA256(key, id+"."+unixSeconds+"."+body))>" for each
// key, space-separated, in the order the secrets were given.
func (s *Signer) Sign(id string, ts time.Time, body []byte) string {
	if s == nil {
		return ""
	}
	content := signedContent(id, ts.Unix(), body)
	sigs := make([]string, len(s.keys))
	for i, key := range s.keys {
		sigs[i] = signatureVersion + "," + base64.StdEncoding.EncodeToString(mac(key, content))
	}
	return strings.Join(sigs, " ")
}

// Headers sets webhook-id, webhook-timestamp (unix seconds) and
// webhook-signature on h.
func (s *Signer) Headers(h http.Header, id string, ts time.Time, body []byte) {
	h.Set(headerID, id)
	h.Set(headerTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(headerSignature, s.Sign(id, ts, body))
}

// Verify is what a receiver does: it checks that webhook-timestamp is
// within tolerance of now (zero means 5 minutes), and that at least one v1
// signature in webhook-signature matches secret (in the "whsec_" form),
// comparing in constant time. Signatures of other versions are ignored.
//
// It returns an error wrapping [ErrStaleTimestamp] for a timestamp too old
// or too far in the future, and one wrapping [ErrBadSignature] for missing
// or malformed headers or no matching signature. A malformed secret is an
// error wrapping neither.
func Verify(secret string, h http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	key, err := decodeSecret(secret)
	if err != nil {
		return fmt.Errorf("callback: verifying secret: %w", err)
	}
	if tolerance <= 0 {
		tolerance = defaultTolerance
	}
	id := h.Get(headerID)
	if id == "" {
		return fmt.Errorf("%w: missing %s header", ErrBadSignature, headerID)
	}
	unix, err := strconv.ParseInt(h.Get(headerTimestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: missing or invalid %s header", ErrBadSignature, headerTimestamp)
	}
	if err := checkTimestamp(time.Unix(unix, 0), now, tolerance); err != nil {
		return err
	}
	want := mac(key, signedContent(id, unix, body))
	for _, sig := range strings.Fields(h.Get(headerSignature)) {
		version, encoded, ok := strings.Cut(sig, ",")
		if !ok || version != signatureVersion {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: no v1 signature matches", ErrBadSignature)
}

// checkTimestamp returns an error wrapping [ErrStaleTimestamp] unless ts is
// within tolerance of now.
func checkTimestamp(ts, now time.Time, tolerance time.Duration) error {
	switch {
	case ts.Before(now.Add(-tolerance)):
		return fmt.Errorf("%w: %s is %s old", ErrStaleTimestamp, headerTimestamp, now.Sub(ts).Truncate(time.Second))
	case ts.After(now.Add(tolerance)):
		return fmt.Errorf("%w: %s is %s in the future", ErrStaleTimestamp, headerTimestamp, ts.Sub(now).Truncate(time.Second))
	}
	return nil
}

// signedContent is what the specification signs: id.timestamp.body.
func signedContent(id string, unix int64, body []byte) []byte {
	b := make([]byte, 0, len(id)+len(body)+22)
	b = append(b, id...)
	b = append(b, '.')
	b = strconv.AppendInt(b, unix, 10)
	b = append(b, '.')
	return append(b, body...)
}

func mac(key, content []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(content)
	return m.Sum(nil)
}
