package harness

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// FnsimFlags configure the simulated platform (sluice fnsim, and the
// demo function of sluice dev).
type FnsimFlags struct {
	Config fnsim.Config
}

// Register registers the flags on fs, each name after prefix.
func (f *FnsimFlags) Register(fs *flag.FlagSet, prefix string) {
	c := &f.Config
	fs.IntVar(&c.Concurrency, prefix+"concurrency", 5, "most invocations in flight (environments); more get 429; 0: no limit")
	fs.IntVar(&c.InitialBurst, prefix+"initial", 0, "environments that may start at once; 0: the concurrency limit (no ramp)")
	fs.IntVar(&c.ScalePerMinute, prefix+"per-minute", 0, "environments added per minute once the initial ones are all busy; 0: no ramp")
	fs.DurationVar(&c.ColdStart, prefix+"cold-start", 0, "start-up time of a new environment")
	fs.DurationVar(&c.IdleReap, prefix+"idle-reap", 0, "an environment idle this long is torn down; 0: never")
	fs.DurationVar(&c.Duration, prefix+"duration", 100*time.Millisecond, "handler run time per invocation")
	fs.DurationVar(&c.Jitter, prefix+"jitter", 0, "spread the handler run time uniformly over ±this")
	fs.Float64Var(&c.ErrorRate, prefix+"error-rate", 0, "fraction of invocations answered 500, 0 to 1")
	fs.DurationVar(&c.DownFor, prefix+"down-for", 0, "an outage: answer every invocation 503 (no Retry-After) for this long after starting")
	fs.Var((*scheduleValue)(&c.Schedule), prefix+"schedule",
		"the concurrency limit over time, from the first invocation: AFTER:LIMIT,... such as 3s:20,13s:50 (after 3s the limit is 20, after 13s 50); LIMIT 0: none")
	fs.Float64Var(&c.RatePerSecond, prefix+"rate", 0, "requests per second (a token bucket); more get 429 whatever the concurrency; 0: no limit")
	fs.IntVar(&c.RateBurst, prefix+"rate-burst", 0, "the rate limit's bucket size; 0: a tenth of a second's worth of --"+prefix+"rate, at least 1")
	fs.BoolVar(&c.OmitRetryAfter, prefix+"no-retry-after", false, "send 429s without Retry-After, as function URLs and API gateways often do")
	fs.DurationVar(&c.RetryAfter, prefix+"retry-after", time.Second, "the Retry-After sent with a 429, rounded up to whole seconds")
}

// Check checks the flags registered with prefix.
func (f *FnsimFlags) Check(prefix string) error {
	c := f.Config
	switch {
	case c.Concurrency < 0 || c.InitialBurst < 0 || c.ScalePerMinute < 0:
		return errors.New("--" + prefix + "concurrency, --" + prefix + "initial and --" + prefix + "per-minute must not be negative")
	case c.ColdStart < 0 || c.IdleReap < 0 || c.Duration < 0 || c.Jitter < 0 || c.DownFor < 0:
		return errors.New("--" + prefix + "cold-start, --" + prefix + "idle-reap, --" + prefix + "duration, --" + prefix + "jitter and --" + prefix + "down-for must not be negative")
	case c.ErrorRate < 0 || c.ErrorRate > 1:
		return errors.New("--" + prefix + "error-rate must be between 0 and 1")
	case c.RatePerSecond < 0 || c.RateBurst < 0:
		return errors.New("--" + prefix + "rate and --" + prefix + "rate-burst must not be negative")
	case c.RateBurst > 0 && c.RatePerSecond == 0:
		return errors.New("--" + prefix + "rate-burst needs --" + prefix + "rate")
	case c.RetryAfter <= 0:
		return errors.New("--" + prefix + "retry-after must be positive")
	}
	for i, s := range c.Schedule {
		switch {
		case s.After < 0:
			return fmt.Errorf("--%sschedule: step %d (%s): the time must not be negative", prefix, i+1, formatStep(s))
		case s.Concurrency < 0:
			return fmt.Errorf("--%sschedule: step %d (%s): the limit must not be negative", prefix, i+1, formatStep(s))
		case i > 0 && s.After <= c.Schedule[i-1].After:
			return fmt.Errorf("--%sschedule: step %d (%s) must come later than step %d (%s)", prefix, i+1, formatStep(s), i, formatStep(c.Schedule[i-1]))
		}
	}
	return nil
}

