package harness

import (
	"context"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// LoadResult is what a closed-loop load (RunLoad) measured.
type LoadResult struct {
	Ops     int // calls made
	elapsed time.Duration
	lat     []time.Duration // sorted
}

// PerSecond is the calls made per second.
func (r *LoadResult) PerSecond() float64 { return float64(r.Ops) / r.elapsed.Seconds() }

// Quantile is the q-quantile of the latencies (nearest rank).
func (r *LoadResult) Quantile(q float64) time.Duration { return Quantile(r.lat, q) }

// Quantile is the q-quantile (nearest rank) of sorted latencies; 0 if
// there are none.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// RunLoad calls op from workers goroutines, each calling again as soon as
// its last call returned, for d, and measures every call. The first error
// stops it: a benchmark that loses work has no figure worth printing.
func RunLoad(ctx context.Context, workers int, d time.Duration, op func(ctx context.Context, worker int) error) (*LoadResult, error) {
	lats := make([][]time.Duration, workers)
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		g.Go(func() error {
			l := make([]time.Duration, 0, 1024)
			for t0 := time.Now(); t0.Before(deadline); t0 = time.Now() {
				if err := op(gctx, w); err != nil {
					return err
				}
				l = append(l, time.Since(t0))
			}
			lats[w] = l
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	r := &LoadResult{elapsed: time.Since(start), lat: slices.Concat(lats...)}
	r.Ops = len(r.lat)
	slices.Sort(r.lat)
	return r, nil
}

// RunN calls op for each i from 0 to n-1 from up to workers goroutines,
// each taking the next i as soon as its last call returned. The first
// error stops it (and ends the ctx op was given).
func RunN(ctx context.Context, workers, n int, op func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range min(workers, n) {
		g.Go(func() error {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := op(gctx, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// Millis formats a latency in milliseconds, for a table.
func Millis(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }

// MiB formats a size in bytes in whole MiB, for a table.
func MiB(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 0, 64) }
