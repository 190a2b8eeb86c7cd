package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/dispatch/target"
)

// flakySource is a real queue whose pacing reads and consumer set-ups fail
// as they do while JetStream has no leader, the first times they are tried.
type flakySource struct {
	*buffer.Queue
	failures int32 // how many of each fail
	err      error
	pacing   atomic.Int32
	consumer atomic.Int32
}

func (s *flakySource) Pacing(ctx context.Context, function string) (shared.PacingState, error) {
	if s.pacing.Add(1) <= s.failures {
		return shared.PacingState{}, fmt.Errorf("buffer: read pacing of %s: %w", function, s.err)
	}
	return s.Queue.Pacing(ctx, function)
}

func (s *flakySource) Consumer(ctx context.Context, cfg buffer.ConsumerConfig) (*buffer.Consumer, error) {
	if s.consumer.Add(1) <= s.failures {
		return nil, fmt.Errorf("buffer: consumer of %s: %w", cfg.Function, s.err)
	}
	return s.Queue.Consumer(ctx, cfg)
}

func TestRunWaitsOutJetStreamUnavailableAtStart(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	srv := httptest.NewServer(fnsim.New(fnsim.Config{}))
	defer srv.Close()
	ids := submit(t, q, "echo", 3)

	src := &flakySource{Queue: q, failures: 2, err: nats.ErrNoResponders}
	d, err := dispatch.New(dispatch.Config{
		Source:       src,
		Functions:    []dispatch.Function{{Name: "echo", Invoker: &target.HTTP{URL: srv.URL}, Concurrency: 2, Timeout: 5 * time.Second}},
		DrainTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	for _, id := range ids {
		if job := waitJob(t, q, id, 20*time.Second); job.State != sluicev1.Job_SUCCEEDED {
			t.Errorf("job %s = %v, want SUCCEEDED once JetStream answers", id, job.State)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after waiting JetStream out", err)
	}
	if p, c := src.pacing.Load(), src.consumer.Load(); p != 3 || c != 3 {
		t.Errorf("pacing read %d times, consumer set up %d times; want 3 each (two refused, then one that worked)", p, c)
	}
}

func TestRunStopsOnASetupErrorWaitingWillNotMend(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	boom := errors.New("boom")
	d, err := dispatch.New(dispatch.Config{
		Source:    &flakySource{Queue: q, failures: 1, err: boom},
		Functions: []dispatch.Function{{Name: "echo", Invoker: &target.HTTP{URL: "http://127.0.0.1:9/"}, Concurrency: 1, Timeout: time.Second}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(t.Context()); !errors.Is(err, boom) {
		t.Errorf("Run = %v, want the set-up error %v at once", err, boom)
	}
}
