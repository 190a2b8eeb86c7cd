package buffertest

import (
	"fmt"
	"sync"
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
	for failed := 0; failed < n; {
		var ds []*buffer.Delivery
		if _, err := c.Fetch(tb.Context(), min(n-failed, 500), 5*time.Second, func(d *buffer.Delivery) { ds = append(ds, d) }); err != nil {
			tb.Fatal(err)
		}
		if len(ds) == 0 {
			tb.Fatalf("%d of %d jobs of %s delivered", failed, n, function)
		}
		errs := make(chan error, len(ds))
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < len(ds); i += workers {
					if err := ds[i].Fail(tb.Context(), "failed for the test", nil); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			tb.Fatal(err)
		}
		failed += len(ds)
	}
	return ids
}
