package servertest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// CallbackSecret is a "whsec_" secret whose key is 32 bytes of b.
func CallbackSecret(b byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

// TenantCallbackSecret is the derivation the README documents, written out
// independently of the code under test: HMAC-SHA256, keyed with the
// gateway secret's key, of "sluice-callback-tenant:" and the tenant's name.
func TenantCallbackSecret(t testing.TB, gatewaySecret, tenant string) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(gatewaySecret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("sluice-callback-tenant:" + tenant))
	return "whsec_" + base64.StdEncoding.EncodeToString(m.Sum(nil))
}
