package callback_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/callback"
)

// The Standard Webhooks reference vector, as used by the reference
// libraries' own tests.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// Other well-formed secrets, 32 key bytes each.
var (
	secretA = testSecret('a')
	secretB = testSecret('b')
	secretC = testSecret('c')
)

func testSecret(fill byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(fill), 32)))
}

func mustSigner(tb testing.TB, secrets ...string) *callback.Signer {
	tb.Helper()
	s, err := callback.NewSigner(secrets)
	if err != nil {
		tb.Fatalf("NewSigner: %v", err)
	}
	return s
}

func TestSignerMatchesReferenceVector(t *testing.T) {
	s := mustSigner(t, vectorSecret)
	ts := time.Unix(vectorTimestamp, 0)
	if got := s.Sign(vectorID, ts, []byte(vectorBody)); got != vectorSignature {
		t.Errorf("Sign = %q, want %q", got, vectorSignature)
	}

	h := http.Header{}
	s.Headers(h, vectorID, ts, []byte(vectorBody))
	want := map[string]string{
		"webhook-id":        vectorID,
		"webhook-timestamp": "1614265330",
		"webhook-signature": vectorSignature,
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if err := callback.Verify(vectorSecret, h, []byte(vectorBody), time.Minute, ts.Add(30*time.Second)); err != nil {
		t.Errorf("Verify of reference vector: %v", err)
	}
}

func TestNewSignerRejects(t *testing.T) {
	short := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23))
	tests := []struct {
		name    string
		secrets []string
		want    string // in the error text
	}{
		{"none", nil, "at least one"},
		{"no prefix", []string{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, `"whsec_"`},
		{"bad base64", []string{"whsec_not*base64!"}, "base64"},
		{"empty key", []string{"whsec_"}, "at least 24"},
		{"short key", []string{short}, "23 bytes"},
		{"second one bad", []string{secretA, "whsec_%%%"}, "secret 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := callback.NewSigner(tt.secrets)
			if err == nil {
				t.Fatalf("NewSigner = %v, want error", s)
			}
			if !strings.HasPrefix(err.Error(), "callback: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to start with \"callback: \" and contain %q", err, tt.want)
			}
		})
	}
}

func TestRotationSignsWithEverySecret(t *testing.T) {
	s := mustSigner(t, secretA, secretB)
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"job":"j1"}`)
	h := http.Header{}
	s.Headers(h, "msg_1", now, body)

	sigs := strings.Fields(h.Get("webhook-signature"))
	if len(sigs) != 2 || sigs[0] == sigs[1] {
		t.Fatalf("webhook-signature = %q, want two different signatures", h.Get("webhook-signature"))
	}
	for _, sig := range sigs {
		if !strings.HasPrefix(sig, "v1,") {
			t.Errorf("signature %q lacks v1 prefix", sig)
		}
	}
	for _, secret := range []string{secretA, secretB} {
		if err := callback.Verify(secret, h, body, time.Minute, now); err != nil {
			t.Errorf("Verify with a rotated secret: %v", err)
		}
	}
	if err := callback.Verify(secretC, h, body, time.Minute, now); !errors.Is(err, callback.ErrBadSignature) {
		t.Errorf("Verify with an unrelated secret = %v, want ErrBadSignature", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	s := mustSigner(t, secretA)
	ts := time.Unix(1_700_000_000, 0)
	body := []byte(`{"job":"j1"}`)
	signed := func() http.Header {
		h := http.Header{}
		s.Headers(h, "msg_1", ts, body)
		return h
	}

	tests := []struct {
		name      string
		secret    string
		header    func(h http.Header)
		body      string
		now       time.Time
		tolerance time.Duration
		want      error
	}{
		{name: "wrong secret", secret: secretB, want: callback.ErrBadSignature},
		{name: "tampered body", body: `{"job":"j2"}`, want: callback.ErrBadSignature},
		{name: "tampered id", header: func(h http.Header) { h.Set("webhook-id", "msg_2") }, want: callback.ErrBadSignature},
		{name: "tampered timestamp", header: func(h http.Header) { h.Set("webhook-timestamp", "1700000001") }, want: callback.ErrBadSignature},
		{name: "missing signature", header: func(h http.Header) { h.Del("webhook-signature") }, want: callback.ErrBadSignature},
		{name: "missing id", header: func(h http.Header) { h.Del("webhook-id") }, want: callback.ErrBadSignature},
		{name: "missing timestamp", header: func(h http.Header) { h.Del("webhook-timestamp") }, want: callback.ErrBadSignature},
		{name: "other version only", header: func(h http.Header) {
			h.Set("webhook-signature", strings.Replace(h.Get("webhook-signature"), "v1,", "v1a,", 1))
		}, want: callback.ErrBadSignature},
		{name: "stale", now: ts.Add(6 * time.Minute), tolerance: 5 * time.Minute, want: callback.ErrStaleTimestamp},
		{name: "stale by default tolerance", now: ts.Add(5*time.Minute + time.Second), want: callback.ErrStaleTimestamp},
		{name: "future", now: ts.Add(-2 * time.Minute), tolerance: time.Minute, want: callback.ErrStaleTimestamp},
		{name: "accepted at edge of tolerance", now: ts.Add(time.Minute), tolerance: time.Minute},
		{name: "accepted among junk", header: func(h http.Header) {
			h.Set("webhook-signature", "v2,abc v1,!!! v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32))+" "+h.Get("webhook-signature"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := signed()
			if tt.header != nil {
				tt.header(h)
			}
			secret := cmpOr(tt.secret, secretA)
			b := cmpOr(tt.body, string(body))
			now := tt.now
			if now.IsZero() {
				now = ts
			}
			err := callback.Verify(secret, h, []byte(b), tt.tolerance, now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyRejectsMalformedSecret(t *testing.T) {
	h := http.Header{}
	mustSigner(t, secretA).Headers(h, "msg_1", time.Unix(1, 0), nil)
	err := callback.Verify("plain-secret", h, nil, time.Minute, time.Unix(1, 0))
	if err == nil || errors.Is(err, callback.ErrBadSignature) {
		t.Fatalf("Verify with malformed secret = %v, want a secret error", err)
	}
}

func TestZeroSignerSignsNothing(t *testing.T) {
	var s callback.Signer
	if got := s.Sign("msg_1", time.Unix(1, 0), nil); got != "" {
		t.Errorf("zero Signer Sign = %q, want empty", got)
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
