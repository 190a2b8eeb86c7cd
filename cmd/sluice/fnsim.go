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

// fnsimFlags configure the simulated function.
type fnsimFlags struct {
	delay       time.Duration
	concurrency int
}

func (f *fnsimFlags) register(fs *flag.FlagSet, prefix string) {
	fs.DurationVar(&f.delay, prefix+"delay", 100*time.Millisecond, "how long the simulated function takes per invocation")
	fs.IntVar(&f.concurrency, prefix+"concurrency", 5, "invocations the simulated function serves at once; more get 429")
}

func (f *fnsimFlags) config() fnsim.Config {
	return fnsim.Config{Delay: f.delay, Concurrency: f.concurrency}
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
	if sim.concurrency < 0 || sim.delay < 0 {
		return errors.New("fnsim: --concurrency and --delay must not be negative")
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: fnsim.New(sim.config()), ReadHeaderTimeout: 10 * time.Second}
	log.Info("simulated function serving", "addr", ln.Addr().String(), "delay", sim.delay, "concurrency", sim.concurrency)
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
