package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// pacingRow is one platform behaviour of `sluice bench pacing`: the
// function's config in Sluice, the simulated platform, and what to check.
type pacingRow struct {
	name string
	// Sluice's config of the function: concurrency, then the keys a row
	// needs, each left out of the YAML while zero.
	concurrency        int
	initial, perMinute int     // scaling: {initial, per_minute}
	notAdaptive        bool    // adaptive: false
	pauseFunction      bool    // retry_after: function
	rate               float64 // rate: {per_second}
	// gateways is the number of gateway processes; 0 means 1.
	gateways int
	// jobsScale scales --jobs for the row; 0 means 1.
	jobsScale float64
	// platform is the simulated platform; Duration comes from --duration.
	platform fnsim.Config
	// exempt rows are not held to --max-throttled and --max-drain-ratio.
	exempt bool
	// check is the row's own check of what it saw, if any.
	check func(*burstResult) error
}

// pacingRows is the matrix of `sluice bench pacing`, for a handler of
// run time handler.
func pacingRows(handler time.Duration) []pacingRow {
	const cold = 200 * time.Millisecond
	lower := fnsim.Config{Concurrency: 40, ColdStart: cold}
	ramp := fnsim.Config{Concurrency: 50, InitialBurst: 10, ScalePerMinute: 600, ColdStart: 500 * time.Millisecond}
	ramp2s := ramp
	ramp2s.ColdStart = 2 * time.Second
	noRetryAfter := lower
	noRetryAfter.OmitRetryAfter = true
	jitter := lower
	jitter.Jitter = handler * 4 / 5
	const threeLimit, threeRate = 40, 150
	rows := []pacingRow{
		{name: "matched-ramp", concurrency: 50, initial: 10, perMinute: 600, platform: ramp},
		{name: "lower-limit", concurrency: 100, platform: lower},
		{name: "lower-limit-scaling", concurrency: 100, initial: 100, perMinute: 60000,
			platform: fnsim.Config{Concurrency: 40, InitialBurst: 100, ScalePerMinute: 60000, ColdStart: cold}},
		{name: "lower-limit-no-retry-after", concurrency: 100, platform: noRetryAfter},
		{name: "lower-limit-not-adaptive", concurrency: 100, notAdaptive: true, platform: lower, exempt: true},
		// What a Retry-After pauses: the whole function, against the
		// default (the refused job), on the same platform.
		{name: "lower-limit-pause-function", concurrency: 100, pauseFunction: true, platform: lower, exempt: true},
		{name: "limit-drops", concurrency: 50, jobsScale: 4.0 / 3, platform: fnsim.Config{Concurrency: 50, ColdStart: cold,
			Schedule: []fnsim.Step{{After: 3 * time.Second, Concurrency: 20}, {After: 13 * time.Second, Concurrency: 50}}}},
		{name: "limit-rises", concurrency: 50, platform: fnsim.Config{Concurrency: 20, ColdStart: cold,
			Schedule: []fnsim.Step{{After: 3 * time.Second, Concurrency: 50}}}},
		{name: "rate-limit", concurrency: 100, platform: fnsim.Config{Concurrency: 1000, RatePerSecond: 200, ColdStart: cold}},
		{name: "rate-limit-jitter", concurrency: 100, platform: fnsim.Config{Concurrency: 1000, RatePerSecond: 200, ColdStart: cold, Jitter: handler * 4 / 5}},
		{name: "jitter", concurrency: 100, platform: jitter},
		{name: "cold-2s", concurrency: 50, initial: 10, perMinute: 600, platform: ramp2s},
		{name: "three-gateways", concurrency: threeLimit, rate: threeRate, gateways: 3,
			platform: fnsim.Config{Concurrency: threeLimit, RatePerSecond: 1000, ColdStart: cold},
			check: func(res *burstResult) error {
				// One start a gateway of slack: until the processes see
				// each other's reports (a pacing step), each may spend its
				// bucket's one token on top of its share.
				const slack = 3
				var errs []error
				if res.stats.MaxConcurrent > threeLimit {
					errs = append(errs, fmt.Errorf("max in flight %d, over the concurrency of %d", res.stats.MaxConcurrent, threeLimit))
				}
				if res.stats.MaxStartsPerSecond > threeRate+slack {
					errs = append(errs, fmt.Errorf("max starts/s %d, over the rate of %d (+%d)", res.stats.MaxStartsPerSecond, threeRate, slack))
				}
				return errors.Join(errs...)
			}},
	}
	for i := range rows {
		rows[i].platform.Duration = handler
	}
	return rows
}

