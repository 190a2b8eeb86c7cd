package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

const (
	keyA = "key-of-tenant-acme-0123456789"
	keyB = "key-of-tenant-bolt-0123456789"
)

// call makes a REST request with an API key (none if key is "") and extra
// headers, and returns the status, the headers and the body.
func call(t *testing.T, method, url, key, body string, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func tenantGateway(t *testing.T, fnURL string, functions ...config.FunctionConfig) *servertest.Gateway {
	t.Helper()
	if len(functions) == 0 {
		functions = []config.FunctionConfig{{Name: "f", URL: fnURL}, {Name: "g", URL: fnURL}}
	}
	return servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: functions,
		Tenants: []config.TenantConfig{
			{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}},
			{Name: "bolt", APIKeys: []string{gateway.HashKey(keyB)}, Functions: []string{functions[0].Name}},
		},
	})
}

func TestAPIKeys(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := tenantGateway(t, fnURL)
	for _, tc := range []struct{ name, auth string }{
		{"missing", ""},
		{"wrong key", "Bearer not-a-key-of-anyone-at-all"},
		{"not bearer", "Basic " + keyA},
		{"no key", "Bearer "},
	} {
		code, h, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", `{}`, "Authorization", tc.auth)
		if code != http.StatusUnauthorized || !strings.Contains(string(body), `"message"`) || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: %d %s (WWW-Authenticate %q), want 401 with a message and a Bearer challenge", tc.name, code, body, h.Get("WWW-Authenticate"))
		}
	}
	conn := g.GRPCConn(t)
	jobs := sluicev1.NewJobServiceClient(conn)
	_, err := jobs.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{Function: "f"})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC without a key: %v, want UNAUTHENTICATED", err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+keyA)
	if _, err := jobs.SubmitJob(ctx, &sluicev1.SubmitJobRequest{Function: "f"}); err != nil {
		t.Errorf("gRPC with a key: %v", err)
	}
	if code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", keyA, `{}`); code != http.StatusAccepted {
		t.Errorf("REST with a key: %d %s", code, body)
	}
}

