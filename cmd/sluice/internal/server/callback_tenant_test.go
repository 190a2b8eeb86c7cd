package server_test

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// Each tenant's callbacks are signed with secrets of its own, so that no
// tenant's receiver can check, or forge, another's (#19 item 4).

// submitWithCallback submits a job as the tenant with key and returns its ID.
func submitWithCallback(t *testing.T, g *servertest.Gateway, key, callbackURL string) string {
	t.Helper()
	code, _, body := call(t, "POST", g.Base+"/v1/functions/f/jobs", key, `{"n":1}`, "Sluice-Callback-Url", callbackURL)
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
	var got []map[string]any
	buffertest.WaitForNoError(t, 15*time.Second, name, func() error {
		var refused []error
		got, _, refused = r.events()
		if len(got) > ok || len(refused) > bad {
			t.Fatalf("%s: accepted %d callbacks (want %d), refused %d (want %d): %v", name, len(got), ok, len(refused), bad, refused)
		}
		if len(got) == ok && len(refused) == bad {
			return nil
		}
		return fmt.Errorf("accepted %d callbacks (want %d), refused %d (want %d): %v", len(got), ok, len(refused), bad, refused)
	})
	return got
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
	gatewaySecret := servertest.CallbackSecret(7)
	acmeSecret, boltSecret := servertest.TenantCallbackSecret(t, gatewaySecret, "acme"), servertest.TenantCallbackSecret(t, gatewaySecret, "bolt")
	acme, bolt, shared := &receiver{secret: acmeSecret}, &receiver{secret: boltSecret}, &receiver{secret: gatewaySecret}
	acmeSrv, boltSrv, sharedSrv := httptest.NewServer(acme), httptest.NewServer(bolt), httptest.NewServer(shared)
	defer acmeSrv.Close()
	defer boltSrv.Close()
	defer sharedSrv.Close()

	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
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
func startCallbackTenantGateway(t *testing.T, fnURL, extra string, acmeExtra ...string) *servertest.Gateway {
	t.Helper()
	var cfg config.Config // defaults and checks are servertest's
	if err := yaml.Unmarshal([]byte(callbackTenantYAML(fnURL, extra, acmeExtra...)), &cfg); err != nil {
		t.Fatal(err)
	}
	return servertest.StartConfig(t, t.TempDir(), &cfg)
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
	newGateway, oldGateway := servertest.CallbackSecret(1), servertest.CallbackSecret(2)
	newAcme, oldAcme := servertest.CallbackSecret(3), servertest.CallbackSecret(4)
	acme := &receiver{secret: oldAcme}                                                   // has not rotated yet
	bolt := &receiver{secret: servertest.TenantCallbackSecret(t, oldGateway, "bolt")}    // nor has bolt
	boltNew := &receiver{secret: servertest.TenantCallbackSecret(t, newGateway, "bolt")} // one that has
	acmeSrv, boltSrv, boltNewSrv := httptest.NewServer(acme), httptest.NewServer(bolt), httptest.NewServer(boltNew)
	defer acmeSrv.Close()
	defer boltSrv.Close()
	defer boltNewSrv.Close()

	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
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
	derived := &receiver{secret: servertest.TenantCallbackSecret(t, newGateway, "acme")}
	derivedSrv := httptest.NewServer(derived)
	defer derivedSrv.Close()
	submitWithCallback(t, g, keyA, derivedSrv.URL)
	waitCallbacks(t, "a receiver with acme's derived secret", derived, 0, 1)
}

func TestParseConfigTenantCallbackSecrets(t *testing.T) {
	gw, own := servertest.CallbackSecret(1), servertest.CallbackSecret(3)
	for _, tt := range []struct {
		name, callbacks, acme, want string
	}{
		{"empty", "callbacks: {secrets: [" + gw + "]}\n", "    callback_secrets: []", "tenants[0] (acme).callback_secrets: empty: leave it out"},
		{"without the gateway's", "", "    callback_secrets: [" + own + "]", "tenants[0] (acme).callback_secrets: given without callbacks.secrets"},
		{"malformed", "callbacks: {secrets: [" + gw + "]}\n", "    callback_secrets: [" + own + ", whsec_c2hvcnQ=]", "tenants[0] (acme).callback_secrets: callback: signing secret 2: key is 5 bytes"},
		{"the gateway's own", "callbacks: {secrets: [" + gw + "]}\n", "    callback_secrets: [" + gw + "]", `tenant "acme"'s signing secret 1 is the same as the gateway's signing secret 1`},
		{"bolt's derived one", "callbacks: {secrets: [" + gw + "]}\n", "    callback_secrets: [" + servertest.TenantCallbackSecret(t, gw, "bolt") + "]", `tenant "bolt"'s derived secret 1 is the same as tenant "acme"'s signing secret 1`},
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
