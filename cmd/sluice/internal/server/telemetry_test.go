package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// One job followed from the REST submit, through the queue, to the
// function: one trace. (REST calls the services in process: no RPC span
// in between.)
func TestOneTraceAcrossGatewayAndFunction(t *testing.T) {
	fnURL, traceparentSent := buffertest.HeaderFunction(t, "traceparent")
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	g := servertest.Start(t, t.TempDir(), &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: fnURL}}},
		server.Options{TracerProvider: tp})
	resp := post(t, g.Base+"/v1/functions/f/jobs", "text/plain", []byte("x"))
	var job jobJSON
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d", resp.StatusCode)
	}
	job = decodeJobBody(t, resp)
	if j := waitREST(t, g, job.ID, 10*time.Second); j.State != "SUCCEEDED" {
		t.Fatalf("job ended %s", j.State)
	}

	byName := map[string]sdktrace.ReadOnlySpan{}
	spanNames := func() []string {
		names := make([]string, 0, len(byName))
		for n := range byName {
			names = append(names, n)
		}
		return names
	}
	buffertest.WaitForNoError(t, 5*time.Second, `the attempt's span, "invoke f"`, func() error {
		for _, s := range spans.Ended() {
			byName[s.Name()] = s
		}
		if byName["invoke f"] == nil {
			return fmt.Errorf("spans %v", spanNames())
		}
		return nil
	})
	rest, submit, invoke := byName["POST /v1/"], byName["submit f"], byName["invoke f"]
	if rest == nil || submit == nil || invoke == nil {
		t.Fatalf("spans %v; want the REST request, the submit and the attempt", spanNames())
	}
	id := rest.SpanContext().TraceID()
	for _, s := range []sdktrace.ReadOnlySpan{submit, invoke} {
		if s.SpanContext().TraceID() != id {
			t.Errorf("span %q is in trace %s; want the REST request's %s", s.Name(), s.SpanContext().TraceID(), id)
		}
	}
	if submit.Parent().SpanID() != rest.SpanContext().SpanID() {
		t.Errorf("the submit's parent is %s; want the REST request's span %s", submit.Parent().SpanID(), rest.SpanContext().SpanID())
	}
	if invoke.Parent().SpanID() != submit.SpanContext().SpanID() {
		t.Errorf("the attempt's parent is %s; want the submit span %s", invoke.Parent().SpanID(), submit.SpanContext().SpanID())
	}
	traceparent := traceparentSent()
	if !strings.HasPrefix(traceparent, "00-"+id.String()+"-"+invoke.SpanContext().SpanID().String()) {
		t.Errorf("function got traceparent %q; want trace %s under the attempt span", traceparent, id)
	}
}

func decodeJobBody(t *testing.T, resp *http.Response) jobJSON {
	t.Helper()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return decodeJob(t, b.Bytes())
}

