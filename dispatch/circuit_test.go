package dispatch_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
)

// outage runs 40 jobs against a function that answers 503 (no Retry-After:
// a failure, not a throttle) for its first 2 seconds, then 200, and returns
// the jobs as they ended and the function's shared pacing.
func outage(t *testing.T, circuit circuit.Policy) ([]*sluicev1.Job, shared.PacingState) {
	t.Helper()
	fn := &buffertest.StatusFunction{}
	fn.Status.Store(http.StatusServiceUnavailable)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	q := buffertest.Queue(t, buffer.Config{})
	ids := submit(t, q, "f", 40)
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 4, Timeout: time.Second,
		Retry:   retry.Policy{MaxAttempts: 3, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		Circuit: circuit,
	}, time.Second)
	time.AfterFunc(2*time.Second, func() { fn.Status.Store(http.StatusOK) })
	jobs := make([]*sluicev1.Job, len(ids))
	for i, id := range ids {
		jobs[i] = waitJob(t, q, id, 60*time.Second)
	}
	p, err := q.Pacing(t.Context(), "f")
	if err != nil {
		t.Fatal(err)
	}
	return jobs, p
}

func TestCircuitBreakerKeepsAnOutageOutOfTheDeadLetters(t *testing.T) {
	jobs, p := outage(t, circuit.Policy{MinAttempts: 5, Cooldown: 300 * time.Millisecond})
	for _, job := range jobs {
		if job.State != sluicev1.Job_SUCCEEDED || job.DeadLetterTime != nil {
			t.Errorf("job %s ended %v after %d attempts (%s); want every job to succeed once the function recovers", job.Id, job.State, job.Attempts, job.Error)
		}
	}
	if p.Circuit.Opens < 2 || p.Circuit.State != shared.CircuitClosed {
		t.Errorf("circuit = %+v; want it opened, reopened by a failed probe, and closed at the end", p.Circuit)
	}
}

// Without the breaker, the same outage spends the jobs' attempts: the test
// above would fail if the breaker did nothing.
func TestWithoutCircuitBreakerAnOutageDeadLettersJobs(t *testing.T) {
	jobs, _ := outage(t, circuit.Policy{Disabled: true})
	dead := 0
	for _, job := range jobs {
		if job.DeadLetterTime != nil {
			dead++
		}
	}
	if dead == 0 {
		t.Errorf("no job was dead-lettered without a circuit breaker; the outage test proves nothing")
	}
}