// Args are the flags of `sluice fnsim` that give f.Config, for a platform
// in a child process (StartPlatform): the inverse of Register, for the
// fields a benchmark sets (concurrency, ramp, cold start, handler time and
// jitter, schedule, rate and Retry-After). Zero fields are left out, so
// they keep their defaults.
func (f *FnsimFlags) Args() []string {
	c := f.Config
	a := []string{"--concurrency=" + strconv.Itoa(c.Concurrency), "--duration=" + c.Duration.String()}
	add := func(set bool, name, value string) {
		if set {
			a = append(a, "--"+name+"="+value)
		}
	}
	add(c.InitialBurst > 0, "initial", strconv.Itoa(c.InitialBurst))
	add(c.ScalePerMinute > 0, "per-minute", strconv.Itoa(c.ScalePerMinute))
	add(c.ColdStart > 0, "cold-start", c.ColdStart.String())
	add(c.Jitter > 0, "jitter", c.Jitter.String())
	add(len(c.Schedule) > 0, "schedule", (*scheduleValue)(&c.Schedule).String())
	add(c.RatePerSecond > 0, "rate", strconv.FormatFloat(c.RatePerSecond, 'g', -1, 64))
	add(c.RateBurst > 0, "rate-burst", strconv.Itoa(c.RateBurst))
	add(c.OmitRetryAfter, "no-retry-after", "true")
	add(c.RetryAfter > 0, "retry-after", c.RetryAfter.String())
	return a
}

// scheduleValue is the flag --schedule: AFTER:LIMIT steps, comma-separated.
type scheduleValue []fnsim.Step

func (v *scheduleValue) String() string {
	if v == nil {
		return ""
	}
	parts := make([]string, len(*v))
	for i, s := range *v {
		parts[i] = formatStep(s)
	}
	return strings.Join(parts, ",")
}

func (v *scheduleValue) Set(text string) error {
	var steps []fnsim.Step
	for part := range strings.SplitSeq(text, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		after, limit, ok := strings.Cut(part, ":")
		d, err1 := time.ParseDuration(after)
		n, err2 := strconv.Atoi(limit)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("step %q: want AFTER:LIMIT, a duration and a count, such as 3s:20", part)
		}
		steps = append(steps, fnsim.Step{After: d, Concurrency: n})
	}
	*v = steps
	return nil
}

func formatStep(s fnsim.Step) string { return s.After.String() + ":" + strconv.Itoa(s.Concurrency) }

// RunFnsim runs `sluice fnsim`: a simulated platform serving one function,
// as its flags configure it, until ctx ends.
func RunFnsim(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("fnsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		sim  FnsimFlags
		lf   cli.LogFlags
		addr string
	)
	fs.StringVar(&addr, "addr", "127.0.0.1:9000", "listen address")
	sim.Register(fs, "")
	lf.Register(fs)
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if err := sim.Check(""); err != nil {
		return err
	}
	log, err := lf.Logger(stderr)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: fnsim.New(sim.Config), ReadHeaderTimeout: 10 * time.Second}
	log.Info("simulated function serving; GET /stats for its counts", "addr", ln.Addr().String(),
		"concurrency", sim.Config.Concurrency, "duration", sim.Config.Duration, "cold_start", sim.Config.ColdStart,
		"schedule", (*scheduleValue)(&sim.Config.Schedule).String(), "rate", sim.Config.RatePerSecond, "retry_after", !sim.Config.OmitRetryAfter)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the shutdown goroutine if Serve fails first
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx) //nolint:errcheck // Serve reports the outcome
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
