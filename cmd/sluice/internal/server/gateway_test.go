package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

func post(t *testing.T, url, contentType string, body []byte) *http.Response {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := fetch(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// fetch GETs url and reads its body, closed: get for a goroutine other than
// the test's, which must not fail the test.
func fetch(ctx context.Context, url string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// jobJSON is the REST form of a job, as a REST client would decode it.
type jobJSON struct {
	ID          string `json:"id"`
	Function    string `json:"function"`
	State       string `json:"state"`
	Attempts    int    `json:"attempts"`
	CreateTime  string `json:"createTime"`
	StartTime   string `json:"startTime"`
	FinishTime  string `json:"finishTime"`
	Error       string `json:"error"`
	Notice      string `json:"notice"`
	ContentType string `json:"contentType"`
	Result      *struct {
		HTTPStatus  int    `json:"httpStatus"`
		ContentType string `json:"contentType"`
		Body        []byte `json:"body"`
	} `json:"result"`
}

func decodeJob(t *testing.T, b []byte) jobJSON {
	t.Helper()
	var j jobJSON
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatalf("decode job %s: %v", b, err)
	}
	return j
}

// waitREST polls GET /v1/jobs/{id}, without an API key, until the job is
// finished; see waitRESTKey.
func waitREST(t *testing.T, g *servertest.Gateway, id string, within time.Duration) jobJSON {
	t.Helper()
	return waitRESTKey(t, g, "", id, within)
}

// waitRESTKey polls GET /v1/jobs/{id} with an API key (none if key is "")
// until the job is finished, and returns it; it fails the test if the job
// is not finished within the given time.
func waitRESTKey(t *testing.T, g *servertest.Gateway, key, id string, within time.Duration) jobJSON {
	t.Helper()
	var j jobJSON
	buffertest.WaitForNoError(t, within, "job "+id+" finished", func() error {
		code, _, body := call(t, http.MethodGet, g.Base+"/v1/jobs/"+id, key, "")
		if code != http.StatusOK {
			t.Fatalf("GET job %s: %d %s", id, code, body)
		}
		j = decodeJob(t, body)
		switch j.State {
		case "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED":
			return nil
		}
		return fmt.Errorf("still %s", j.State)
	})
	return j
}

func TestRESTEndToEnd(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{Duration: 20 * time.Millisecond})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "echo", URL: fnURL})

	for _, tc := range []struct {
		name, contentType string
		payload           []byte
	}{
		{"json", "application/json", []byte(`{"hello": "world", "n": [1, 2]}`)},
		{"binary", "application/octet-stream", []byte{0, 1, 2, 0xff, 0xfe, '\n'}},
		{"text", "text/plain; charset=utf-8", []byte("plain words")},
		{"empty", "application/json", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, g.Base+"/v1/functions/echo/jobs", tc.contentType, tc.payload)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("submit: %d %s, want 202", resp.StatusCode, body)
			}
			job := decodeJob(t, body)
			if loc := resp.Header.Get("Location"); loc != "/v1/jobs/"+job.ID {
				t.Errorf("Location = %q, want /v1/jobs/%s", loc, job.ID)
			}
			if job.Function != "echo" || job.State == "" || job.CreateTime == "" || job.ContentType != tc.contentType {
				t.Errorf("submitted job = %+v", job)
			}

			done := waitREST(t, g, job.ID, 10*time.Second)
			if done.State != "SUCCEEDED" || done.Attempts != 1 || done.StartTime == "" || done.FinishTime == "" {
				t.Errorf("finished job = %+v, want SUCCEEDED after one attempt with times", done)
			}
			if done.Result == nil || done.Result.HTTPStatus != 200 || !bytes.Equal(done.Result.Body, tc.payload) {
				t.Errorf("job result = %+v, want 200 echoing the payload", done.Result)
			}

			resp, result := get(t, g.Base+"/v1/jobs/"+job.ID+"/result")
			if resp.StatusCode != http.StatusOK || !bytes.Equal(result, tc.payload) || resp.Header.Get("Content-Type") != tc.contentType {
				t.Errorf("result = %d %q (%s), want 200 %q (%s)",
					resp.StatusCode, result, resp.Header.Get("Content-Type"), tc.payload, tc.contentType)
			}
		})
	}

	t.Run("functions", func(t *testing.T) {
		resp, body := get(t, g.Base+"/v1/functions")
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"name":"echo"`) {
			t.Errorf("GET /v1/functions = %d %s", resp.StatusCode, body)
		}
	})
	t.Run("openapi", func(t *testing.T) {
		for _, tc := range []struct{ path, version string }{
			{"/openapi.json", "3.0.3"},
			{"/openapi-v2.json", "2.0"},
		} {
			resp, body := get(t, g.Base+tc.path)
			var doc struct {
				OpenAPI string         `json:"openapi"`
				Swagger string         `json:"swagger"`
				Paths   map[string]any `json:"paths"`
			}
			if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &doc) != nil || doc.OpenAPI+doc.Swagger != tc.version ||
				doc.Paths["/v1/functions/{function}/jobs"] == nil {
				t.Errorf("GET %s = %d, version %q, paths %v; want %s with the submit route", tc.path, resp.StatusCode, doc.OpenAPI+doc.Swagger, doc.Paths, tc.version)
			}
		}
	})
}

// startBlockedFunction serves a function whose invocations wait until the
// test ends (or the caller gives up).
func startBlockedFunction(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the server notices the caller leave
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(fn.Close)
	t.Cleanup(func() { close(release) }) // runs before fn.Close
	return fn.URL
}

func TestResultWhilePending(t *testing.T) {
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "slow", URL: startBlockedFunction(t)})

	resp := post(t, g.Base+"/v1/functions/slow/jobs", "text/plain", []byte("x"))
	id := strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/")
	res, _ := get(t, g.Base+"/v1/jobs/"+id+"/result")
	if res.StatusCode != http.StatusAccepted || res.Header.Get("Retry-After") != "1" || res.Header.Get("Location") != "/v1/jobs/"+id {
		t.Errorf("pending result = %d, Retry-After %q, Location %q; want 202, 1, /v1/jobs/%s",
			res.StatusCode, res.Header.Get("Retry-After"), res.Header.Get("Location"), id)
	}
}

func TestGRPCEndToEnd(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "echo", URL: fnURL})
	conn := g.GRPCConn(t)
	jobs := sluicev1.NewJobServiceClient(conn)
	ctx := t.Context()

	sub, err := jobs.SubmitJob(ctx, &sluicev1.SubmitJobRequest{
		Function: "echo",
		Payload:  &httpbody.HttpBody{ContentType: "application/x-protobuf", Data: []byte{8, 150, 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := sub.GetJob().GetId()
	var job *sluicev1.Job
	buffertest.WaitForNoError(t, 10*time.Second, "job "+id+" SUCCEEDED over gRPC", func() error {
		r, err := jobs.GetJob(ctx, &sluicev1.GetJobRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		if job = r.GetJob(); job.State != sluicev1.Job_SUCCEEDED {
			return fmt.Errorf("still %v", job.State)
		}
		return nil
	})
	if job.State != sluicev1.Job_SUCCEEDED || job.Attempts != 1 {
		t.Fatalf("job = %v, want SUCCEEDED after one attempt", job)
	}
	res, err := jobs.GetJobResult(ctx, &sluicev1.GetJobResultRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.GetBody().GetData(), []byte{8, 150, 1}) || res.GetBody().GetContentType() != "application/x-protobuf" {
		t.Errorf("result = %v, want the payload echoed with its type", res.GetBody())
	}

	fns, err := sluicev1.NewFunctionServiceClient(conn).ListFunctions(ctx, &sluicev1.ListFunctionsRequest{})
	if err != nil || len(fns.GetFunctions()) != 1 || fns.GetFunctions()[0].GetConcurrency() != config.DefaultConcurrency {
		t.Errorf("ListFunctions = %v, %v", fns, err)
	}

	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v; want SERVING", hc, err)
	}

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	rr, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if got := strings.Join(names, ","); !strings.Contains(got, "sluice.v1.JobService") || !strings.Contains(got, "grpc.health.v1.Health") {
		t.Errorf("reflection lists %s", got)
	}
}

func TestConcurrencyCap(t *testing.T) {
	sim, fnURL := servertest.StartFunction(t, fnsim.Config{Duration: 30 * time.Millisecond})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "capped", URL: fnURL, Concurrency: 4})
	var ids []string
	for i := range 40 {
		resp := post(t, g.Base+"/v1/functions/capped/jobs", "text/plain", fmt.Appendf(nil, "%d", i))
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit %d: %d", i, resp.StatusCode)
		}
		ids = append(ids, strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/"))
	}
	for _, id := range ids {
		if j := waitREST(t, g, id, 20*time.Second); j.State != "SUCCEEDED" {
			t.Fatalf("job %s = %+v", id, j)
		}
	}
	st := sim.Stats()
	if st.MaxConcurrent > 4 {
		t.Errorf("function saw %d invocations at once; the limit is 4", st.MaxConcurrent)
	}
	if st.MaxConcurrent < 4 {
		t.Errorf("function saw at most %d invocations at once; with a backlog of 40 the limit of 4 should be used", st.MaxConcurrent)
	}
	if st.Invocations != 40 {
		t.Errorf("function ran %d invocations, want 40", st.Invocations)
	}
}

func TestRestartRunsQueuedJobs(t *testing.T) {
	dir := t.TempDir()
	sim, fnURL := servertest.StartFunction(t, fnsim.Config{Duration: 50 * time.Millisecond})
	// A job delivered to the first gateway just as it stopped, and never
	// handed back, returns after the ack wait: the timeout plus 15s. A 1s
	// timeout keeps that inside the wait below (with the 30s default it
	// failed about one run in 50).
	fn := config.FunctionConfig{Name: "slow", URL: fnURL, Concurrency: 1, Timeout: config.Duration(time.Second)}

	first := servertest.StartFunctions(t, dir, fn)
	var ids []string
	for i := range 20 {
		resp := post(t, first.Base+"/v1/functions/slow/jobs", "text/plain", fmt.Appendf(nil, "%d", i))
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit %d: %d", i, resp.StatusCode)
		}
		ids = append(ids, strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/"))
	}
	first.Stop()
	ranBefore := sim.Stats().Invocations
	if ranBefore >= len(ids) {
		t.Fatalf("all %d jobs ran before the stop; the test needs some still queued", ranBefore)
	}

	second := servertest.StartFunctions(t, dir, fn)
	for _, id := range ids {
		if j := waitREST(t, second, id, 30*time.Second); j.State != "SUCCEEDED" {
			t.Fatalf("after restart job %s = %+v, want SUCCEEDED", id, j)
		}
	}
	for _, id := range ids {
		if n := sim.JobInvocations(id); n != 1 {
			t.Errorf("job %s completed %d times, want once", id, n)
		}
	}
	t.Logf("%d of %d jobs ran before the restart, the rest after", ranBefore, len(ids))
}

func TestBadRequests(t *testing.T) {
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartFunctions(t, t.TempDir(),
		config.FunctionConfig{Name: "echo", URL: fnURL, MaxPayload: 1024},
		config.FunctionConfig{Name: "failing", URL: failing.URL, Retry: config.RetryConfig{MaxAttempts: 1}})

	resp := post(t, g.Base+"/v1/functions/failing/jobs", "text/plain", []byte("x"))
	failedID := strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/")
	waitREST(t, g, failedID, 10*time.Second)

	for _, tc := range []struct {
		name, method, path string
		body               io.Reader
		wantStatus         int
		wantMessage        string
	}{
		{"unknown function", "POST", "/v1/functions/nope/jobs", strings.NewReader("x"), 404, `function \"nope\" is not configured`},
		{"malformed job id", "GET", "/v1/jobs/not-a-job", nil, 400, `job id \"not-a-job\" is malformed`},
		{"malformed job id for result", "GET", "/v1/jobs/abc/result", nil, 400, "is malformed"},
		{"unknown job", "GET", "/v1/jobs/AAAAAAAAAAAAAAAAAAAAAAAAAA", nil, 404, "job AAAAAAAAAAAAAAAAAAAAAAAAAA not found"},
		{"result of unknown job", "GET", "/v1/jobs/AAAAAAAAAAAAAAAAAAAAAAAAAA/result", nil, 404, "not found"},
		{"result of failed job", "GET", "/v1/jobs/" + failedID + "/result", nil, 409, "ended FAILED without a result: function answered HTTP 500"},
		{"payload over limit", "POST", "/v1/functions/echo/jobs", bytes.NewReader(make([]byte, 1025)), 413, "the limit is 1024"},
		{"chunked payload over limit", "POST", "/v1/functions/echo/jobs", io.LimitReader(zeros{}, 5000), 413, "limit of 1024 bytes"},
		{"unknown route", "GET", "/v1/nothing", nil, 404, "Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, g.Base+tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantMessage) {
				t.Errorf("%s %s = %d %s; want %d containing %s", tc.method, tc.path, resp.StatusCode, body, tc.wantStatus, tc.wantMessage)
			}
		})
	}

	t.Run("payload exactly at limit", func(t *testing.T) {
		resp := post(t, g.Base+"/v1/functions/echo/jobs", "application/octet-stream", make([]byte, 1024))
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("1024-byte payload: %d, want 202", resp.StatusCode)
		}
	})

	t.Run("grpc", func(t *testing.T) {
		jobs := sluicev1.NewJobServiceClient(g.GRPCConn(t))
		for _, tc := range []struct {
			name string
			call func() error
			want codes.Code
		}{
			{"unknown function", func() error {
				_, err := jobs.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{Function: "nope"})
				return err
			}, codes.NotFound},
			{"no function", func() error {
				_, err := jobs.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{})
				return err
			}, codes.InvalidArgument},
			{"payload over limit", func() error {
				_, err := jobs.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{Function: "echo", Payload: &httpbody.HttpBody{Data: make([]byte, 1025)}})
				return err
			}, codes.InvalidArgument},
			{"malformed id", func() error {
				_, err := jobs.GetJob(t.Context(), &sluicev1.GetJobRequest{Id: "x"})
				return err
			}, codes.InvalidArgument},
			{"unknown job", func() error {
				_, err := jobs.GetJobResult(t.Context(), &sluicev1.GetJobResultRequest{Id: "AAAAAAAAAAAAAAAAAAAAAAAAAA"})
				return err
			}, codes.NotFound},
		} {
			if got := status.Code(tc.call()); got != tc.want {
				t.Errorf("%s: code %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}

func TestFullBufferRefusesWithRetryAfter(t *testing.T) {
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "stuck", URL: startBlockedFunction(t), Concurrency: 1}},
		Buffer:    config.BufferConfig{MaxJobs: 2},
	})

	// One job running, one waiting: the buffer holds both until they finish.
	for i := range 2 {
		if resp := post(t, g.Base+"/v1/functions/stuck/jobs", "text/plain", []byte("x")); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit %d: %d, want 202", i, resp.StatusCode)
		}
	}
	resp := post(t, g.Base+"/v1/functions/stuck/jobs", "text/plain", []byte("x"))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "buffer is full") {
		t.Errorf("third submit = %d, Retry-After %q, %s; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	_, err := sluicev1.NewJobServiceClient(g.GRPCConn(t)).SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{Function: "stuck"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC submit to a full buffer: %v, want UNAVAILABLE", err)
	}
}