func TestTenantsSeeOnlyTheirOwnJobs(t *testing.T) {
	fail := &buffertest.StatusFunction{}
	fail.Status.Store(400) // fails at once: a dead letter to look at
	srv := httptest.NewServer(fail)
	defer srv.Close()
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := tenantGateway(t, fnURL, config.FunctionConfig{Name: "f", URL: srv.URL}, config.FunctionConfig{Name: "slow", URL: fnURL})

	code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", keyA, `{"secret":"acme's"}`)
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, body)
	}
	id := decodeJob(t, body).ID
	if j := waitRESTKey(t, g, keyA, id, 10*time.Second); j.State != "FAILED" {
		t.Fatalf("acme's job ended %s, want FAILED (and dead-lettered)", j.State)
	}
	// What tenant B gets for a job that does not exist, to compare with.
	ghost := "AAAAAAAAAAAAAAAAAAAAAAAAAA"
	forged := [][]string{
		nil,
		{"X-Sluice-Tenant", "acme"},
		{"Grpc-Metadata-Tenant", "acme"},
		{"Grpc-Metadata-Sluice-Tenant", "acme"},
	}
	for _, hdrs := range forged {
		for _, op := range []struct{ method, path, body string }{
			{http.MethodGet, "/v1/jobs/%s", ""},
			{http.MethodGet, "/v1/jobs/%s?wait=1s", ""},
			{http.MethodGet, "/v1/jobs/%s/result", ""},
			{http.MethodGet, "/v1/jobs/%s:watch", ""},
			{http.MethodPost, "/v1/jobs/%s:cancel", "{}"},
			{http.MethodDelete, "/v1/functions/f/deadletters/%s", ""},
		} {
			codeB, _, bodyB := call(t, op.method, g.Base+strings.Replace(op.path, "%s", id, 1), keyB, op.body, hdrs...)
			codeGhost, _, bodyGhost := call(t, op.method, g.Base+strings.Replace(op.path, "%s", ghost, 1), keyB, op.body, hdrs...)
			if codeB != http.StatusNotFound || codeGhost != http.StatusNotFound ||
				strings.ReplaceAll(string(bodyB), id, ghost) != string(bodyGhost) {
				t.Errorf("bolt %s %s with %v: %d %s; for a job that does not exist: %d %s; want the same 404", op.method, op.path, hdrs, codeB, bodyB, codeGhost, bodyGhost)
			}
		}
		// Redrive and the list of dead letters pass over acme's.
		code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/deadletters:redrive", keyB, `{"ids":["`+id+`"]}`, hdrs...)
		if code != http.StatusOK || !strings.Contains(string(body), `"notFoundIds":["`+id+`"]`) {
			t.Errorf("bolt redriving acme's dead letter: %d %s; want it not found", code, body)
		}
		if _, _, body := call(t, http.MethodGet, g.Base+"/v1/functions/f/deadletters", keyB, "", hdrs...); strings.Contains(string(body), id) {
			t.Errorf("bolt's dead letters list acme's job: %s", body)
		}
	}
	// Acme still sees and owns it.
	if _, _, body := call(t, http.MethodGet, g.Base+"/v1/functions/f/deadletters", keyA, ""); !strings.Contains(string(body), id) || !strings.Contains(string(body), `"tenant":"acme"`) {
		t.Errorf("acme's dead letters = %s; want its job", body)
	}

	// Over gRPC, with forged metadata.
	jobs := sluicev1.NewJobServiceClient(g.GRPCConn(t))
	ctxB := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+keyB, "tenant", "acme", "sluice-tenant", "acme")
	if _, err := jobs.GetJob(ctxB, &sluicev1.GetJobRequest{Id: id}); status.Code(err) != codes.NotFound {
		t.Errorf("gRPC GetJob of acme's job as bolt: %v, want NOT_FOUND", err)
	}
	if _, err := jobs.CancelJob(ctxB, &sluicev1.CancelJobRequest{Id: id}); status.Code(err) != codes.NotFound {
		t.Errorf("gRPC CancelJob of acme's job as bolt: %v, want NOT_FOUND", err)
	}
	stream, err := jobs.WatchJob(ctxB, &sluicev1.WatchJobRequest{Id: id})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("gRPC WatchJob of acme's job as bolt: %v, want NOT_FOUND", err)
	}

	// Bolt may use only "f": "slow" does not exist for it.
	if code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/slow/jobs", keyB, `{}`); code != http.StatusNotFound {
		t.Errorf("bolt submitting to a function it may not use: %d %s, want 404", code, body)
	}
	if _, _, body := call(t, http.MethodGet, g.Base+"/v1/functions", keyB, ""); strings.Contains(string(body), `"slow"`) {
		t.Errorf("bolt's function list shows a function it may not use: %s", body)
	}

	// Idempotency keys are each tenant's own.
	_, _, a := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", keyA, `{}`, "Idempotency-Key", "order-1")
	_, hb, b := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", keyB, `{}`, "Idempotency-Key", "order-1")
	if decodeJob(t, a).ID == decodeJob(t, b).ID || hb.Get("Idempotent-Replayed") != "" {
		t.Errorf("the same Idempotency-Key from two tenants gave one job")
	}
}

func TestRateLimitsAnswer429WithRetryAfter(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{
			{Name: "f", URL: fnURL, Ingress: &config.IngressConfig{PerSecond: 0.5, Burst: 2}},
			{Name: "g", URL: fnURL},
		},
		Tenants: []config.TenantConfig{
			{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}},
			{Name: "bolt", APIKeys: []string{gateway.HashKey(keyB)}, Ingress: &config.IngressConfig{PerSecond: 0.25, Burst: 1}},
		},
	})
	// Function f: a burst of 2, then one every 2s.
	for i := range 2 {
		if code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", keyA, `{}`); code != http.StatusAccepted {
			t.Fatalf("submit %d within the burst: %d %s", i, code, body)
		}
	}
	code, h, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", keyA, `{}`)
	ra, _ := strconv.Atoi(h.Get("Retry-After"))
	if code != http.StatusTooManyRequests || ra < 1 || ra > 2 || !strings.Contains(string(body), `over the submit rate limit of function \"f\"`) {
		t.Errorf("over f's rate: %d, Retry-After %q, %s; want 429 and 1–2s (one token per 2s)", code, h.Get("Retry-After"), body)
	}
	// Tenant bolt: one, then one every 4s, whatever the function.
	if code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/g/jobs", keyB, `{}`); code != http.StatusAccepted {
		t.Fatalf("bolt's first submit: %d %s", code, body)
	}
	jobs := sluicev1.NewJobServiceClient(g.GRPCConn(t))
	ctxB := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+keyB)
	_, err := jobs.SubmitJob(ctxB, &sluicev1.SubmitJobRequest{Function: "g", Payload: &httpbody.HttpBody{ContentType: "text/plain", Data: []byte("x")}})
	st := status.Convert(err)
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	if st.Code() != codes.ResourceExhausted || delay < 3*time.Second || delay > 4*time.Second || !strings.Contains(st.Message(), `tenant "bolt"`) {
		t.Errorf("bolt over its rate over gRPC: %v, RetryInfo %v; want RESOURCE_EXHAUSTED, 3–4s", err, delay)
	}
	// Acme is not held back by bolt's limit.
	if code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/g/jobs", keyA, `{}`); code != http.StatusAccepted {
		t.Errorf("acme after bolt hit its limit: %d %s", code, body)
	}
}

