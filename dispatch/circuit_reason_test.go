package dispatch_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
)

// tellingInvoker fails every invocation with an error in the function's
// own words, which may name what is in the job.
type tellingInvoker struct{}

func (tellingInvoker) Invoke(context.Context, *target.Invocation) (*target.Response, error) {
	return &target.Response{Status: http.StatusInternalServerError, Error: "order 4711 of acme: card declined"}, nil
}

// The circuit's reason is every tenant's to read (GetFunction, a queued
// job's waiting reason): a failed probe's job, some tenant's, must not
// put its error there (#19 item 16).
func TestCircuitReasonCarriesNoJobsError(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	submit(t, q, "f", 6)
	startDispatcher(t, q, dispatch.Function{
		Name: "f", Invoker: tellingInvoker{}, Concurrency: 2, Timeout: time.Second,
		Retry:   retry.Policy{MaxAttempts: 100, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond},
		Circuit: circuit.Policy{MinAttempts: 2, Cooldown: 50 * time.Millisecond, MaxCooldown: 100 * time.Millisecond},
	}, time.Second)
	// Opened by failures, then reopened by a failed probe.
	var p shared.PacingState
	buffertest.WaitForNoError(t, 20*time.Second, "the circuit reopened by a failed probe", func() error {
		var err error
		if p, err = q.Pacing(t.Context(), "f"); err != nil {
			t.Fatal(err)
		}
		if p.Circuit.Opens >= 2 && p.Circuit.State == shared.CircuitOpen {
			return nil
		}
		return fmt.Errorf("circuit %+v", p.Circuit)
	})
	if strings.Contains(p.Circuit.Reason, "acme") || !strings.Contains(p.Circuit.Reason, "probe") {
		t.Errorf("circuit reason %q; want it to say the probe failed, without the probe job's error", p.Circuit.Reason)
	}
}
