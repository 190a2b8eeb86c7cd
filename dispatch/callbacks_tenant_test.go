package dispatch_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/callbacks"
	"github.com/sluicehq/sluice/callback"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/target"
)

// tenantHook records, per call, which of the named secrets verify it.
type tenantHook struct {
	secrets map[string]string
	calls   chan map[string]bool
}

func (h *tenantHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ok := make(map[string]bool)
	for name, s := range h.secrets {
		ok[name] = callback.Verify(s, r.Header, body, time.Minute, time.Now()) == nil
	}
	h.calls <- ok
}

// TestCallbackSignedWithItsTenantsSecret: the deliverer signs each stored
// callback with its job's tenant's secrets, also a callback stored before
// the tenant was kept beside it, and the tenant's alone.
func TestCallbackSignedWithItsTenantsSecret(t *testing.T) {
	srv := buffertest.Start(t, "")
	nc := srv.Connect(t)
	q, err := buffer.Open(t.Context(), nc, buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := callback.NewKeyring([]string{testSecret}, map[string][]string{"acme": nil, "bolt": nil})
	if err != nil {
		t.Fatal(err)
	}
	h := &tenantHook{
		secrets: map[string]string{"gateway": testSecret, "acme": keys.Secrets("acme")[0], "bolt": keys.Secrets("bolt")[0]},
		calls:   make(chan map[string]bool, 4),
	}
	hookSrv := httptest.NewServer(h)
	defer hookSrv.Close()
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
	defer fn.Close()

	if _, err := q.Submit(t.Context(), "f", []byte("x"), "text/plain", buffer.WithTenant("acme"), buffer.WithCallback(hookSrv.URL)); err != nil {
		t.Fatal(err)
	}
	// A callback as an older gateway stored it: the tenant only in the job.
	old := nats.NewMsg(callbacks.Prefix + "f.OLDJOB")
	old.Header.Set("Sluice-Callback-Url", hookSrv.URL)
	old.Header.Set("Sluice-Webhook-Id", "msg_OLDJOB_0")
	old.Data = []byte(`{"type":"job.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{"id":"OLDJOB","tenant":"bolt","state":"SUCCEEDED"}}`)
	if _, err := nc.RequestMsg(old, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	startDispatcher(t, q, dispatch.Function{Name: "f", Invoker: &target.HTTP{URL: fn.URL}, Concurrency: 1, Timeout: time.Second}, time.Second)
	guard, err := callback.NewGuard([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dispatch.NewCallbackDeliverer(dispatch.CallbackConfig{
		Source:  q,
		Sender:  &callback.Sender{Client: guard.Client(time.Second), Keys: keys},
		Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	seen := map[string]bool{}
	for range 2 {
		select {
		case ok := <-h.calls:
			switch {
			case ok["acme"] && !ok["bolt"] && !ok["gateway"]:
				seen["acme"] = true
			case ok["bolt"] && !ok["acme"] && !ok["gateway"]:
				seen["bolt"] = true
			default:
				t.Errorf("a callback verified with %v; want exactly its tenant's secret", ok)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("callbacks verified so far: %v; want acme's and the stored bolt's", seen)
		}
	}
	if !seen["acme"] || !seen["bolt"] {
		t.Errorf("callbacks verified: %v; want one of acme's and one of bolt's", seen)
	}
}
