package callback_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/callback"
)

func mustKeyring(tb testing.TB, gateway []string, tenants map[string][]string) *callback.Keyring {
	tb.Helper()
	k, err := callback.NewKeyring(gateway, tenants)
	if err != nil {
		tb.Fatalf("NewKeyring: %v", err)
	}
	return k
}

// derived is the documented derivation, written out independently:
// HMAC-SHA256(gateway key, "sluice-callback-tenant:" + tenant).
func derived(tb testing.TB, gatewaySecret, tenant string) string {
	tb.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(gatewaySecret, "whsec_"))
	if err != nil {
		tb.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("sluice-callback-tenant:" + tenant))
	return "whsec_" + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// signedBy signs body as the keyring signs the tenant's callbacks.
func signedBy(k *callback.Keyring, tenant string, body []byte, now time.Time) http.Header {
	h := http.Header{}
	k.Signer(tenant).Headers(h, "msg_1", now, body)
	return h
}

func TestKeyringTenantsDoNotVerifyEachOther(t *testing.T) {
	now := time.Now()
	body := []byte(`{"type":"job.succeeded","data":{"tenant":"a"}}`)
	k := mustKeyring(t, []string{secretA}, map[string][]string{"a": nil, "b": nil, "c": {secretC}})
	secrets := map[string]string{
		"":  secretA,
		"a": derived(t, secretA, "a"),
		"b": derived(t, secretA, "b"),
		"c": secretC,
	}
	for tenant, want := range secrets {
		if got := k.Secrets(tenant); len(got) != 1 || got[0] != want {
			t.Errorf("Secrets(%q) = %v, want [%s]", tenant, got, want)
		}
	}
	for signer := range secrets {
		h := signedBy(k, signer, body, now)
		for holder, secret := range secrets {
			err := callback.Verify(secret, h, body, time.Minute, now)
			switch {
			case signer == holder && err != nil:
				t.Errorf("tenant %q's callback does not verify with its own secret: %v", signer, err)
			case signer != holder && !errors.Is(err, callback.ErrBadSignature):
				t.Errorf("tenant %q's callback verified with tenant %q's secret: %v", signer, holder, err)
			}
		}
	}
	// A tenant not configured (say, removed while its callbacks wait) is
	// still derived, never signed with the gateway's secret.
	if got := k.Secrets("gone"); len(got) != 1 || got[0] != derived(t, secretA, "gone") {
		t.Errorf("Secrets(gone) = %v, want the derived secret", got)
	}
}

func TestKeyringDefaultTenantUnchanged(t *testing.T) {
	// Tenant "" signs exactly as a Signer of the gateway's secrets did:
	// the Standard Webhooks reference vector.
	k := mustKeyring(t, []string{vectorSecret}, map[string][]string{"a": nil})
	if got := k.Signer("").Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody)); got != vectorSignature {
		t.Errorf("tenant \"\" signs %q, want the reference %q", got, vectorSignature)
	}
	if got := k.Signer("a").Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody)); got == vectorSignature {
		t.Error("tenant a signs with the gateway's secret")
	}
}

func TestKeyringRotation(t *testing.T) {
	now := time.Now()
	body := []byte(`{}`)
	// The gateway rotates from B to A (the new one first), tenant c from
	// its old secret to a new one; d follows the gateway.
	newOwn, oldOwn := testSecret('n'), testSecret('o')
	k := mustKeyring(t, []string{secretA, secretB}, map[string][]string{"d": nil, "c": {newOwn, oldOwn}})
	for _, tt := range []struct {
		tenant  string
		secrets []string
	}{
		{"", []string{secretA, secretB}},
		{"d", []string{derived(t, secretA, "d"), derived(t, secretB, "d")}},
		{"c", []string{newOwn, oldOwn}},
	} {
		if got := k.Secrets(tt.tenant); strings.Join(got, " ") != strings.Join(tt.secrets, " ") {
			t.Errorf("Secrets(%q) = %v, want %v, in signing order", tt.tenant, got, tt.secrets)
		}
		h := signedBy(k, tt.tenant, body, now)
		if n := len(strings.Fields(h.Get("webhook-signature"))); n != 2 {
			t.Errorf("tenant %q: %d signatures, want one per secret (2)", tt.tenant, n)
		}
		for _, s := range tt.secrets {
			if err := callback.Verify(s, h, body, time.Minute, now); err != nil {
				t.Errorf("tenant %q: a receiver with one of its secrets refused: %v", tt.tenant, err)
			}
		}
	}
}

