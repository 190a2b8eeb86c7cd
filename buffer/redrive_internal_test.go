package buffer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/embedded"
)

// openTestQueue opens a Queue on a fresh embedded JetStream server.
func openTestQueue(t *testing.T, cfg Config) *Queue {
	t.Helper()
	e, err := embedded.Start(embedded.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := Open(t.Context(), nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// lostAck is a delivered message whose acknowledgement never reaches the
// server: a plain Ack reports success, as a fire-and-forget ack lost on
// the way does; a DoubleAck, which waits for the server, gets no answer.
type lostAck struct{ jetstream.Msg }

func (lostAck) Ack() error                          { return nil }
func (lostAck) DoubleAck(ctx context.Context) error { return context.DeadlineExceeded }

func fetchAll(t *testing.T, c *Consumer, max int, wait time.Duration) []*Delivery {
	t.Helper()
	var ds []*Delivery
	if _, err := c.Fetch(t.Context(), max, wait, func(d *Delivery) { ds = append(ds, d) }); err != nil {
		t.Fatal(err)
	}
	return ds
}

// #19 item 5: a job dead-lettered whose message is still unacknowledged
// (the ack was lost) and then redriven must run once, not once for the
// redrive's message and again for the old one.
func TestRedriveWhileOldMessageUnacknowledgedRunsOnce(t *testing.T) {
	q := openTestQueue(t, Config{})
	ctx := t.Context()
	const ackWait = 500 * time.Millisecond
	job, err := q.Submit(ctx, "f", []byte("payload"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	c, err := q.Consumer(ctx, ConsumerConfig{Function: "f", MaxInFlight: 10, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	ds := fetchAll(t, c, 1, 2*time.Second)
	if len(ds) != 1 {
		t.Fatalf("fetched %d, want the job", len(ds))
	}
	d := ds[0]
	d.msg = lostAck{d.msg}
	if _, err := d.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	failErr := d.Fail(ctx, "boom", nil)
	if failErr == nil {
		t.Errorf("Fail reported success, though the server never confirmed its ack")
	}
	if got, err := q.Get(ctx, job.Id); err != nil || got.State != sluicev1.Job_FAILED || got.DeadLetterTime == nil {
		t.Fatalf("job after Fail = %v, %v; want FAILED and dead-lettered", got, err)
	}

	// The operator redrives it while the old message waits out its ack
	// wait, unacknowledged.
	jobs, notFound, err := q.Redrive(ctx, "f", "", []string{job.Id})
	if err != nil || len(jobs) != 1 || len(notFound) != 0 {
		t.Fatalf("Redrive = %v, %v, %v", jobs, notFound, err)
	}
	time.Sleep(ackWait + 100*time.Millisecond) // the old message is due again

	// Two dispatchers take what is delivered, each preparing its job
	// before either finishes it. They go on for several ack waits, not
	// until the first run: a second run is what must not happen.
	runs := 0
	deadline := time.Now().Add(5 * ackWait)
	for time.Now().Before(deadline) {
		ds := fetchAll(t, c, 10, ackWait)
		var run []*Delivery
		for _, d := range ds {
			switch _, err := d.Prepare(ctx); {
			case errors.Is(err, ErrFinished):
				if err := d.Skip(ctx); err != nil {
					t.Fatal(err)
				}
			case err != nil:
				t.Fatal(err)
			default:
				run = append(run, d)
			}
		}
		for _, d := range run {
			if _, err := d.Begin(ctx); errors.Is(err, ErrFinished) {
				if err := d.Skip(ctx); err != nil {
					t.Fatal(err)
				}
				continue
			} else if err != nil {
				t.Fatal(err)
			}
			runs++
			t.Logf("run %d: message %s redrive %q", runs, d.JobID, d.msg.Headers().Get(headerRedrives))
		}
		for _, d := range run {
			if err := d.Succeed(ctx, &sluicev1.JobResult{HttpStatus: 200}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if runs != 1 {
		t.Errorf("the redriven job ran %d times, want exactly once", runs)
	}
	if got, err := q.Get(ctx, job.Id); err != nil || got.State != sluicev1.Job_SUCCEEDED || got.Redrives != 1 {
		t.Errorf("job = %v, %v; want SUCCEEDED after its redrive", got, err)
	}
	info, err := c.cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer has %d unacknowledged, %d pending; want both messages settled", info.NumAckPending, info.NumPending)
	}
}