func TestFullFunctionQueueAnswers429AndKeepsAccepted(t *testing.T) {
	release := make(chan struct{})
	blocked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer blocked.Close()
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{
		Name: "f", URL: blocked.URL, Concurrency: 1, Timeout: config.Duration(30 * time.Second),
		Ingress: &config.IngressConfig{MaxQueued: 3},
	})
	var ids []string
	for len(ids) < 3 {
		code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", `{}`)
		if code != http.StatusAccepted {
			t.Fatalf("submit %d of 3: %d %s", len(ids)+1, code, body)
		}
		ids = append(ids, decodeJob(t, body).ID)
	}
	// The backlog is read at most 250ms stale: keep trying until refused.
	var code int
	var h http.Header
	var body []byte
	buffertest.WaitForNoError(t, 5*time.Second, "a submit to the full queue refused", func() error {
		code, h, body = call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", `{}`)
		if code == http.StatusAccepted {
			ids = append(ids, decodeJob(t, body).ID)
			return fmt.Errorf("job %d accepted", len(ids))
		}
		return nil
	})
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(string(body), `has `) {
		t.Fatalf("submit to a full queue: %d (Retry-After %q) %s; want 429 with Retry-After", code, h.Get("Retry-After"), body)
	}
	if len(ids) != 3 {
		t.Errorf("%d jobs accepted with max_queued 3", len(ids))
	}
	// A queued job says what holds it: the one slot is taken.
	buffertest.WaitForNoError(t, 5*time.Second, "the queued job saying the window of 1 is full", func() error {
		_, _, body := call(t, http.MethodGet, g.Base+"/v1/jobs/"+ids[2], "", "")
		var job struct {
			State         string `json:"state"`
			WaitingReason string `json:"waitingReason"`
		}
		if err := json.Unmarshal(body, &job); err != nil {
			t.Fatal(err)
		}
		if job.State != "QUEUED" || !strings.Contains(job.WaitingReason, "concurrency window full: 1 of 1 in flight") {
			return fmt.Errorf("queued job = %s", body)
		}
		return nil
	})
	close(release)
	for _, id := range ids {
		if j := waitREST(t, g, id, 20*time.Second); j.State != "SUCCEEDED" {
			t.Errorf("accepted job %s ended %s; want every accepted job to run", id, j.State)
		}
	}
}

func TestSubmitRefusedWhenItCouldNotStartWithinMaxAge(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{Duration: 300 * time.Millisecond})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "f", URL: fnURL, Concurrency: 1, MaxAge: config.Duration(time.Second)})
	var ids []string
	for range 8 {
		code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", `{}`)
		if code != http.StatusAccepted {
			t.Fatalf("submit: %d %s", code, body)
		}
		ids = append(ids, decodeJob(t, body).ID)
	}
	// Once the gateway has seen the function drain (about 3/s), a ninth
	// job would wait more than its 1s max age behind the backlog.
	waitREST(t, g, ids[1], 10*time.Second)
	code, h, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", `{}`)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(string(body), "would not start within its max age of 1s") {
		t.Errorf("submit behind a backlog longer than max_age: %d %s; want 429 saying why", code, body)
	}
	// When the backlog has drained, submits are accepted again, with an
	// estimated start.
	waitREST(t, g, ids[len(ids)-1], 20*time.Second)
	code, _, body = call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", `{}`)
	var job struct {
		EstimatedStartTime string `json:"estimatedStartTime"`
	}
	if err := json.Unmarshal(body, &job); code != http.StatusAccepted || err != nil || job.EstimatedStartTime == "" {
		t.Errorf("submit after the backlog drained: %d %s; want 202 with an estimatedStartTime", code, body)
	}
}
