package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/callbacks"

	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// A tenant's view of a function shows nothing of other tenants': not the
// pool members it may not use, not counts of every tenant's jobs (#19
// item 16).
func TestTenantSeesOnlyItsOwnFunctionState(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{
			{Name: "f", URL: fnURL, Pool: "p"},
			{Name: "hidden", URL: fnURL, Pool: "p"},
		},
		Pools: []config.PoolConfig{{Name: "p", Concurrency: 4}},
		Tenants: []config.TenantConfig{
			{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}},
			{Name: "bolt", APIKeys: []string{gateway.HashKey(keyB)}, Functions: []string{"f"}},
		},
	})
	code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", keyA, `{}`)
	if code != http.StatusAccepted {
		t.Fatalf("acme's submit: %d %s", code, body)
	}
	if j := waitRESTKey(t, g, keyA, decodeJob(t, body).ID, 10*time.Second); j.State != "SUCCEEDED" {
		t.Fatalf("acme's job ended %s", j.State)
	}
	type member struct {
		Function string `json:"function"`
	}
	var fn struct {
		Status struct {
			Succeeded    string `json:"succeeded"`
			DeadLettered string `json:"deadLettered"`
			Retries      string `json:"retries"`
			Pool         struct {
				Members []member `json:"members"`
			} `json:"pool"`
		} `json:"status"`
	}
	// The pool's leader writes its members, and dispatch its counts, a
	// moment after.
	buffertest.WaitForNoError(t, 10*time.Second, "acme's view of f showing both pool members, which acme may use, and acme's job counted", func() error {
		code, _, body = call(t, http.MethodGet, g.Base+"/v1/functions/f", keyA, "")
		if err := json.Unmarshal(body, &fn); code != http.StatusOK || err != nil {
			t.Fatalf("acme's GET function: %d %s (%v)", code, body, err)
		}
		p, err := g.Queue().Pacing(t.Context(), "f")
		if err != nil {
			t.Fatal(err)
		}
		if len(fn.Status.Pool.Members) != 2 || p.Counts.Succeeded != 1 {
			return fmt.Errorf("acme's view of f: %s, succeeded %d", body, p.Counts.Succeeded)
		}
		return nil
	})
	code, _, body = call(t, http.MethodGet, g.Base+"/v1/functions/f", keyB, "")
	fn.Status.Pool.Members = nil
	if err := json.Unmarshal(body, &fn); code != http.StatusOK || err != nil {
		t.Fatalf("bolt's GET function: %d %s (%v)", code, body, err)
	}
	if len(fn.Status.Pool.Members) != 1 || fn.Status.Pool.Members[0].Function != "f" || strings.Contains(string(body), "hidden") {
		t.Errorf("bolt's view of f's pool: %s; want only f among its members: bolt may not use hidden", body)
	}
	shown := func(v string) bool { return v != "" && v != "0" }
	if shown(fn.Status.Succeeded) || shown(fn.Status.DeadLettered) || shown(fn.Status.Retries) {
		t.Errorf("bolt's view of f counts acme's jobs: succeeded %q, dead-lettered %q, retries %q; want none shown", fn.Status.Succeeded, fn.Status.DeadLettered, fn.Status.Retries)
	}
}

// /readyz says why it is not ready in words fit for anyone who can reach
// it; the detail goes to the log (#19 item 16).
func TestReadyzKeepsInternalErrorsToTheLog(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "f", URL: fnURL})
	if resp, body := get(t, g.Base+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	js, err := jetstream.New(g.NATS())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, callbacks.Stream); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, g.Base+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with a stream gone: %d %s; want 503", resp.StatusCode, body)
	}
	for _, internal := range []string{callbacks.Stream, "nats", "stream", "buffer:"} {
		if strings.Contains(string(body), internal) {
			t.Errorf("/readyz answered %q: internal detail (%q) for anyone who can reach it", body, internal)
		}
	}
}

// The REST server's metrics take no label value from what a client sends
// as Host: each new one would be a new series (#19 item 16).
func TestHTTPMetricsIgnoreTheHostHeader(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "f", URL: fnURL})
	for i := range 5 {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, g.Base+"/v1/functions", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = fmt.Sprintf("made-up-%d.example:%d", i, 1000+i)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var series, bad int
	var example string
	for k := range scrape(t, g) {
		if !strings.HasPrefix(k, "http_server_") {
			continue
		}
		series++
		if strings.Contains(k, "made-up") || strings.Contains(k, `server_port="100`) {
			bad, example = bad+1, k
		}
	}
	if series == 0 {
		t.Fatal("no http_server_ series to check")
	}
	if bad > 0 {
		t.Errorf("%d of %d REST metric series carry a client's Host, such as %s", bad, series, example)
	}
}
