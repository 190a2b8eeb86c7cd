package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// runDev starts the gateway on an embedded JetStream with the simulated
// function behind it as "echo", so a newcomer can submit a job at once.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o   server.Options
		lf  cli.LogFlags
		sim harness.FnsimFlags
	)
	fs.StringVar(&o.DataDir, "data-dir", "", "where the embedded JetStream stores jobs; empty: a temporary directory removed on exit")
	// Loopback: dev's API is open (no tenants) and its function a demo,
	// nothing to offer the network.
	registerGatewayFlags(fs, &o, "127.0.0.1")
	lf.Register(fs)
	sim.Register(fs, "fn-")
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if o.NATSURL != "" {
		return errors.New("dev: --nats-url is for sluice serve; dev always runs an embedded JetStream")
	}
	o.Replicas = 1 // one embedded server keeps one copy
	if err := o.Check(); err != nil {
		return err
	}
	log, err := lf.Logger(stderr)
	if err != nil {
		return err
	}
	if o.DataDir == "" {
		dir, err := os.MkdirTemp("", "sluice-dev-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.DataDir = dir
	}

	fnLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := sim.Check("fn-"); err != nil {
		fnLn.Close()
		return err
	}
	fnSrv := &http.Server{Handler: fnsim.New(sim.Config), ReadHeaderTimeout: 10 * time.Second}
	cfg := &config.Config{Functions: []config.FunctionConfig{{
		Name:        "echo",
		URL:         "http://" + fnLn.Addr().String() + "/",
		Concurrency: config.Count(max(1, sim.Config.Concurrency)),
	}}}
	if err := cfg.SetDefaultsAndCheck(); err != nil {
		return err
	}
	server.TuneGC(true)
	server.SetMemoryLimitFromContainer(log)
	p, err := server.New(ctx, cfg, o, log)
	if err != nil {
		fnLn.Close()
		return err
	}
	var curlTLS string // what curl needs for the listener's TLS
	switch p.TLSMode() {
	case "on":
		curlTLS = " --cacert CA.pem"
	case "mutual":
		curlTLS = " --cacert CA.pem --cert CLIENT.pem --key CLIENT-KEY.pem"
	}
	fmt.Fprintf(stdout, `Sluice dev: REST on %[5]s://%[1]s, gRPC on %[2]s, demo function "echo" (echoes its payload after %[3]s).
Dashboard: %[5]s://%[1]s/
Try:
  curl%[4]s -si -X POST %[5]s://%[1]s/v1/functions/echo/jobs -H 'Content-Type: application/json' -d '{"hello":"world"}'
  curl%[4]s -s %[5]s://%[1]s/v1/jobs/JOB_ID/result
Stop with Ctrl-C.
`, server.DialTarget(p.HTTPAddr), server.DialTarget(p.GRPCAddr), sim.Config.Duration, curlTLS, p.RESTScheme())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := fnSrv.Serve(fnLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		// The gateway stops first so in-flight invocations can finish.
		err := p.Run(gctx)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fnSrv.Shutdown(shutdownCtx) //nolint:errcheck // best effort at exit
		return err
	})
	return g.Wait()
}
