package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// Each tenant's callbacks are signed with secrets of its own, so that no
// tenant's receiver can check, or forge, another's (#19 item 4).

// testSecret is a "whsec_" secret whose key is 32 bytes of b.
func testSecret(b byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

// deriveTenantSecret is the derivation the README documents, written out
// independently of the code under test: HMAC-SHA256, keyed with the
// gateway secret's key, of "sluice-callback-tenant:" and the tenant's name.
func deriveTenantSecret(t *testing.T, gatewaySecret, tenant string) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(gatewaySecret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("sluice-callback-tenant:" + tenant))
	return "whsec_" + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// submitWithCallback submits a job as the tenant with key and returns its ID.
func submitWithCallback(t *testing.T, g *testGateway, key, callbackURL string) string {
	t.Helper()
	code, _, body := call(t, "POST", g.base+"/v1/functions/f/jobs", key, `{"n":1}`, "Sluice-Callback-Url", callbackURL)
	if code != 202 {
		t.Fatalf("submit with callback to %s: %d %s", callbackURL, code, body)
	}
	var job jobJSON
	if err := json.Unmarshal(body, &job); err != nil {
		t.Fatal(err)
	}
	return job.ID
}

// waitCallbacks waits until r has accepted ok callbacks and refused bad
// ones, and returns what it accepted.
func waitCallbacks(t *testing.T, name string, r *receiver, ok, bad int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, _, refused := r.events()
		if len(got) > ok || len(refused) > bad {
			t.Fatalf("%s: accepted %d callbacks (want %d), refused %d (want %d): %v", name, len(got), ok, len(refused), bad, refused)
		}
		if len(got) == ok && len(refused) == bad {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: accepted %d callbacks (want %d), refused %d (want %d) after 15s: %v", name, len(got), ok, len(refused), bad, refused)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jobOf(t *testing.T, event map[string]any) (id, tenant string) {
	t.Helper()
	data, _ := event["data"].(map[string]any)
	id, _ = data["id"].(string)
	tenant, _ = data["tenant"].(string)
	return id, tenant
}

// TestCallbackSecretsDerivedPerTenant: tenants without secrets of their own
// get one derived from the gateway's. A tenant that points its callback at
// another tenant's receiver gets it refused there, and the gateway's own
// secret, which receivers held when every tenant shared it, checks no
// tenant's callback.
func TestCallbackSecretsDerivedPerTenant(t *testing.T) {
	gatewaySecret := testSecret(7)
	acmeSecret, boltSecret := deriveTenantSecret(t, gatewaySecret, "acme"), deriveTenantSecret(t, gatewaySecret, "bolt")
	acme, bolt, shared := &receiver{secret: acmeSecret}, &receiver{secret: boltSecret}, &receiver{secret: gatewaySecret}
	acmeSrv, boltSrv, sharedSrv := httptest.NewServer(acme), httptest.NewServer(bolt), httptest.NewServer(shared)
	defer acmeSrv.Close()
	defer boltSrv.Close()
	defer sharedSrv.Close()

	_, fnURL := startFunction(t, fnsim.Config{})
	g := startCallbackTenantGateway(t, fnURL, `
callbacks:
  secrets: [`+gatewaySecret+`]
  allow_cidrs: [127.0.0.0/8]
`)

	// While one secret signed every tenant's callbacks, every tenant's
	// receiver held it: acme could aim a callback at bolt's receiver and
	// have it accepted. The gateway's secret now checks no tenant's.
	submitWithCallback(t, g, keyA, sharedSrv.URL)
	submitWithCallback(t, g, keyB, sharedSrv.URL)
	waitCallbacks(t, "a receiver holding the gateway's secret, as every tenant's did", shared, 0, 2)

	acmeJob := submitWithCallback(t, g, keyA, acmeSrv.URL)
	boltJob := submitWithCallback(t, g, keyB, boltSrv.URL)
	if got := waitCallbacks(t, "acme's receiver, acme's callback", acme, 1, 0); !sameJob(t, got[0], acmeJob, "acme") {
		t.Errorf("acme's receiver got %v, want job %s of acme", got[0], acmeJob)
	}
	if got := waitCallbacks(t, "bolt's receiver, bolt's callback", bolt, 1, 0); !sameJob(t, got[0], boltJob, "bolt") {
		t.Errorf("bolt's receiver got %v, want job %s of bolt", got[0], boltJob)
	}

	// acme aims its callback at bolt's receiver: bolt's secret does not
	// check it, so bolt's receiver refuses it.
	submitWithCallback(t, g, keyA, boltSrv.URL)
	waitCallbacks(t, "bolt's receiver, acme's callback", bolt, 1, 1)

}

func sameJob(t *testing.T, event map[string]any, id, tenant string) bool {
	gotID, gotTenant := jobOf(t, event)
	return gotID == id && gotTenant == tenant
}

// startCallbackTenantGateway runs a gateway with function f and the
// tenants acme (keyA) and bolt (keyB), reading its callbacks and tenants
// from YAML as `sluice serve` does; extra is appended to the file, and
// acmeExtra to acme's entry.
func startCallbackTenantGateway(t *testing.T, fnURL, extra string, acmeExtra ...string) *testGateway {
	t.Helper()
	cfg, err := config.ParseConfig([]byte(callbackTenantYAML(fnURL, extra, acmeExtra...)))
	if err != nil {
		t.Fatal(err)
	}
	return startTestGatewayConfig(t, t.TempDir(), cfg)
}

func callbackTenantYAML(fnURL, extra string, acmeExtra ...string) string {
	return `
functions:
  - name: f
    url: ` + fnURL + `
tenants:
  - name: acme
    api_keys: [` + gateway.HashKey(keyA) + `]
` + strings.Join(acmeExtra, "\n") + `
  - name: bolt
    api_keys: [` + gateway.HashKey(keyB) + `]
` + extra
}

// TestCallbackSecretsOwnAndRotation: a tenant given callback_secrets signs
// with those, every one during a rotation; a tenant without them follows
// the rotation of the gateway's secrets.
func TestCallbackSecretsOwnAndRotation(t *testing.T) {
	newGateway, oldGateway := testSecret(1), testSecret(2)
	newAcme, oldAcme := testSecret(3), testSecret(4)
	acme := &receiver{secret: oldAcme}                                      // has not rotated yet
	bolt := &receiver{secret: deriveTenantSecret(t, oldGateway, "bolt")}    // nor has bolt
	boltNew := &receiver{secret: deriveTenantSecret(t, newGateway, "bolt")} // one that has
	acmeSrv, boltSrv, boltNewSrv := httptest.NewServer(acme), httptest.NewServer(bolt), httptest.NewServer(boltNew)
	defer acmeSrv.Close()
	defer boltSrv.Close()
	defer boltNewSrv.Close()

	_, fnURL := startFunction(t, fnsim.Config{})
	g := startCallbackTenantGateway(t, fnURL, `
callbacks:
  secrets: [`+newGateway+`, `+oldGateway+`]
  allow_cidrs: [127.0.0.0/8]
`, `    callback_secrets: [`+newAcme+`, `+oldAcme+`]`)

	submitWithCallback(t, g, keyA, acmeSrv.URL)
	submitWithCallback(t, g, keyB, boltSrv.URL)
	submitWithCallback(t, g, keyB, boltNewSrv.URL)
	waitCallbacks(t, "acme's receiver with its old secret", acme, 1, 0)
	waitCallbacks(t, "bolt's receiver with the old derived secret", bolt, 1, 0)
	waitCallbacks(t, "bolt's receiver with the new derived secret", boltNew, 1, 0)

	// acme's own secrets replace the derived ones: a receiver holding
	// acme's derived secret checks nothing of acme's.
	derived := &receiver{secret: deriveTenantSecret(t, newGateway, "acme")}
	derivedSrv := httptest.NewServer(derived)
	defer derivedSrv.Close()
	submitWithCallback(t, g, keyA, derivedSrv.URL)
	waitCallbacks(t, "a receiver with acme's derived secret", derived, 0, 1)
}

// TestCallbackSecretCommand: `sluice callback-secret` prints what a
// tenant's receivers need, one secret a line in signing order.
func TestCallbackSecretCommand(t *testing.T) {
	newGateway, oldGateway := testSecret(1), testSecret(2)
	own := testSecret(3)
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	yaml := callbackTenantYAML("http://127.0.0.1:9/", "callbacks:\n  secrets: ["+newGateway+", "+oldGateway+"]\n", "    callback_secrets: ["+own+"]")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		tenant, want string
	}{
		{"bolt", deriveTenantSecret(t, newGateway, "bolt") + "\n" + deriveTenantSecret(t, oldGateway, "bolt") + "\n"},
		{"acme", own + "\n"},
	} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), []string{"callback-secret", "--config", path, "--tenant", tt.tenant}, &out, &errOut); err != nil {
			t.Fatalf("callback-secret --tenant %s: %v (%s)", tt.tenant, err, errOut.String())
		}
		if out.String() != tt.want {
			t.Errorf("callback-secret --tenant %s printed %q, want %q", tt.tenant, out.String(), tt.want)
		}
	}
	for _, args := range [][]string{
		{"callback-secret", "--config", path},                          // no tenant
		{"callback-secret", "--config", path, "--tenant", "Not Valid"}, // not a tenant name
		{"callback-secret", "--tenant", "acme"},                        // no config
		{"callback-secret", "--config", path, "--tenant", "acm"},       // not a tenant of the file: a typo
	} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), args, &out, &errOut); err == nil || out.Len() > 0 {
			t.Errorf("%v: printed %q, err %v; want an error and nothing printed", args, out.String(), err)
		}
	}
}

