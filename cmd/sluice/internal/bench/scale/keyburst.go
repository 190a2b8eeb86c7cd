package scale

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/metadata"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
)

// The functions the key burst goes to: keyed, the only one with
// key_concurrency (1), and its twin without, for the baseline burst.
const keyedFunctionName, unkeyedFunctionName = "keyed", "unkeyed"

// keyedConfig is the two burst functions' entries in the gateway's config.
func keyedConfig(b Flags, fnAddr string) string {
	return fmt.Sprintf("  - name: %[1]s\n    url: http://%[2]s/%[1]s\n    concurrency: %[3]d\n    timeout: 30s\n    key_concurrency: 1\n", keyedFunctionName, fnAddr, b.keyWindow) +
		fmt.Sprintf("  - name: %[1]s\n    url: http://%[2]s/%[1]s\n    concurrency: %[3]d\n    timeout: 30s\n", unkeyedFunctionName, fnAddr, b.keyWindow)
}

// keyedFunction runs each keyed job for a while and checks, at the
// function, that no two jobs of one key run at once. A job's payload is
// its key.
type keyedFunction struct {
	run time.Duration

	mu          sync.Mutex
	running     map[string]int
	now, most   int // jobs running, and the most at once
	keyMost     int // the most of one key at once
	calls, done int
	last        time.Time // when the last job ended
}

func (f *keyedFunction) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	key := string(body)
	f.mu.Lock()
	f.calls++
	f.now++
	f.most = max(f.most, f.now)
	f.running[key]++
	f.keyMost = max(f.keyMost, f.running[key])
	f.mu.Unlock()
	time.Sleep(f.run) // the function's work
	f.mu.Lock()
	f.now--
	f.running[key]--
	f.done++
	f.last = time.Now()
	f.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// finished is how many jobs have ended at the function, and when the last.
func (f *keyedFunction) finished() (int, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.done, f.last
}

// keyMeasures are what the key burst measured.
type keyMeasures struct {
	submitted      time.Duration // the submits, first start to last return
	drain          time.Duration // first submit's start to the last job's end at the function
	ideal          time.Duration // what the function's window alone allows
	calls, done    int
	most, keyMost  int
	succeeded, bad int
	batches        string // mean group-commit batch: jobs / states / keys
}

