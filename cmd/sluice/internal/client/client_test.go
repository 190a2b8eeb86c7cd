package client

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// clientKey is the API key of the tenant the client tests act as.
const clientKey = "key-of-tenant-acme-0123456789"

func TestClientCommands(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{Duration: 10 * time.Millisecond})
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(400) }))
	defer broken.Close()
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "echo", URL: fnURL, KeyConcurrency: 1}, {Name: "broken", URL: broken.URL}},
		Tenants:   []config.TenantConfig{{Name: "acme", APIKeys: []string{gateway.HashKey(clientKey)}}},
	})
	sluice := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(args, "--server", g.GRPCAddr.String(), "--api-key", clientKey)
		err := Run(t.Context(), args[0], args[1:], nil, &out, &errOut)
		return out.String(), err
	}

	out, err := sluice("submit", "echo", "--data", `{"hello":"world"}`, "--wait", "10s", "--json")
	var job struct {
		ID, State string
		Result    struct{ Body []byte }
	}
	if err != nil || json.Unmarshal([]byte(out), &job) != nil || job.State != "SUCCEEDED" || string(job.Result.Body) != `{"hello":"world"}` {
		t.Fatalf("submit --wait --json = %q, %v; want the job SUCCEEDED with the echo", out, err)
	}
	if out, err := sluice("get", job.ID); err != nil || !strings.Contains(out, job.ID+"  echo  SUCCEEDED  attempts 1") || !strings.Contains(out, "result: HTTP 200") {
		t.Errorf("get = %q, %v", out, err)
	}
	if out, err := sluice("submit", "echo", "--concurrency-key", "customer-42", "--priority", "high", "--wait", "10s"); err != nil ||
		!strings.Contains(out, "echo  SUCCEEDED") || !strings.Contains(out, "concurrency key: customer-42") {
		t.Errorf("submit --concurrency-key --priority = %q, %v; want the job SUCCEEDED with its key", out, err)
	}
	if _, err := sluice("submit", "broken", "--concurrency-key", "k"); err == nil || !strings.Contains(err.Error(), "no key_concurrency") {
		t.Errorf("submit --concurrency-key to a function without key_concurrency: %v; want its INVALID_ARGUMENT", err)
	}
	if _, err := sluice("submit", "echo", "--priority", "urgent"); err == nil || !strings.Contains(err.Error(), "high, normal or low") {
		t.Errorf("submit --priority urgent: %v; want refused", err)
	}
	if _, err := sluice("cancel", job.ID); err == nil || !strings.Contains(err.Error(), "already ended") {
		t.Errorf("cancel of a finished job: %v, want its FAILED_PRECONDITION message", err)
	}
	out, err = sluice("submit", "echo", "--count", "5", "--data", "x", "--idempotency-key", "batch")
	ids := strings.Fields(out)
	if err != nil || len(ids) != 5 {
		t.Fatalf("submit --count 5 = %q, %v; want 5 IDs", out, err)
	}
	if again, err := sluice("submit", "echo", "--count", "5", "--data", "x", "--idempotency-key", "batch"); err != nil || len(strings.Fields(again)) != 5 || !sameSet(strings.Fields(again), ids) {
		t.Errorf("the same --count with the same --idempotency-key gave %q; want the same 5 jobs", again)
	}
	if out, err := sluice("wait", ids[4], "--for", "10s"); err != nil || !strings.Contains(out, "SUCCEEDED") {
		t.Errorf("wait = %q, %v", out, err)
	}
	out, err = sluice("submit", "broken", "--data", "x", "--wait", "10s")
	if err != nil || !strings.Contains(out, "FAILED") {
		t.Fatalf("submit to broken = %q, %v", out, err)
	}
	dead := strings.Fields(out)[0]
	// A job is written FAILED first, then copied to the dead letters: the
	// list may lag its state by a moment.
	var list string
	buffertest.WaitFor(t, 10*time.Second, "the failed job in dlq list, or an error", func() bool {
		list, err = sluice("dlq", "list", "broken")
		return err != nil || strings.Contains(list, dead)
	})
	if err != nil || !strings.Contains(list, dead) || !strings.Contains(list, "function answered HTTP 400") {
		t.Errorf("dlq list = %q, %v; want the failed job and its reason", list, err)
	}
	if out, err := sluice("dlq", "redrive", "broken", dead); err != nil || !strings.HasPrefix(out, "1 redriven") {
		t.Errorf("dlq redrive = %q, %v", out, err)
	}
	if out, err := sluice("functions"); err != nil || !strings.Contains(out, "FUNCTION") || !strings.Contains(out, "echo") || !strings.Contains(out, "broken") {
		t.Errorf("functions = %q, %v", out, err)
	}
	var out2, errOut bytes.Buffer
	err = Run(t.Context(), "get", []string{job.ID, "--server", g.GRPCAddr.String(), "--api-key", "wrong-key-0123456789"}, nil, &out2, &errOut)
	if err == nil || !strings.Contains(err.Error(), "API key not recognised") {
		t.Errorf("get with a wrong key: %v, want UNAUTHENTICATED", err)
	}
}

func sameSet(a, b []string) bool {
	seen := map[string]bool{}
	for _, x := range a {
		seen[x] = true
	}
	for _, x := range b {
		if !seen[x] {
			return false
		}
	}
	return len(a) == len(b)
}
