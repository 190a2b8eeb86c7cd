package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
)

func registerGatewayFlags(fs *flag.FlagSet, o *gatewayOptions) {
	fs.StringVar(&o.HTTPAddr, "http-addr", ":8080", "REST API listen address")
	fs.StringVar(&o.GRPCAddr, "grpc-addr", ":9090", "gRPC listen address")
	fs.StringVar(&o.NATSURL, "nats-url", "", "NATS server URL(s), comma-separated; empty starts an embedded JetStream in --data-dir")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", 30*time.Second, "on shutdown, how long in-flight invocations may finish before their jobs are handed back")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "PEM `file` with the certificate (chain) both listeners serve TLS with; needs --tls-key")
	fs.StringVar(&o.TLSKey, "tls-key", "", "PEM `file` with the private key of --tls-cert")
	fs.StringVar(&o.TLSClientCA, "tls-client-ca", "", "PEM `file` of CA certificates; clients of both listeners must present a certificate they signed (mutual TLS)")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", 0, "on SIGINT/SIGTERM, how long to keep serving after /readyz and gRPC health turn not-ready (let load balancers notice), before refusing new requests")
	fs.StringVar(&o.DebugAddr, "debug-addr", "", "if set, serve Go's profiler (net/http/pprof) on this address; keep it private (loopback)")
	fs.DurationVar(&o.ReadHeaderTimeout, "read-header-timeout", defaultReadHeaderTimeout, "how long a REST client may take to send a request's headers before the connection is closed")
}

// checkGatewayFlags checks the flags registerGatewayFlags registers.
func checkGatewayFlags(o gatewayOptions) error {
	if o.DrainTimeout < 0 {
		return errors.New("--drain-timeout: must not be negative")
	}
	if o.ShutdownDelay < 0 {
		return errors.New("--shutdown-delay: must not be negative")
	}
	if o.ReadHeaderTimeout <= 0 {
		return errors.New("--read-header-timeout: must be positive")
	}
	return nil
}

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o          gatewayOptions
		lf         logFlags
		configFile string
	)
	fs.StringVar(&configFile, "config", "", "YAML file naming the functions (required)")
	fs.StringVar(&o.DataDir, "data-dir", "./sluice-data", "where the embedded JetStream stores jobs")
	registerGatewayFlags(fs, &o)
	fs.IntVar(&o.Replicas, "replicas", 1, "replica count of Sluice's JetStream streams and buckets: 3 on a three-node NATS cluster, 1 embedded; every gateway must agree, and an existing stream with another count stops start-up")
	lf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkReplicas(o); err != nil {
		return err
	}
	if configFile == "" {
		return errors.New("serve: --config is required: a YAML file naming the functions")
	}
	if err := checkGatewayFlags(o); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := config.LoadConfig(configFile)
	if err != nil {
		return err
	}
	tuneGC(o.NATSURL == "")
	p, err := startGateway(ctx, cfg, o, log)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

// gatewayGCPercent is the gateway's GOGC when the environment sets none
// and JetStream runs elsewhere (--nats-url). The gateway's own live heap is
// small (tens of MiB) and nearly all it allocates is per-request garbage,
// so Go's default of 100 collects every few MiB: a quarter of a busy
// gateway's CPU. At 400 the collector runs a quarter as often, for a few
// tens of MiB more resident memory.
const gatewayGCPercent = 400

// embeddedGCPercent is GOGC for a process that holds JetStream (sluice
// serve without --nats-url, sluice dev, bench jetstream) when the
// environment sets none. That heap grows with the queue: with a million
// jobs queued it holds ~450 MB live, one subject each, and each collection
// marks it for ~220 ms, slowing every read it overlaps. At Go's default of
// 100 those marks take ~1.1% of the time, so they decided GetJob's p99 (1.45
// times its empty-queue figure over 20 s of reads); at 200 they come half as
// often and it was 1.07, for ~250 MiB more resident at that depth (800 MiB
// instead of 550). Five times the live heap (400) would be too much to trade.
const embeddedGCPercent = 200

// tuneGC sets the process's GOGC for what it holds, unless GOGC says
// otherwise.
func tuneGC(embedsJetStream bool) {
	if os.Getenv("GOGC") != "" {
		return
	}
	if embedsJetStream {
		debug.SetGCPercent(embeddedGCPercent)
		return
	}
	debug.SetGCPercent(gatewayGCPercent)
}

// checkReplicas checks --replicas against --nats-url.
func checkReplicas(o gatewayOptions) error {
	if o.Replicas < 1 || o.Replicas > 5 {
		return errors.New("--replicas: must be between 1 and 5 (JetStream's limit); 3 for a three-node NATS cluster")
	}
	if o.Replicas > 1 && o.NATSURL == "" {
		return fmt.Errorf("--replicas=%d needs --nats-url naming a NATS cluster; the embedded JetStream is one server and keeps one copy", o.Replicas)
	}
	return nil
}