// config is the row's function entry in Sluice's YAML: only the keys it
// needs.
func (r pacingRow) config(url string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nurl: %s\n%s", r.name, url, r.keys("\n"))
	return b.String()
}

// keys are the row's config keys beyond name and url, each followed by sep.
func (r pacingRow) keys(sep string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "concurrency: %d%stimeout: 30s%s", r.concurrency, sep, sep)
	if r.perMinute > 0 {
		fmt.Fprintf(&b, "scaling: {initial: %d, per_minute: %d}%s", r.initial, r.perMinute, sep)
	}
	if r.notAdaptive {
		fmt.Fprintf(&b, "adaptive: false%s", sep)
	}
	if r.pauseFunction {
		fmt.Fprintf(&b, "retry_after: function%s", sep)
	}
	if r.rate > 0 {
		fmt.Fprintf(&b, "rate: {per_second: %g}%s", r.rate, sep)
	}
	return b.String()
}

// model is the row's ideal: the platform's ramp, its limit over time
// capped by the configured concurrency, and the tighter of the two rates.
// With jitter the handler's mean run time is Duration.
func (r pacingRow) model() rampModel {
	p := r.platform
	limit := func(platform int) int {
		if platform == 0 {
			return r.concurrency
		}
		return min(r.concurrency, platform)
	}
	m := rampModel{limit: limit(p.Concurrency), initial: p.InitialBurst, perMinute: p.ScalePerMinute, handler: p.Duration, coldStart: p.ColdStart}
	for _, s := range p.Schedule {
		m.schedule = append(m.schedule, limitStep{at: s.After, limit: limit(s.Concurrency)})
	}
	if p.RatePerSecond > 0 {
		m.rate, m.rateBurst = p.RatePerSecond, p.RateBurst
		if m.rateBurst == 0 {
			m.rateBurst = max(1, int(math.Ceil(p.RatePerSecond/10))) // fnsim's default
		}
	}
	if r.rate > 0 && (m.rate == 0 || r.rate < m.rate) {
		m.rate, m.rateBurst = r.rate, 1 // Sluice's default burst
	}
	return m
}

// lastRise is the platform's last rise of its limit: the limit before it
// and the step; ok is false if its schedule has none.
func (r pacingRow) lastRise() (before int, step fnsim.Step, ok bool) {
	prev := r.platform.Concurrency
	for _, s := range r.platform.Schedule {
		if prev > 0 && (s.Concurrency == 0 || s.Concurrency > prev) {
			before, step, ok = prev, s, true
		}
		prev = s.Concurrency
	}
	return before, step, ok
}

// pacingResult is one row's outcome.
type pacingResult struct {
	row   pacingRow
	jobs  int
	ideal time.Duration
	res   *burstResult // nil if the run failed
	err   error
}

// pacingFlags configure `sluice bench pacing`.
type pacingFlags struct {
	jobs, submitters            int
	handler                     time.Duration
	logLevel                    string
	maxThrottled, maxDrainRatio float64
	// rows are the rows --rows picks, in the matrix's order.
	rows []pacingRow
}

