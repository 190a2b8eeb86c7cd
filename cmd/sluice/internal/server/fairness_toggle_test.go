package server_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
)

// toggleFunction is an HTTP function that keeps, per job, what it did: a
// job whose payload starts "fail" fails its first attempt (500); one that
// starts "slow" takes slowFor; the others answer at once. An invocation
// the gateway cut off (shutdown) is counted apart, as is one that came
// while another of the same job was still running.
type toggleFunction struct {
	slowFor time.Duration
	mu      sync.Mutex
	jobs    map[string]*toggleJob
}

type toggleJob struct {
	answered, failed, cutOff int
	running, overlapped      int
}

func (f *toggleFunction) job(id string) *toggleJob {
	j := f.jobs[id]
	if j == nil {
		j = &toggleJob{}
		f.jobs[id] = j
	}
	return j
}

func (f *toggleFunction) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("Sluice-Job-Id")
	f.mu.Lock()
	j := f.job(id)
	j.running++
	if j.running > 1 {
		j.overlapped++
	}
	fail := strings.HasPrefix(string(body), "fail") && j.failed == 0
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		j.running--
		f.mu.Unlock()
	}()
	if strings.HasPrefix(string(body), "slow") {
		select {
		case <-time.After(f.slowFor):
		case <-r.Context().Done():
			f.mu.Lock()
			j.cutOff++
			f.mu.Unlock()
			return
		}
	}
	f.mu.Lock()
	if fail {
		j.failed++
	} else {
		j.answered++
	}
	f.mu.Unlock()
	if fail {
		http.Error(w, "failing once", http.StatusInternalServerError)
		return
	}
	w.Write(body) //nolint:errcheck
}

// inState reports what the function did so far: jobs that failed once,
// and jobs running now.
func (f *toggleFunction) inState() (failedOnce, running int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.failed > 0 && j.answered == 0 {
			failedOnce++
		}
		running += j.running
	}
	return failedOnce, running
}

// Turning fairness on or off (a change of configuration and a restart)
// while jobs of several lanes wait, run, or wait out a retry's backoff
// loses none and runs none twice: on, off, and on again, each phase with
// fresh jobs, interleaved across priorities (the default lane and two
// others), submitted while the last phase's are still unfinished.
func TestFairnessToggleLosesNoneRunsNoneTwice(t *testing.T) {
	fn := &toggleFunction{slowFor: 1500 * time.Millisecond, jobs: map[string]*toggleJob{}}
	srv := httptest.NewServer(fn)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	config := func(fair bool) *config.Config {
		return &config.Config{
			Functions: []config.FunctionConfig{{
				Name: "f", URL: srv.URL, Concurrency: 2, Fairness: fair,
				Retry: config.RetryConfig{MaxAttempts: 3, InitialBackoff: config.Duration(2 * time.Second), Jitter: "none"},
			}},
		}
	}
	type submitted struct{ id, kind string }
	var all []submitted
	submitPhase := func(g *servertest.Gateway, phase int) {
		priorities := []string{"normal", "high", "low"}
		for i := range 18 {
			kind := "fast"
			switch i % 6 {
			case 0, 3:
				kind = "fail"
			case 1:
				kind = "slow"
			}
			code, h, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "",
				fmt.Sprintf("%s phase %d job %d", kind, phase, i), "Sluice-Priority", priorities[i%3])
			if code != http.StatusAccepted {
				t.Fatalf("submit: %d %s", code, body)
			}
			all = append(all, submitted{strings.TrimPrefix(h.Get("Location"), "/v1/jobs/"), kind})
		}
	}
	// waitForMix waits until some jobs failed once (now in backoff) and
	// some are running, so that the stop catches jobs in every state. It is
	// not buffertest.WaitFor, as not finding the mix fails nothing: the
	// stop comes anyway, and tests a little less.
	waitForMix := func() {
		deadline := time.Now().Add(20 * time.Second)
		for {
			failed, running := fn.inState()
			if failed > 0 && running > 0 {
				t.Logf("stopping with %d jobs in backoff, %d running", failed, running)
				return
			}
			if time.Now().After(deadline) {
				t.Logf("no mix of backoff and running jobs within 20s (%d, %d); stopping anyway", failed, running)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	g := servertest.StartConfig(t, dir, config(true))
	submitPhase(g, 1)
	waitForMix()
	g.Stop()

	g = servertest.StartConfig(t, dir, config(false))
	submitPhase(g, 2)
	waitForMix()
	g.Stop()

	g = servertest.StartConfig(t, dir, config(true))
	submitPhase(g, 3)

	// Every job ends, within 90s in all, and succeeds.
	pending := all
	buffertest.WaitForNoError(t, 90*time.Second, "every job ended after the last restart", func() error {
		for ; len(pending) > 0; pending = pending[1:] {
			s := pending[0]
			code, _, body := call(t, http.MethodGet, g.Base+"/v1/jobs/"+s.id, "", "")
			if code != http.StatusOK {
				t.Fatalf("GET job %s: %d %s", s.id, code, body)
			}
			j := decodeJob(t, body)
			if j.State == "QUEUED" || j.State == "RUNNING" {
				return fmt.Errorf("%s job %s still %s", s.kind, s.id, j.State)
			}
			if j.State != "SUCCEEDED" {
				t.Errorf("%s job %s ended %s: %s", s.kind, s.id, j.State, j.Error)
			}
		}
		return nil
	})
	fn.mu.Lock()
	defer fn.mu.Unlock()
	cutOff := 0
	for _, s := range all {
		j := fn.jobs[s.id]
		if j == nil {
			t.Errorf("%s job %s was never invoked", s.kind, s.id)
			continue
		}
		cutOff += j.cutOff
		wantFailed := 0
		if s.kind == "fail" {
			wantFailed = 1
		}
		if j.answered != 1 || j.failed != wantFailed || j.overlapped != 0 {
			t.Errorf("%s job %s: answered %d times, failed %d, overlapping invocations %d; want answered once, failed %d, none overlapping",
				s.kind, s.id, j.answered, j.failed, j.overlapped, wantFailed)
		}
	}
	t.Logf("%d jobs; %d invocations cut off by a stop (and run again)", len(all), cutOff)
}
