package buffertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
)

// DeadLetters submits n jobs of tenant for function, fails each at once,
// which moves it to the dead letters, and returns their IDs. It pulls the
// function's jobs with a consumer of its own: call it before a dispatcher
// of the function starts, or without one.
func DeadLetters(tb testing.TB, q *buffer.Queue, function, tenant string, n int) []string {
	tb.Helper()
	const workers = 16
	ids := make([]string, n)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				job, err := q.Submit(tb.Context(), function, fmt.Appendf(nil, "%s %d", tenant, i), "text/plain", buffer.WithTenant(tenant))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = job.Id
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatal(err)
	}
	c, err := q.Consumer(tb.Context(), buffer.ConsumerConfig{Function: function, MaxInFlight: 1000, AckWait: time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	if n == 0 {
		return ids
	}
	// Consume hands the jobs over one by one; the workers fail them, and
	// the last one stops it.
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	defer cancel()
	var (
		failed   atomic.Int64
		failOnce sync.Once
		failErr  error
	)
	deliveries := make(chan *buffer.Delivery)
	for range workers {
		wg.Go(func() {
			for d := range deliveries {
				if err := d.Fail(tb.Context(), "failed for the test", nil); err != nil {
					failOnce.Do(func() { failErr = err })
					cancel()
					continue
				}
				if failed.Add(1) == int64(n) {
					cancel()
				}
			}
		})
	}
	err = c.Consume(ctx, min(n, 500), func(d *buffer.Delivery) {
		select {
		case deliveries <- d:
		case <-ctx.Done(): // one too many: left to its ack wait
		}
	})
	close(deliveries)
	wg.Wait()
	if err != nil {
		tb.Fatal(err)
	}
	if failErr != nil {
		tb.Fatal(failErr)
	}
	if got := failed.Load(); got < int64(n) {
		tb.Fatalf("%d of %d jobs of %s delivered and failed within a minute", got, n, function)
	}
	return ids
}
