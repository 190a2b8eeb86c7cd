package delivery_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/callbacks"
	"github.com/sluicehq/sluice/callback"
	"github.com/sluicehq/sluice/callback/delivery"
	"github.com/sluicehq/sluice/dispatch/retry"
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

	finishJobs(t, q, 1)
	guard, err := callback.NewGuard([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := delivery.New(delivery.Config{
		Source:  q,
		Sender:  &callback.Sender{Client: guard.Client(time.Second), Keys: keys},
		Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, d.Run, nil)
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

// One tenant's receivers that never answer must not hold up another
// tenant's callbacks: each tenant has a share of the deliveries in
// flight, and callbacks waiting for a retry hold no delivery. (#19 item 1)
func TestSilentReceiversHoldUpOnlyTheirTenant(t *testing.T) {
	release := make(chan struct{})
	var silentCalls atomic.Int32
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		silentCalls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(silent.Close) // after the deliverer stops, which releases its requests
	answered := make(chan string, 100)
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answered <- r.Header.Get("webhook-id")
	}))
	defer good.Close()

	q := buffertest.Queue(t, buffer.Config{})
	submitWith := func(tenant, url string, n int) (ids []string) {
		for range n {
			job, err := q.Submit(t.Context(), "f", []byte("x"), "text/plain", buffer.WithTenant(tenant), buffer.WithCallback(url))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, job.Id)
		}
		return ids
	}
	noisy := submitWith("noisy", silent.URL, 20)
	finishJobs(t, q, 4)
	// Each silent attempt takes the whole timeout; every one of the noisy
	// tenant's is then retried after a backoff.
	startCallbacks(t, delivery.Config{
		Source:      q,
		Timeout:     10 * time.Second,
		Retry:       retry.Policy{MaxAttempts: 10, InitialBackoff: 5 * time.Second, MaxBackoff: 5 * time.Second},
		Concurrency: 4,
	}, func() { close(release) })
	// The noisy tenant's callbacks are stored and taken first.
	for _, id := range noisy {
		buffertest.WaitForNoError(t, 10*time.Second, "job "+id+" finished", func() error {
			job, err := q.Get(t.Context(), id)
			if err == nil && !buffer.Terminal(job.State) {
				err = fmt.Errorf("%v", job.State)
			}
			return err
		})
	}
	buffertest.WaitFor(t, 10*time.Second, "a noisy callback held by its silent receiver", func() bool { return silentCalls.Load() > 0 })
	submitWith("quiet", good.URL, 5)
	deadline := time.After(5 * time.Second)
	for n := range 5 {
		select {
		case <-answered:
		case <-deadline:
			t.Fatalf("%d of the quiet tenant's 5 callbacks delivered in 5s; the noisy tenant's silent receiver held up the rest", n)
		}
	}
}
