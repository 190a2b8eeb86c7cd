package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// fnsimFlags configure the simulated platform.
type fnsimFlags struct {
	cfg fnsim.Config
}

func (f *fnsimFlags) register(fs *flag.FlagSet, prefix string) {
	c := &f.cfg
	fs.IntVar(&c.Concurrency, prefix+"concurrency", 5, "most invocations in flight (environments); more get 429; 0: no limit")
	fs.IntVar(&c.InitialBurst, prefix+"initial", 0, "environments that may start at once; 0: the concurrency limit (no ramp)")
	fs.IntVar(&c.ScalePerMinute, prefix+"per-minute", 0, "environments added per minute once the initial ones are all busy; 0: no ramp")
	fs.DurationVar(&c.ColdStart, prefix+"cold-start", 0, "start-up time of a new environment")
	fs.DurationVar(&c.IdleReap, prefix+"idle-reap", 0, "an environment idle this long is torn down; 0: never")
	fs.DurationVar(&c.Duration, prefix+"duration", 100*time.Millisecond, "handler run time per invocation")
	fs.DurationVar(&c.Jitter, prefix+"jitter", 0, "spread the handler run time uniformly over ±this")
	fs.Float64Var(&c.ErrorRate, prefix+"error-rate", 0, "fraction of invocations answered 500, 0 to 1")
	fs.DurationVar(&c.DownFor, prefix+"down-for", 0, "an outage: answer every invocation 503 (no Retry-After) for this long after starting")
}

func (f *fnsimFlags) check(prefix string) error {
	c := f.cfg
	switch {
	case c.Concurrency < 0 || c.InitialBurst < 0 || c.ScalePerMinute < 0:
		return errors.New("--" + prefix + "concurrency, --" + prefix + "initial and --" + prefix + "per-minute must not be negative")
	case c.ColdStart < 0 || c.IdleReap < 0 || c.Duration < 0 || c.Jitter < 0 || c.DownFor < 0:
		return errors.New("--" + prefix + "cold-start, --" + prefix + "idle-reap, --" + prefix + "duration, --" + prefix + "jitter and --" + prefix + "down-for must not be negative")
	case c.ErrorRate < 0 || c.ErrorRate > 1:
		return errors.New("--" + prefix + "error-rate must be between 0 and 1")
	}
	return nil
}

func runFnsim(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("fnsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		sim  fnsimFlags
		lf   logFlags
		addr string
	)
	fs.StringVar(&addr, "addr", "127.0.0.1:9000", "listen address")
	sim.register(fs, "")
	lf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := sim.check(""); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: fnsim.New(sim.cfg), ReadHeaderTimeout: 10 * time.Second}
	log.Info("simulated function serving; GET /stats for its counts", "addr", ln.Addr().String(),
		"concurrency", sim.cfg.Concurrency, "duration", sim.cfg.Duration, "cold_start", sim.cfg.ColdStart)
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