// zeros is an endless reader: a body of unknown length, sent chunked.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestFunctionStatusShowsLiveWindow(t *testing.T) {
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{Functions: []config.FunctionConfig{{
		Name: "ramp", URL: startBlockedFunction(t), Concurrency: 10,
		Scaling: &config.ScalingConfig{Initial: 2, PerMinute: 60},
	}}})
	for range 5 {
		post(t, g.Base+"/v1/functions/ramp/jobs", "text/plain", []byte("x"))
	}
	var fn struct {
		InitialWindow    int        `json:"initialWindow"`
		ScalingPerMinute int        `json:"scalingPerMinute"`
		Status           liveStatus `json:"status"`
	}
	buffertest.WaitForNoError(t, 10*time.Second, "status showing 2 in flight, 3 waiting, ramping", func() error {
		resp, body := get(t, g.Base+"/v1/functions/ramp")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET function: %d %s", resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, &fn); err != nil {
			t.Fatal(err)
		}
		if fn.Status.InFlight == 2 && fn.Status.Backlog == "3" && strings.HasPrefix(fn.Status.Reason, "ramping") {
			return nil
		}
		return fmt.Errorf("status %s", body)
	})
	if fn.Status.Window != 2 || fn.InitialWindow != 2 || fn.ScalingPerMinute != 60 {
		t.Errorf("function = %+v; want window 2 of initial 2, ramping at 60/min", fn)
	}
}