// parsePacingFlags parses and checks the flags of `sluice bench pacing`.
func parsePacingFlags(args []string, stderr io.Writer) (pacingFlags, error) {
	fs := flag.NewFlagSet("bench pacing", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b pacingFlags
	var rowList string
	fs.IntVar(&b.jobs, "jobs", 3000, "jobs in each row's burst (limit-drops runs 4/3 as many, to outlast its schedule)")
	fs.DurationVar(&b.handler, "duration", 100*time.Millisecond, "handler run time per invocation (the jitter row: ±4/5 of it)")
	fs.StringVar(&rowList, "rows", "", "comma-separated rows to run, in the matrix's order; empty: all")
	fs.IntVar(&b.submitters, "submitters", 64, "concurrent submitting clients")
	fs.Float64Var(&b.maxThrottled, "max-throttled", 0, "fail a row whose throttled share of invocations (throttled / (invocations + throttled)) is above this fraction; 0: no check")
	fs.StringVar(&b.logLevel, "gateway-log-level", "warn", "the gateways' log level; their logs go to stderr")
	fs.Float64Var(&b.maxDrainRatio, "max-drain-ratio", 0, "fail a row whose drain / ideal is above this; 0: no check")
	if err := cli.ParseFlags(fs, args); err != nil {
		return b, err
	}
	switch {
	case b.jobs < 1 || b.submitters < 1:
		return b, errors.New("bench pacing: --jobs and --submitters must be positive")
	case b.handler <= 0:
		return b, errors.New("bench pacing: --duration must be positive")
	case b.maxThrottled < 0 || b.maxThrottled > 1:
		return b, errors.New("bench pacing: --max-throttled must be a fraction between 0 and 1")
	case b.maxDrainRatio < 0:
		return b, errors.New("bench pacing: --max-drain-ratio must not be negative")
	}
	var err error
	b.rows, err = selectRows(pacingRows(b.handler), rowList)
	return b, err
}

// runBenchPacing runs a burst through Sluice against a matrix of platform
// behaviours (limits below the configured concurrency, with or without
// Retry-After, limits that change, a rate limit, jitter, slow cold starts,
// several gateways), each row with a fresh platform, JetStream and
// gateways, and compares each drain with its ideal.
func runBenchPacing(ctx context.Context, b pacingFlags, dir string, stdout, stderr io.Writer) error {
	fmt.Fprintf(stdout, "bench pacing: %d jobs a row, handler %s, submitted over gRPC by %d clients; each row its own platform (fnsim), embedded JetStream and gateway(s)\n",
		b.jobs, b.handler, b.submitters)
	for _, r := range b.rows {
		fmt.Fprintf(stdout, "  %-27s sluice {%s}, %d gateway(s); platform %s\n", r.name,
			strings.TrimSuffix(r.keys(", "), ", "), max(r.gateways, 1), strings.Join((&harness.FnsimFlags{Config: r.platform}).Args(), " "))
	}
	fmt.Fprintln(stdout)

	var results []pacingResult
	for i, r := range b.rows {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := b.jobs
		if r.jobsScale > 0 {
			n = int(math.Round(float64(b.jobs) * r.jobsScale))
		}
		pr := pacingResult{row: r, jobs: n, ideal: idealDrain(r.model(), n)}
		fmt.Fprintf(stderr, "bench pacing: row %d of %d, %s: %d jobs, ideal drain %s\n", i+1, len(b.rows), r.name, n, pr.ideal.Round(10*time.Millisecond))
		pr.res, pr.err = runPacingRow(ctx, r, n, b.submitters, b.logLevel, pr.ideal, filepath.Join(dir, r.name), stderr)
		results = append(results, pr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	printPacing(stdout, results)
	return checkPacing(results, b.maxThrottled, b.maxDrainRatio)
}

// selectRows picks the rows named in list (comma-separated), in the
// matrix's order; an empty list picks all.
func selectRows(all []pacingRow, list string) ([]pacingRow, error) {
	if strings.TrimSpace(list) == "" {
		return all, nil
	}
	var names []string
	for _, r := range all {
		names = append(names, r.name)
	}
	want := map[string]bool{}
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(names, name) {
			return nil, fmt.Errorf("bench pacing: --rows: no row %q; the rows are %s", name, strings.Join(names, ", "))
		}
		want[name] = true
	}
	var rows []pacingRow
	for _, r := range all {
		if want[r.name] {
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// runPacingRow runs one row's burst of n jobs in a scratch directory of
// its own, giving up well after its ideal drain.
func runPacingRow(ctx context.Context, r pacingRow, n, submitters int, logLevel string, ideal time.Duration, dir string, stderr io.Writer) (*burstResult, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	within := 2*time.Minute + 10*ideal
	ctx, cancel := context.WithTimeoutCause(ctx, within, fmt.Errorf("not drained within %s", within))
	defer cancel()
	res, err := benchSluice(ctx, sluiceRun{
		jobs: n, submitters: submitters, payload: 256, protocol: "grpc", gateways: max(r.gateways, 1),
		platform: (&harness.FnsimFlags{Config: r.platform}).Args(), function: r.name, config: r.config, status: true, logLevel: logLevel,
	}, dir, stderr)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
	}
	return res, err
}

// printPacing prints the table of rows, then each row's gateway view and
// notes.
func printPacing(w io.Writer, results []pacingResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "row\tsucceeded\tthrottled\tmax in flight\tmax starts/s\tdrain\tideal\tdrain/ideal\tjobs/s\t")
	for _, pr := range results {
		ideal := pr.ideal.Round(10 * time.Millisecond).String()
		res := pr.res
		if res == nil {
			fmt.Fprintf(tw, "%s\t-/%d\t-\t-\t-\t-\t%s\t-\t-\t\n", pr.row.name, pr.jobs, ideal)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%.2f%%\t%d\t%d\t%s\t%s\t%.3f\t%.0f\t\n", pr.row.name, res.completed, pr.jobs,
			100*throttledShare(res.stats), res.stats.MaxConcurrent, res.stats.MaxStartsPerSecond,
			res.drain.Round(10*time.Millisecond), ideal, drainRatio(pr), float64(res.completed)/res.drain.Seconds())
	}
	tw.Flush()
	fmt.Fprintln(w, "\nthe gateway's view once drained (GET /v1/functions/{row} → status), and notes:")
	for _, pr := range results {
		fmt.Fprintf(w, "  %s: ", pr.row.name)
		if pr.res == nil {
			fmt.Fprintf(w, "failed: %v\n", pr.err)
			continue
		}
		if st := pr.res.status; st != nil {
			fmt.Fprintf(w, "learnedLimit %d, reason %q", st.LearnedLimit, st.Reason)
			if st.LearnedRatePerSecond != nil {
				fmt.Fprintf(w, ", learnedRatePerSecond %.1f", *st.LearnedRatePerSecond)
			}
		}
		if before, step, ok := pr.row.lastRise(); ok {
			use := "never within the run"
			if pr.res.stats.TimeToUse > 0 {
				use = pr.res.stats.TimeToUse.Round(time.Millisecond).String() + " later"
			}
			fmt.Fprintf(w, "; the platform's limit rose from %d to %d at %s, and more than %d were in flight %s", before, step.Concurrency, step.After, before, use)
		}
		if pr.res.stats.RateLimited > 0 {
			fmt.Fprintf(w, "; %d of the throttles for the platform's rate", pr.res.stats.RateLimited)
		}
		fmt.Fprintln(w)
	}
}

// throttledShare is the platform's throttled share of invocations:
// throttled / (invocations + throttled).
func throttledShare(st fnsim.Stats) float64 {
	if st.Invocations+st.Throttled == 0 {
		return 0
	}
	return float64(st.Throttled) / float64(st.Invocations+st.Throttled)
}

func drainRatio(pr pacingResult) float64 {
	if pr.ideal <= 0 {
		return 0
	}
	return pr.res.drain.Seconds() / pr.ideal.Seconds()
}

// checkPacing fails rows that did not run, lost or failed jobs, missed
// their own check, or (unless exempt) exceed maxThrottled or
// maxDrainRatio (each 0: no check).
func checkPacing(results []pacingResult, maxThrottled, maxDrainRatio float64) error {
	var errs []error
	for _, pr := range results {
		name, res := pr.row.name, pr.res
		if res == nil {
			errs = append(errs, fmt.Errorf("row %s: %w", name, pr.err))
			continue
		}
		if res.completed != pr.jobs {
			errs = append(errs, fmt.Errorf("row %s: %d of %d jobs succeeded", name, res.completed, pr.jobs))
		}
		if pr.row.check != nil {
			if err := pr.row.check(res); err != nil {
				errs = append(errs, fmt.Errorf("row %s: %w", name, err))
			}
		}
		if pr.row.exempt {
			continue
		}
		if share := throttledShare(res.stats); maxThrottled > 0 && share > maxThrottled {
			errs = append(errs, fmt.Errorf("row %s: throttled %.2f%% of invocations, over --max-throttled %g", name, 100*share, maxThrottled))
		}
		if ratio := drainRatio(pr); maxDrainRatio > 0 && ratio > maxDrainRatio {
			errs = append(errs, fmt.Errorf("row %s: drain/ideal %.3f (%s against %s), over --max-drain-ratio %g", name, ratio,
				res.drain.Round(10*time.Millisecond), pr.ideal.Round(10*time.Millisecond), maxDrainRatio))
		}
	}
	return errors.Join(errs...)
}