func TestParseConfigTenantCallbackSecrets(t *testing.T) {
	gw, own := testSecret(1), testSecret(3)
	for _, tt := range []struct {
		name, callbacks, acme, want string
	}{
		{"empty", "callbacks: {secrets: [" + gw + "]}\n", "    callback_secrets: []", "tenants[0] (acme).callback_secrets: empty: leave it out"},
		{"without the gateway's", "", "    callback_secrets: [" + own + "]", "tenants[0] (acme).callback_secrets: given without callbacks.secrets"},
		{"malformed", "callbacks: {secrets: [" + gw + "]}\n", "    callback_secrets: [" + own + ", whsec_c2hvcnQ=]", "tenants[0] (acme).callback_secrets: callback: signing secret 2: key is 5 bytes"},
		{"the gateway's own", "callbacks: {secrets: [" + gw + "]}\n", "    callback_secrets: [" + gw + "]", `tenant "acme"'s signing secret 1 is the same as the gateway's signing secret 1`},
		{"bolt's derived one", "callbacks: {secrets: [" + gw + "]}\n", "    callback_secrets: [" + deriveTenantSecret(t, gw, "bolt") + "]", `tenant "bolt"'s derived secret 1 is the same as tenant "acme"'s signing secret 1`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.ParseConfig([]byte(callbackTenantYAML("http://127.0.0.1:9/", tt.callbacks, tt.acme)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one saying %q", err, tt.want)
			}
			if strings.Contains(err.Error(), strings.TrimPrefix(own, "whsec_")) || strings.Contains(err.Error(), strings.TrimPrefix(gw, "whsec_")) {
				t.Errorf("error %q shows a secret", err)
			}
		})
	}
}