func TestCancel(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	invoked := map[string]int{}
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		invoked[r.Header.Get("Sluice-Job-Id")]++
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(fn.Close)
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "one", URL: fn.URL, Concurrency: 1})
	submitID := func() string {
		resp := post(t, g.Base+"/v1/functions/one/jobs", "text/plain", []byte("x"))
		return strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/")
	}
	cancel := func(id string) (int, string) {
		resp := post(t, g.Base+"/v1/jobs/"+id+":cancel", "application/json", nil)
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	running, queued := submitID(), submitID()
	buffertest.WaitFor(t, 10*time.Second, "the first job started", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return invoked[running] == 1
	})

	if code, body := cancel(queued); code != http.StatusOK || !strings.Contains(body, `"state":"CANCELLED"`) || !strings.Contains(body, "cancelled before it ran") {
		t.Errorf("cancel queued job: %d %s", code, body)
	}
	if code, body := cancel(running); code != http.StatusOK || !strings.Contains(body, `"state":"CANCELLED"`) {
		t.Errorf("cancel running job: %d %s", code, body)
	}
	if code, body := cancel(queued); code != http.StatusConflict || !strings.Contains(body, "already ended CANCELLED") {
		t.Errorf("cancel a cancelled job: %d %s; want 409", code, body)
	}
	if code, _ := cancel("AAAAAAAAAAAAAAAAAAAAAAAAAA"); code != http.StatusNotFound {
		t.Errorf("cancel unknown job: %d; want 404", code)
	}

	// The running attempt ends; its outcome is discarded, and the
	// cancelled queued job is removed without being invoked.
	close(release)
	buffertest.WaitForNoError(t, 10*time.Second, "the queue emptied", func() error {
		if st := fnStatusOf(t, g, "one"); st.InFlight != 0 || st.Backlog != "0" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if invoked[queued] != 0 {
		t.Errorf("the job cancelled before it ran was invoked %d times", invoked[queued])
	}
	if j := waitREST(t, g, running, time.Second); j.State != "CANCELLED" {
		t.Errorf("the job cancelled while running ended %s", j.State)
	}
}

type liveStatus struct {
	Window       int    `json:"window"`
	InFlight     int    `json:"inFlight"`
	Backlog      string `json:"backlog"`
	Reason       string `json:"reason"`
	DeadLetters  string `json:"deadLetters"`
	Succeeded    string `json:"succeeded"`
	DeadLettered string `json:"deadLettered"`
	Retries      string `json:"retries"`
	Throttles    string `json:"throttles"`
	Circuit      struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	} `json:"circuit"`
}

