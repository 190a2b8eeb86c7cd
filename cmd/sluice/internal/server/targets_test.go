package server_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/lambdatest"
)

// awsTestEnv gives the AWS SDK static credentials and no shared config or
// instance metadata to look for, as a machine outside AWS would have.
func awsTestEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
}

// historyJSON is a job's attempts and throttles in the REST form.
type historyJSON struct {
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	Throttles int    `json:"throttles"`
	Error     string `json:"error"`
	History   []struct {
		Number     int    `json:"number"`
		Outcome    string `json:"outcome"`
		HTTPStatus int    `json:"httpStatus"`
		Error      string `json:"error"`
	} `json:"history"`
}

func jobHistory(t *testing.T, g *servertest.Gateway, id string) historyJSON {
	t.Helper()
	resp, body := get(t, g.Base+"/v1/jobs/"+id)
	var h historyJSON
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &h) != nil {
		t.Fatalf("GET job: %d %s", resp.StatusCode, body)
	}
	return h
}

func submit(t *testing.T, g *servertest.Gateway, function, contentType, payload string) string {
	t.Helper()
	resp := post(t, g.Base+"/v1/functions/"+function+"/jobs", contentType, []byte(payload))
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("submit to %s: %d %s", function, resp.StatusCode, b)
	}
	return strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/")
}

// TestLambdaTargetEmulatorBurst submits a burst of 200 jobs through the
// gateway to a Lambda function with concurrency 1, running under the AWS
// Lambda Runtime Interface Emulator, which serves one invocation at a time
// and breaks on concurrent calls: every job must succeed, with no emulator
// failure and never two invocations at once.
func TestLambdaTargetEmulatorBurst(t *testing.T) {
	awsTestEnv(t)
	emu := lambdatest.Start(t)
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{
		Name:        "thumbs",
		Concurrency: 1,
		Target:      &config.TargetConfig{Lambda: &config.LambdaTargetConfig{Function: lambdatest.FunctionName, Endpoint: emu.URL}},
	})

	// Lambda takes JSON only: anything else is refused at submit.
	resp := post(t, g.Base+"/v1/functions/thumbs/jobs", "text/plain", []byte("not json"))
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "takes only JSON") {
		t.Errorf("a non-JSON submit: %d %s; want 400 saying it takes only JSON", resp.StatusCode, b)
	}

	const jobs = 200
	start := time.Now()
	ids := make([]string, jobs)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < jobs; i += 8 {
				ids[i] = submit(t, g, "thumbs", "application/json", fmt.Sprintf(`{"image":%d}`, i))
			}
		})
	}
	wg.Wait()
	submitted := time.Since(start)
	completed := 0
	for i, id := range ids {
		j := waitREST(t, g, id, 60*time.Second)
		if j.State != "SUCCEEDED" {
			t.Errorf("job %d = %s: %s", i, j.State, j.Error)
			continue
		}
		var answer struct {
			Echo  json.RawMessage `json:"echo"`
			JobID string          `json:"job_id"`
		}
		if err := json.Unmarshal(j.Result.Body, &answer); err != nil || string(answer.Echo) != fmt.Sprintf(`{"image":%d}`, i) || answer.JobID != id {
			t.Errorf("job %d result = %s (%v)", i, j.Result.Body, err)
			continue
		}
		completed++
	}
	took := time.Since(start)
	st := emu.Stats()
	t.Logf("Lambda emulator burst: %d/%d jobs SUCCEEDED in %v (submits took %v, %.0f jobs/s); emulator: %d invocations, %d failures, at most %d in flight, alive %v",
		completed, jobs, took.Round(time.Millisecond), submitted.Round(time.Millisecond), float64(jobs)/took.Seconds(), st.Invocations, st.Failures, st.MaxInFlight, emu.Alive())
	if completed != jobs || st.Failures != 0 || st.MaxInFlight != 1 || st.Invocations != jobs || !emu.Alive() {
		t.Errorf("want all %d jobs done in %d invocations, no failure, at most 1 in flight, the emulator alive", jobs, jobs)
	}
}

// fakeLambda is a narrow fake of the Lambda REST API: Invoke answers as
// answer says for the function named in the path, and
// GetFunctionConcurrency with reserved (none when nil).
type fakeLambda struct {
	reserved *int
	calls    sync.Map // function name → *atomic.Int32
	answer   func(function string, call int32, w http.ResponseWriter)
}

func (f *fakeLambda) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // 2015-03-31/functions/NAME/invocations
	w.Header().Set("Content-Type", "application/json")
	switch {
	case len(parts) == 4 && parts[3] == "concurrency":
		if f.reserved == nil {
			io.WriteString(w, `{}`)
			return
		}
		fmt.Fprintf(w, `{"ReservedConcurrentExecutions": %d}`, *f.reserved)
	case len(parts) == 4 && parts[3] == "invocations":
		n, _ := f.calls.LoadOrStore(parts[2], new(atomic.Int32))
		f.answer(parts[2], n.(*atomic.Int32).Add(1), w)
	default:
		w.Header().Set("X-Amzn-ErrorType", "UnknownOperationException")
		w.WriteHeader(http.StatusNotFound)
	}
}

