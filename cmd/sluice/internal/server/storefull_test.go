package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/gateway"
)

// TestStorageFilledByOneTenant limits JetStream's storage and lets one
// tenant fill it with large results: the other tenant's accepted jobs all
// finish, every accepted job reaches an end, and new submits are refused
// with a clear 503 and Retry-After. (#19 item 2)
func TestStorageFilledByOneTenant(t *testing.T) {
	const maxStore = 40 << 20
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Listen: true, MaxStore: maxStore})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	bigResult := bytes.Repeat([]byte("r"), 256<<10)
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(bigResult) }))
	defer big.Close()
	small := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(50 * time.Millisecond) // the function's work
		w.Write([]byte("ok"))
	}))
	defer small.Close()
	cfg := &config.Config{
		Functions: []config.FunctionConfig{{Name: "big", URL: big.URL, Concurrency: 8}, {Name: "small", URL: small.URL, Concurrency: 2}},
		Tenants: []config.TenantConfig{
			{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}},
			{Name: "bolt", APIKeys: []string{gateway.HashKey(keyB)}},
		},
		// 30 MiB of stores (and 8 MiB of pacing) on a 40 MiB JetStream.
		Buffer: config.BufferConfig{
			MaxBytes: 8 << 20, StateMaxBytes: 8 << 20, IdempotencyMaxBytes: 2 << 20,
			DeadLetterMaxBytes: 6 << 20, CallbackMaxBytes: 6 << 20,
		},
	}
	g := servertest.Start(t, t.TempDir(), cfg, server.Options{NATSURL: srv.ClientURL()})
	p := g.Gateway

	submit := func(key, function string) (code int, id, retryAfter, body string) {
		code, h, b := call(t, http.MethodPost, g.Base+"/v1/functions/"+function+"/jobs", key, `{"n":1}`)
		return code, strings.TrimPrefix(h.Get("Location"), "/v1/jobs/"), h.Get("Retry-After"), string(b)
	}
	// bolt's work is queued behind a slow function while acme floods.
	var boltJobs []string
	for range 20 {
		code, id, _, body := submit(keyB, "small")
		if code != http.StatusAccepted {
			t.Fatalf("bolt's submit: %d %s", code, body)
		}
		boltJobs = append(boltJobs, id)
	}
	var (
		mu       sync.Mutex
		acmeJobs []string
		refused  int
		lastBody string
	)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				code, id, retryAfter, body := submit(keyA, "big")
				mu.Lock()
				switch {
				case code == http.StatusAccepted:
					acmeJobs = append(acmeJobs, id)
				case code == http.StatusServiceUnavailable && retryAfter != "":
					refused++
					lastBody = body
				default:
					t.Errorf("acme's submit: %d (Retry-After %q) %s; want 202, or 503 with Retry-After", code, retryAfter, body)
					refused = 1000
				}
				stop := refused >= 20 || len(acmeJobs) > 2000
				mu.Unlock()
				if stop {
					return
				}
				if code != http.StatusAccepted {
					time.Sleep(100 * time.Millisecond) // as Retry-After bids, more or less
				}
			}
		})
	}
	wg.Wait()
	if refused < 20 {
		t.Fatalf("acme submitted %d jobs and was never refused: the stores never filled", len(acmeJobs))
	}
	t.Logf("acme: %d jobs accepted, then 503s such as %s", len(acmeJobs), strings.TrimSpace(lastBody))
	if !strings.Contains(lastBody, "job stores are full") {
		t.Errorf("503 body %q does not say what is full", lastBody)
	}
	if code, _, retryAfter, body := submit(keyB, "small"); code != http.StatusServiceUnavailable || retryAfter == "" {
		t.Errorf("bolt's new submit while the store is full: %d (Retry-After %q) %s; want 503 with Retry-After", code, retryAfter, body)
	}

	// Every accepted job ends; bolt's all succeed.
	for _, id := range boltJobs {
		if j := waitRESTKey(t, g, keyB, id, 30*time.Second); j.State != "SUCCEEDED" {
			t.Errorf("bolt's job %s = %s %q; want SUCCEEDED", id, j.State, j.Error)
		}
	}
	kept, lean := 0, 0
	for _, id := range acmeJobs {
		j := waitRESTKey(t, g, keyA, id, 60*time.Second)
		if j.State != "SUCCEEDED" {
			t.Errorf("acme's job %s = %s %q; want SUCCEEDED", id, j.State, j.Error)
			continue
		}
		if j.Notice != "" {
			lean++
		} else {
			kept++
		}
	}
	stores, err := p.Queue().Stores(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var fills []string
	for _, u := range stores {
		fills = append(fills, fmt.Sprintf("%s %d of %d bytes (%.0f%%)", u.Name, u.Bytes, u.MaxBytes, 100*u.Fill()))
	}
	t.Logf("acme's %d jobs all finished: %d with their result, %d with it left out (the state store past its high water); stores: %s",
		len(acmeJobs), kept, lean, strings.Join(fills, ", "))
	_, metrics := get(t, g.Base+"/metrics")
	for _, want := range [][2]string{
		{"sluice_store_fill_ratio{", `sluice_store="state"} 0.9`}, {"sluice_store_used_bytes{", `sluice_store="state"}`},
		{"sluice_store_limit_bytes{", `sluice_store="dead_letters"} 6.291456e+06`}, {"sluice_store_parked_finishes ", " 0"}, // no labels: no otel_scope_* either
	} {
		found := false
		for _, l := range strings.Split(string(metrics), "\n") {
			found = found || strings.HasPrefix(l, want[0]) && strings.Contains(l, want[1])
		}
		if !found {
			t.Errorf("/metrics has no %s…%s", want[0], want[1])
		}
	}
	_, body := get(t, g.Base+"/readyz")
	t.Logf("/readyz: %s", strings.ReplaceAll(strings.TrimSpace(string(body)), "\n", "; "))
	if !strings.Contains(string(body), "store state") {
		t.Errorf("/readyz = %q; want it to name the full state store", body)
	}
}