func fnStatusOf(t *testing.T, g *servertest.Gateway, name string) liveStatus {
	t.Helper()
	resp, body := get(t, g.Base+"/v1/functions/"+name)
	var fn struct {
		Status liveStatus `json:"status"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &fn) != nil {
		t.Fatalf("GET function: %d %s", resp.StatusCode, body)
	}
	return fn.Status
}

func TestInvokeAndWait(t *testing.T) {
	_, fastURL := servertest.StartFunction(t, fnsim.Config{Duration: 300 * time.Millisecond})
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusUnprocessableEntity)
		io.WriteString(w, "bad order")
	}))
	t.Cleanup(failing.Close)
	g := servertest.StartFunctions(t, t.TempDir(),
		config.FunctionConfig{Name: "fast", URL: fastURL},
		config.FunctionConfig{Name: "stuck", URL: startBlockedFunction(t)},
		config.FunctionConfig{Name: "failing", URL: failing.URL})

	t.Run("invoke answers with the function's response when it is in time", func(t *testing.T) {
		resp := post(t, g.Base+"/v1/functions/fast:invoke?wait=10s", "application/json", []byte(`{"n":1}`))
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != `{"n":1}` || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("invoke = %d %q (%s), want 200 with the echo", resp.StatusCode, body, resp.Header.Get("Content-Type"))
		}
	})
	t.Run("invoke passes on the function's error answer", func(t *testing.T) {
		resp := post(t, g.Base+"/v1/functions/failing:invoke", "text/plain", []byte("x"))
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusUnprocessableEntity || string(body) != "bad order" {
			t.Errorf("invoke = %d %q, want the function's 422", resp.StatusCode, body)
		}
	})
	t.Run("invoke answers 202 with the job when it is not", func(t *testing.T) {
		resp := post(t, g.Base+"/v1/functions/stuck:invoke?wait=200ms", "text/plain", []byte("x"))
		body, _ := io.ReadAll(resp.Body)
		job := decodeJob(t, body)
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Location") != "/v1/jobs/"+job.ID || resp.Header.Get("Retry-After") == "" || job.State == "" {
			t.Errorf("slow invoke = %d %s, Location %q", resp.StatusCode, body, resp.Header.Get("Location"))
		}
		// The same JSON as a submit's 202: every field, zero or not.
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil || fields["attempts"] == nil || fields["history"] == nil || fields["tenant"] == nil {
			t.Errorf("slow invoke's body %s lacks the zero fields a submit's has (%v)", body, err)
		}
	})
	t.Run("get waits for the job to finish", func(t *testing.T) {
		resp := post(t, g.Base+"/v1/functions/fast/jobs", "text/plain", []byte("x"))
		loc := resp.Header.Get("Location")
		start := time.Now()
		res, body := get(t, g.Base+loc+"?wait=30s")
		if j := decodeJob(t, body); res.StatusCode != http.StatusOK || j.State != "SUCCEEDED" {
			t.Errorf("GET ?wait=30s = %d %s, want the finished job", res.StatusCode, body)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("GET ?wait took %v for a 300ms job", took)
		}
	})
	t.Run("get answers with the state at the timeout", func(t *testing.T) {
		resp := post(t, g.Base+"/v1/functions/stuck/jobs", "text/plain", []byte("x"))
		start := time.Now()
		res, body := get(t, g.Base+resp.Header.Get("Location")+"?wait=300ms")
		if j := decodeJob(t, body); res.StatusCode != http.StatusOK || (j.State != "QUEUED" && j.State != "RUNNING") {
			t.Errorf("GET ?wait=300ms = %d %s, want the unfinished job", res.StatusCode, body)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Errorf("GET ?wait=300ms answered after %v", took)
		}
	})
	t.Run("grpc", func(t *testing.T) {
		resp, err := sluicev1.NewJobServiceClient(g.GRPCConn(t)).InvokeFunction(t.Context(), &sluicev1.InvokeFunctionRequest{
			Function: "fast", Payload: &httpbody.HttpBody{ContentType: "text/plain", Data: []byte("hi")},
		})
		if err != nil || resp.GetJob().GetState() != sluicev1.Job_SUCCEEDED || string(resp.GetBody().GetData()) != "hi" {
			t.Errorf("gRPC invoke = %v, %v", resp, err)
		}
	})
	t.Run("grpc with a priority", func(t *testing.T) {
		client := sluicev1.NewJobServiceClient(g.GRPCConn(t))
		resp, err := client.InvokeFunction(t.Context(), &sluicev1.InvokeFunctionRequest{
			Function: "fast", Payload: &httpbody.HttpBody{ContentType: "text/plain", Data: []byte("hi")}, Priority: sluicev1.Priority_HIGH,
		})
		if err != nil || resp.GetJob().GetPriority() != sluicev1.Priority_HIGH || resp.GetJob().GetState() != sluicev1.Job_SUCCEEDED {
			t.Errorf("gRPC invoke with HIGH priority = %v, %v", resp, err)
		}
		_, err = client.InvokeFunction(t.Context(), &sluicev1.InvokeFunctionRequest{
			Function: "fast", Payload: &httpbody.HttpBody{ContentType: "text/plain", Data: []byte("hi")}, Priority: 42,
		})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("gRPC invoke with priority 42: %v, want InvalidArgument", err)
		}
	})
}

func TestWatchJob(t *testing.T) {
	var calls atomic.Int32
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if calls.Add(1)%2 == 1 {
			http.Error(w, "once more", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "done")
	}))
	t.Cleanup(flaky.Close)
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{
		Name: "flaky", URL: flaky.URL,
		Retry: config.RetryConfig{InitialBackoff: config.Duration(200 * time.Millisecond), Jitter: "none"},
	})

	t.Run("grpc", func(t *testing.T) {
		client := sluicev1.NewJobServiceClient(g.GRPCConn(t))
		sub, err := client.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{Function: "flaky"})
		if err != nil {
			t.Fatal(err)
		}
		stream, err := client.WatchJob(t.Context(), &sluicev1.WatchJobRequest{Id: sub.GetJob().GetId()})
		if err != nil {
			t.Fatal(err)
		}
		var states []string
		var last *sluicev1.Job
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if last != nil && resp.GetJob().GetAttempts() < last.GetAttempts() {
				t.Errorf("attempts went back from %d to %d", last.GetAttempts(), resp.GetJob().GetAttempts())
			}
			last = resp.GetJob()
			states = append(states, last.GetState().String())
		}
		if len(states) < 3 || states[len(states)-1] != "SUCCEEDED" || last.GetAttempts() != 2 {
			t.Errorf("watched %v ending with %d attempts; want the retry seen and SUCCEEDED after 2", states, last.GetAttempts())
		}
	})
	t.Run("rest", func(t *testing.T) {
		resp := post(t, g.Base+"/v1/functions/flaky/jobs", "text/plain", []byte("x"))
		res, body := get(t, g.Base+resp.Header.Get("Location")+":watch")
		lines := strings.Split(strings.TrimSpace(string(body)), "\n")
		if res.StatusCode != http.StatusOK || len(lines) < 2 || !strings.Contains(lines[len(lines)-1], `"state":"SUCCEEDED"`) {
			t.Errorf("REST watch = %d, %d lines, last %s", res.StatusCode, len(lines), lines[len(lines)-1])
		}
	})
}

// TestStopLeavesNoGRPCGoroutines checks that stopping a gateway stops
// both gRPC servers, the public one and the in-memory one REST calls, and
// closes REST's client connection: no gRPC goroutine is left once Run
// returns.
func TestStopLeavesNoGRPCGoroutines(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "echo", URL: fnURL}}}
	if err := cfg.SetDefaultsAndCheck(); err != nil {
		t.Fatal(err)
	}
	p, err := server.New(t.Context(), cfg, server.Options{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", DataDir: t.TempDir(), DrainTimeout: 100 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	if resp := post(t, "http://"+p.HTTPAddr.String()+"/v1/functions/echo/jobs", "text/plain", []byte("x")); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("REST submit: %d, want 202", resp.StatusCode)
	}
	conn, err := grpc.NewClient(p.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := sluicev1.NewFunctionServiceClient(conn).ListFunctions(t.Context(), &sluicev1.ListFunctionsRequest{}); err != nil {
		t.Fatal(err)
	}
	if grpcGoroutines() == "" {
		t.Fatal("found no gRPC goroutine while serving; the check below would prove nothing")
	}
	conn.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("gateway Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway Run did not return 30s after its context ended; gRPC goroutines:\n%s", grpcGoroutines())
	}
	buffertest.WaitForNoError(t, 5*time.Second, "no gRPC goroutine left after the gateway stopped", func() error {
		if left := grpcGoroutines(); left != "" {
			return fmt.Errorf("gRPC goroutines are left:\n%s", left)
		}
		return nil
	})
}

// grpcGoroutines returns the stacks of goroutines of gRPC (servers,
// clients, transports) or of in-memory (bufconn) connections. A test's own
// gRPC clients must be closed first.
func grpcGoroutines() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for stack := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(stack, "google.golang.org/grpc") {
			found = append(found, stack)
		}
	}
	return strings.Join(found, "\n\n")
}