// TestLambdaTargetOutcomes runs jobs through the gateway against a fake of
// the Lambda API: a function error fails its attempts with the error
// payload kept as the result; a throttle (TooManyRequestsException) is no
// attempt and the job succeeds after it; a cold start reported in the log
// tail is recorded; and a function without configured concurrency takes
// its reserved concurrency.
func TestLambdaTargetOutcomes(t *testing.T) {
	awsTestEnv(t)
	reserved := 3
	fake := &fakeLambda{reserved: &reserved, answer: func(function string, call int32, w http.ResponseWriter) {
		switch {
		case function == "broken":
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			io.WriteString(w, `{"errorMessage":"image too small","errorType":"ValueError"}`)
		case function == "busy" && call <= 2:
			w.Header().Set("X-Amzn-ErrorType", "TooManyRequestsException")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","Type":"User","message":"Rate Exceeded."}`)
		default:
			w.Header().Set("X-Amz-Log-Result", base64Tail("REPORT RequestId: 1\tDuration: 1.00 ms\tInit Duration: 120.00 ms"))
			io.WriteString(w, `{"ok":true}`)
		}
	}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	var logs buffertest.LockedBuffer
	cfg := &config.Config{Functions: []config.FunctionConfig{
		{Name: "broken", Concurrency: 2, Retry: config.RetryConfig{MaxAttempts: 2, InitialBackoff: config.Duration(10 * time.Millisecond)},
			Target: &config.TargetConfig{Lambda: &config.LambdaTargetConfig{Function: "broken", Endpoint: srv.URL}}},
		{Name: "busy", Concurrency: 2, Target: &config.TargetConfig{Lambda: &config.LambdaTargetConfig{Function: "busy", Endpoint: srv.URL}}},
		{Name: "reserved", Target: &config.TargetConfig{Lambda: &config.LambdaTargetConfig{Function: "arn:aws:lambda:eu-west-1:123456789012:function:reserved:live", Endpoint: srv.URL}}},
	}}
	g := startTestGatewayLogs(t, cfg, server.Options{}, &logs)

	broken := submit(t, g, "broken", "application/json", `{"w":0}`)
	if j := waitREST(t, g, broken, 15*time.Second); j.State != "FAILED" || j.Attempts != 2 ||
		!strings.Contains(j.Error, "Lambda function error (Unhandled: ValueError)") ||
		j.Result == nil || j.Result.HTTPStatus != 502 || !strings.Contains(string(j.Result.Body), "image too small") {
		t.Errorf("a function error: %+v; want FAILED after 2 attempts, the error type named, the error payload kept", j)
	}

	busy := submit(t, g, "busy", "application/json", `{}`)
	if j := waitREST(t, g, busy, 15*time.Second); j.State != "SUCCEEDED" || j.Attempts != 1 {
		t.Errorf("after throttles: %+v; want SUCCEEDED in 1 attempt", j)
	}
	h := jobHistory(t, g, busy)
	if h.Throttles != 2 || len(h.History) != 3 || h.History[0].Outcome != "THROTTLED" || h.History[0].HTTPStatus != 429 ||
		!strings.Contains(h.History[0].Error, "ReservedFunctionConcurrentInvocationLimitExceeded") || h.History[2].Outcome != "SUCCEEDED" {
		t.Errorf("history = %+v; want two throttles naming Lambda's reason, then a success", h)
	}

	resp, body := get(t, g.Base+"/v1/functions/reserved")
	var fn struct {
		Concurrency int `json:"concurrency"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &fn) != nil || fn.Concurrency != 3 {
		t.Errorf("GET function: %d %s; want concurrency 3, the reserved concurrency", resp.StatusCode, body)
	}
	if !strings.Contains(logs.String(), `function=reserved`) || !strings.Contains(logs.String(), `concurrency_from="the function's reserved concurrency (GetFunctionConcurrency)"`) {
		t.Errorf("logs do not say where the limit came from:\n%s", logs.String())
	}
	ok := submit(t, g, "reserved", "application/json", `{}`)
	if j := waitREST(t, g, ok, 10*time.Second); j.State != "SUCCEEDED" {
		t.Errorf("reserved: %+v", j)
	}
	for _, name := range []string{"broken", "busy"} {
		if !strings.Contains(logs.String(), "function="+name) || !strings.Contains(logs.String(), "concurrency_from=config") {
			t.Errorf("no log of %s's configured concurrency", name)
		}
	}
}

func base64Tail(s string) string { return base64.StdEncoding.EncodeToString([]byte(s + "\n")) }

// startTestGatewayLogs is servertest.Start with its logs in logs; its data
// directory is the test's, unless it runs on an external NATS.
func startTestGatewayLogs(t *testing.T, cfg *config.Config, opts server.Options, logs io.Writer) *servertest.Gateway {
	t.Helper()
	dataDir := ""
	if opts.NATSURL == "" {
		dataDir = t.TempDir()
	}
	p, err := servertest.New(t, dataDir, cfg, opts, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return servertest.Run(t, p)
}

// TestNATSTargetEndToEnd runs jobs through a gateway on an external NATS
// server to a micro service there: replies succeed, service errors fail
// their attempts, and with no service listening a job waits, throttled,
// until one starts.
func TestNATSTargetEndToEnd(t *testing.T) {
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	svcConn, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svcConn.Close)
	addService := func(name, subject string) {
		svc, err := micro.AddService(svcConn, micro.Config{Name: name, Version: "1.0.0",
			Endpoint: &micro.EndpointConfig{Subject: subject, Handler: micro.HandlerFunc(func(r micro.Request) {
				if string(r.Data()) == "bad" {
					r.Error("400", "unreadable image", []byte(`{"why":"bad"}`))
					return
				}
				r.Respond([]byte("resized "+string(r.Data())+" for "+r.Headers().Get("Sluice-Job-Id")), micro.WithHeaders(micro.Headers{"Content-Type": {"text/plain"}}))
			})}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { svc.Stop() })
		if err := svcConn.Flush(); err != nil { // subscribed before any request
			t.Fatal(err)
		}
	}
	addService("resize", "svc.resize")

	// Without --nats-url no service could reach the embedded server.
	embeddedCfg := &config.Config{Functions: []config.FunctionConfig{{Name: "resize", Target: &config.TargetConfig{NATS: &config.NATSTargetConfig{Subject: "svc.resize"}}}}}
	if err := embeddedCfg.SetDefaultsAndCheck(); err != nil {
		t.Fatal(err)
	}
	if _, err := server.New(t.Context(), embeddedCfg, server.Options{HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", DataDir: t.TempDir()},
		slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "functions (resize).target.nats: needs --nats-url") {
		t.Errorf("a NATS target on the embedded server: %v; want an error asking for --nats-url", err)
	}

	var logs buffertest.LockedBuffer
	g := startTestGatewayLogs(t, &config.Config{Functions: []config.FunctionConfig{
		{Name: "resize", Timeout: config.Duration(5 * time.Second), Target: &config.TargetConfig{NATS: &config.NATSTargetConfig{Subject: "svc.resize"}}},
		{Name: "crop", Retry: config.RetryConfig{MaxAttempts: 1}, Target: &config.TargetConfig{NATS: &config.NATSTargetConfig{Subject: "svc.crop"}}},
	}}, server.Options{NATSURL: srv.ClientURL()}, &logs)

	id := submit(t, g, "resize", "image/png", "cat.png")
	if j := waitREST(t, g, id, 10*time.Second); j.State != "SUCCEEDED" || string(j.Result.Body) != "resized cat.png for "+id || j.Result.ContentType != "text/plain" {
		t.Errorf("job = %+v", j)
	}
	bad := submit(t, g, "resize", "image/png", "bad")
	if j := waitREST(t, g, bad, 10*time.Second); j.State != "FAILED" || j.Error != "NATS service error 400: unreadable image" || j.Result == nil || string(j.Result.Body) != `{"why":"bad"}` {
		t.Errorf("a service error: %+v; want FAILED (400 is not retried) with the error and its data", j)
	}

	// No service on svc.crop yet: the job is throttled, not failed, and
	// runs once a service starts.
	waiting := submit(t, g, "crop", "text/plain", "dog.png")
	buffertest.WaitForNoError(t, 10*time.Second, "a throttle recorded", func() error {
		if h := jobHistory(t, g, waiting); h.Throttles == 0 {
			return fmt.Errorf("job %+v", h)
		}
		return nil
	})
	if h := jobHistory(t, g, waiting); h.State == "FAILED" || h.Attempts != 0 || h.History[0].Outcome != "THROTTLED" || h.History[0].HTTPStatus != 503 ||
		!strings.Contains(h.History[0].Error, "no NATS service") {
		t.Errorf("with no responders: %+v; want throttles, no attempt spent", h)
	}
	addService("crop", "svc.crop")
	if j := waitREST(t, g, waiting, 15*time.Second); j.State != "SUCCEEDED" || j.Attempts != 1 || string(j.Result.Body) != "resized dog.png for "+waiting {
		t.Errorf("once the service is up: %+v; want SUCCEEDED in 1 attempt (max_attempts is 1)", j)
	}
}

// TestHTTPTargetHeaders: target.http sends its configured headers.
func TestHTTPTargetHeaders(t *testing.T) {
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "key=%s job=%s", r.Header.Get("X-Api-Key"), r.Header.Get("Sluice-Job-Id"))
	}))
	t.Cleanup(fn.Close)
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "keyed",
		Target: &config.TargetConfig{HTTP: &config.HTTPTargetConfig{URL: fn.URL, Headers: map[string]string{"x-api-key": "k-123"}}}})
	id := submit(t, g, "keyed", "text/plain", "x")
	if j := waitREST(t, g, id, 10*time.Second); j.State != "SUCCEEDED" || string(j.Result.Body) != "key=k-123 job="+id {
		t.Errorf("job = %+v", j)
	}
}