// keyBurst submits b.keyJobs jobs over b.keys keys, b.keySubmitters at a
// time, to function (keyed, or for the baseline unkeyed: the same jobs
// without their keys), waits until fn has run them all, and reads every
// job's outcome.
func (r *scaleRun) keyBurst(ctx context.Context, function string, fn *keyedFunction) (*keyMeasures, error) {
	b := r.b
	clients, closeClients, err := r.stack.GRPCClients(b.keySubmitters)
	if err != nil {
		return nil, err
	}
	defer closeClients()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+scaleKey(0))
	batches0, err := r.stack.BatchCounts(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, b.keyJobs)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, client := range clients {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < b.keyJobs; i = int(next.Add(1) - 1) {
				key := fmt.Sprintf("customer-%06d", i%b.keys)
				req := &sluicev1.SubmitJobRequest{
					Function: function, ConcurrencyKey: key,
					Payload: &httpbody.HttpBody{ContentType: "text/plain", Data: []byte(key)},
				}
				if function != keyedFunctionName {
					req.ConcurrencyKey = ""
				}
				resp, err := client.SubmitJob(ctx, req)
				if err != nil {
					failed.CompareAndSwap(nil, fmt.Errorf("submit %d: %w", i, err))
					return
				}
				ids[i] = resp.GetJob().GetId()
			}
		})
	}
	wg.Wait()
	m := &keyMeasures{submitted: time.Since(t0)}
	if err, _ := failed.Load().(error); err != nil {
		return nil, err
	}
	perKey := (b.keyJobs + b.keys - 1) / b.keys
	m.ideal = time.Duration(max((b.keyJobs+b.keyWindow-1)/b.keyWindow, perKey)) * b.keyRun
	fmt.Fprintf(r.progress, "bench scale: %d jobs for %s stored in %s\n", b.keyJobs, function, m.submitted.Round(time.Millisecond))
	deadline := time.Now().Add(10*time.Minute + 20*m.ideal)
	for {
		done, last := fn.finished()
		if done >= b.keyJobs {
			m.drain = last.Sub(t0)
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d keyed jobs ran at the function by the deadline", done, b.keyJobs)
		}
		if err := r.wait(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	fn.mu.Lock()
	m.calls, m.done, m.most, m.keyMost = fn.calls, fn.done, fn.most, fn.keyMost
	fn.mu.Unlock()
	batches1, err := r.stack.BatchCounts(ctx)
	if err != nil {
		return nil, err
	}
	m.batches = fmt.Sprintf("%s / %s / %s", harness.MeanBatch(batches0, batches1, "jobs"),
		harness.MeanBatch(batches0, batches1, "states"), harness.MeanBatch(batches0, batches1, "keys"))
	return m, r.outcomes(ctx, clients, ids, m)
}

// outcomes reads every job's state, the clients sharing the work.
func (r *scaleRun) outcomes(ctx context.Context, clients []sluicev1.JobServiceClient, ids []string, m *keyMeasures) error {
	var next atomic.Int64
	var succeeded, bad atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for _, client := range clients {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(ids); i = int(next.Add(1) - 1) {
				state, err := waitFinished(ctx, client, ids[i])
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				if state == sluicev1.Job_SUCCEEDED {
					succeeded.Add(1)
				} else {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	m.succeeded, m.bad = int(succeeded.Load()), int(bad.Load())
	err, _ := failed.Load().(error)
	return err
}

// reportKeyBurst prints the key burst's table: the keyed burst beside the
// baseline, the same jobs without keys, if it ran.
func reportKeyBurst(stdout io.Writer, b Flags, keyed, base *keyMeasures) {
	fmt.Fprintf(stdout, "\nkey burst: %d jobs over %d keys (tenant-00000's), key_concurrency 1, to a function of concurrency %d taking %s a job; %d gRPC submitters\n",
		b.keyJobs, b.keys, b.keyWindow, b.keyRun, b.keySubmitters)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, value func(m *keyMeasures) string) {
		fmt.Fprintf(tw, "%s\t%s\t", name, value(keyed))
		if base != nil {
			fmt.Fprintf(tw, "%s\t", value(base))
		}
		fmt.Fprintln(tw)
	}
	row("measure", func(m *keyMeasures) string {
		if m == keyed {
			return "keyed"
		}
		return "same jobs, no keys"
	})
	row("all stored (submits' first start to last return)", func(m *keyMeasures) string { return m.submitted.Round(time.Millisecond).String() })
	row("drained (first submit's start to the last job's end at the function)", func(m *keyMeasures) string { return m.drain.Round(time.Millisecond).String() })
	row("the function's window alone allows", func(m *keyMeasures) string { return m.ideal.Round(time.Millisecond).String() })
	row("drain ÷ window's time", func(m *keyMeasures) string { return fmt.Sprintf("%.3f", m.drain.Seconds()/m.ideal.Seconds()) })
	row("calls at the function", func(m *keyMeasures) string { return fmt.Sprint(m.calls) })
	row("most running at once / of one key", func(m *keyMeasures) string { return fmt.Sprintf("%d / %d", m.most, m.keyMost) })
	row("mean group-commit batch: jobs / states / keys", func(m *keyMeasures) string { return m.batches })
	row("SUCCEEDED", func(m *keyMeasures) string { return fmt.Sprintf("%d of %d", m.succeeded, b.keyJobs) })
	tw.Flush()
	if base != nil {
		fmt.Fprintf(stdout, "keyed drain ÷ unkeyed drain: %.3f\n", keyed.drain.Seconds()/base.drain.Seconds())
	}
}

// check fails a burst that broke its limits or lost a job.
func (m *keyMeasures) check(b Flags) error {
	switch {
	case m.keyMost > 1:
		return fmt.Errorf("key burst: %d jobs of one key ran at once at the function; key_concurrency is 1", m.keyMost)
	case m.succeeded != b.keyJobs:
		return fmt.Errorf("key burst: %d of %d jobs SUCCEEDED", m.succeeded, b.keyJobs)
	}
	return nil
}