// scrape reads /metrics into sample name{labels} → value.
func scrape(t *testing.T, g *servertest.Gateway) map[string]float64 {
	t.Helper()
	resp, body := get(t, g.Base+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	return parseMetrics(body)
}

// parseMetrics reads Prometheus text into sample name{labels} → value.
func parseMetrics(body []byte) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// scrapeQuietly is scrape for a goroutine other than the test's: it reads
// nothing (an empty map) where scrape would fail the test.
func scrapeQuietly(ctx context.Context, g *servertest.Gateway) map[string]float64 {
	resp, body, err := fetch(ctx, g.Base+"/metrics")
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	return parseMetrics(body)
}

// sample is the value of the sample whose name starts with name and whose
// labels include sluice_function=fn and the given ones, summed over the
// rest.
func sample(samples map[string]float64, name, fn string, labels ...string) (float64, bool) {
	sum, found := 0.0, false
	for k, v := range samples {
		match := strings.HasPrefix(k, name+"{") && strings.Contains(k, `sluice_function="`+fn+`"`)
		for _, l := range labels {
			match = match && strings.Contains(k, l)
		}
		if match {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

// During a burst against a platform with a lower limit than configured,
// /metrics shows the window moving, and throttles and cold starts counted
// as the platform counts them.
func TestMetricsDuringBurst(t *testing.T) {
	sim, fnURL := servertest.StartFunction(t, fnsim.Config{Concurrency: 6, InitialBurst: 2, ScalePerMinute: 240, ColdStart: 50 * time.Millisecond, Duration: 40 * time.Millisecond})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{
		Name: "f", URL: fnURL, Concurrency: 10,
		Scaling: &config.ScalingConfig{Initial: 2, PerMinute: 600},
	})
	// The window is watched from before the first submit: under load, the
	// submits alone can take as long as the window's climb.
	var (
		mu      sync.Mutex
		windows = map[float64]bool{}
	)
	watching, stopWatching := context.WithCancel(t.Context())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watching.Err() == nil {
			if w, ok := sample(scrapeQuietly(watching, g), "sluice_dispatch_window", "f"); ok {
				mu.Lock()
				windows[w] = true
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond) // between scrapes: the window moves every 100 ms at most
		}
	}()
	// A burst, not a trickle: sent one by one on a loaded machine, the
	// submits come no faster than the platform runs them, and it never
	// throttles.
	var submits sync.WaitGroup
	for range 10 {
		submits.Go(func() {
			for range 15 {
				resp, err := http.Post(g.Base+"/v1/functions/f/jobs", "text/plain", strings.NewReader("x"))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					t.Errorf("submit: %d", resp.StatusCode)
				}
			}
		})
	}
	submits.Wait()
	// The burst is done when the queue is empty, every job was invoked, and
	// every invocation's outcome is counted: the last ones are counted a
	// moment after fnsim has answered them.
	buffertest.WaitForNoError(t, 60*time.Second, "the burst done", func() error {
		m := scrape(t, g)
		depth, _ := sample(m, "sluice_queue_depth", "f")
		succeeded, _ := sample(m, "sluice_invocations_total", "f", `sluice_outcome="succeeded"`)
		if n := sim.Stats().Invocations; depth != 0 || n < 150 || int(succeeded) != n {
			return fmt.Errorf("queue depth %v, %d invocations of 150, %v counted succeeded", depth, n, succeeded)
		}
		return nil
	})
	stopWatching()
	<-watched
	mu.Lock()
	defer mu.Unlock()
	if len(windows) < 2 {
		t.Errorf("the window took the values %v during the burst; want it to move", windows)
	}
	// Counters are exported as they happen: once the burst is done, they
	// must equal what the platform saw.
	st := sim.Stats()
	m := scrape(t, g)
	throttles, _ := sample(m, "sluice_throttles_total", "f")
	cold, _ := sample(m, "sluice_cold_starts_total", "f")
	succeeded, _ := sample(m, "sluice_invocations_total", "f", `sluice_outcome="succeeded"`)
	limit, _ := sample(m, "sluice_dispatch_limit", "f")
	t.Logf("fnsim: %+v; metrics: throttles %v, cold starts %v, succeeded %v, window values %v", st, throttles, cold, succeeded, windows)
	if int(throttles) != st.Throttled || st.Throttled == 0 {
		t.Errorf("sluice_throttles_total = %v; fnsim throttled %d (want equal, and some)", throttles, st.Throttled)
	}
	if int(cold) != st.ColdStarts || st.ColdStarts == 0 {
		t.Errorf("sluice_cold_starts_total = %v; fnsim started %d environments (want equal, and some)", cold, st.ColdStarts)
	}
	if int(succeeded) != st.Invocations || limit != 10 {
		t.Errorf("succeeded invocations %v (fnsim ran %d), limit %v (want 10)", succeeded, st.Invocations, limit)
	}
	for _, name := range []string{"sluice_jobs_submitted_total", "sluice_invocation_duration_seconds_bucket", "sluice_queue_wait_seconds_bucket", "sluice_queue_oldest_age_seconds", "sluice_dispatch_in_flight"} {
		if _, ok := sample(m, name, "f"); !ok {
			t.Errorf("no %s for function f in /metrics", name)
		}
	}
}

func TestHealthAndReadiness(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.Start(t, t.TempDir(), &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: fnURL}}},
		server.Options{ShutdownDelay: 500 * time.Millisecond})
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, body := get(t, g.Base+path); resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	stopped := make(chan struct{})
	go func() { g.Stop(); close(stopped) }()
	// During the shutdown delay (500ms): not ready, but still serving.
	buffertest.WaitForNoError(t, 400*time.Millisecond, "/readyz answering 503 once shutting down", func() error {
		if resp, body := get(t, g.Base+"/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return nil
	})
	if resp, _ := get(t, g.Base+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz during the shutdown delay: %d; want 200", resp.StatusCode)
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway did not stop")
	}
	if _, err := http.Get(g.Base + "/healthz"); err == nil {
		t.Error("the gateway still answers after stopping")
	}
}

// TestCountersAreZeroFromTheStart (#22 item 3): right after start, before
// any job, /metrics has every counter of every function at 0, with each
// label value it knows (outcomes, reasons), so that an alert on
// increase() sees the first event; and no series carries otel_scope_*
// labels.
func TestCountersAreZeroFromTheStart(t *testing.T) {
	g := servertest.StartFunctions(t, t.TempDir(),
		config.FunctionConfig{Name: "f", URL: "http://127.0.0.1:9/"},
		config.FunctionConfig{Name: "g", URL: "http://127.0.0.1:9/"})
	resp, body := get(t, g.Base+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	if strings.Contains(string(body), "otel_scope_") {
		t.Errorf("/metrics carries otel_scope_* labels:\n%s", body)
	}
	samples := parseMetrics(body)
	for _, fn := range []string{"f", "g"} {
		for _, c := range []struct {
			name   string
			labels []string
		}{
			{"sluice_invocations_total", []string{`sluice_outcome="succeeded"`}},
			{"sluice_invocations_total", []string{`sluice_outcome="failed"`}},
			{"sluice_invocations_total", []string{`sluice_outcome="throttled"`}},
			{"sluice_throttles_total", nil},
			{"sluice_cold_starts_total", nil},
			{"sluice_retries_total", nil},
			{"sluice_dead_letters_total", []string{`sluice_reason="failed"`}},
			{"sluice_dead_letters_total", []string{`sluice_reason="expired"`}},
			{"sluice_jobs_submitted_total", []string{`sluice_outcome="accepted"`}},
			{"sluice_jobs_submitted_total", []string{`sluice_outcome="refused"`}},
		} {
			if v, ok := sample(samples, c.name, fn, c.labels...); !ok || v != 0 {
				t.Errorf("%s{sluice_function=%q %v}: %v, %v; want a sample at 0", c.name, fn, c.labels, v, ok)
			}
		}
	}
}