func TestNewKeyringRefuses(t *testing.T) {
	for _, tt := range []struct {
		name    string
		gateway []string
		tenants map[string][]string
		want    string
	}{
		{"no gateway secret", nil, map[string][]string{"a": {secretA}}, "at least one signing secret"},
		{"bad tenant secret", []string{secretA}, map[string][]string{"a": {"whsec_c2hvcnQ="}}, `tenant "a"'s signing secret 1: key is`},
		{"tenant \"\"", []string{secretA}, map[string][]string{"": {secretB}}, `tenant "" signs with the gateway's secrets`},
		{"a tenant's secret is the gateway's", []string{secretA}, map[string][]string{"a": {secretB, secretA}}, `tenant "a"'s signing secret 2 is the same as the gateway's signing secret 1`},
		{"two tenants share a secret", []string{secretA}, map[string][]string{"a": {secretB}, "b": {secretC, secretB}}, `tenant "b"'s signing secret 2 is the same as tenant "a"'s signing secret 1`},
		{"a tenant's secret is another's derived one", []string{secretA}, map[string][]string{"a": nil, "b": {derived(t, secretA, "a")}}, `tenant "b"'s signing secret 1 is the same as tenant "a"'s derived secret 1`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := callback.NewKeyring(tt.gateway, tt.tenants)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewKeyring = %v, want an error saying %q", err, tt.want)
			}
			for _, secrets := range tt.tenants {
				for _, s := range secrets {
					if strings.Contains(err.Error(), strings.TrimPrefix(s, "whsec_")) {
						t.Errorf("error %q shows a secret", err)
					}
				}
			}
		})
	}
	var zero callback.Keyring
	if zero.Signer("a") != nil || zero.Secrets("a") != nil {
		t.Error("the zero Keyring has secrets")
	}
}

func TestSenderSignsForTheTenant(t *testing.T) {
	k := mustKeyring(t, []string{secretA}, map[string][]string{"a": nil, "b": nil})
	recvA, srvA := newReceiver(t, derived(t, secretA, "a"))
	recvB, srvB := newReceiver(t, derived(t, secretA, "b"))
	s := &callback.Sender{Client: mustGuard(t, "127.0.0.0/8").Client(5 * time.Second), Keys: k}
	ctx := context.Background()
	for _, d := range []struct {
		tenant string
		url    string
	}{{"a", srvA.URL}, {"b", srvB.URL}, {"a", srvB.URL}} {
		if err := s.Send(ctx, d.tenant, d.url, "msg_1", []byte(`{}`), time.Now()); err != nil {
			t.Fatalf("Send as %s: %v", d.tenant, err)
		}
	}
	recvA.mu.Lock()
	defer recvA.mu.Unlock()
	recvB.mu.Lock()
	defer recvB.mu.Unlock()
	if recvA.requests != 1 || len(recvA.verifyErr) != 0 {
		t.Errorf("a's receiver: %d requests, errors %v; want its one callback verified", recvA.requests, recvA.verifyErr)
	}
	if recvB.requests != 2 || len(recvB.verifyErr) != 1 || !errors.Is(recvB.verifyErr[0], callback.ErrBadSignature) {
		t.Errorf("b's receiver: %d requests, errors %v; want b's verified and a's refused", recvB.requests, recvB.verifyErr)
	}
}

// mustKeys is a keyring of the gateway's secrets alone, signing tenant ""
// as a Signer of them does.
func mustKeys(tb testing.TB, secrets ...string) *callback.Keyring {
	tb.Helper()
	return mustKeyring(tb, secrets, nil)
}
