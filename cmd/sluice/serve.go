package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"time"

	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
)

// registerGatewayFlags registers the flags serve and dev share; the
// listeners' default addresses are on host ("" for every interface).
func registerGatewayFlags(fs *flag.FlagSet, o *server.Options, host string) {
	fs.StringVar(&o.HTTPAddr, "http-addr", host+":8080", "REST API listen address")
	fs.StringVar(&o.GRPCAddr, "grpc-addr", host+":9090", "gRPC listen address")
	fs.StringVar(&o.NATSURL, "nats-url", "", "NATS server URL(s), comma-separated; empty starts an embedded JetStream in --data-dir")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", 30*time.Second, "on shutdown, how long in-flight invocations may finish before their jobs are handed back")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "PEM `file` with the certificate (chain) both listeners serve TLS with; needs --tls-key")
	fs.StringVar(&o.TLSKey, "tls-key", "", "PEM `file` with the private key of --tls-cert")
	fs.StringVar(&o.TLSClientCA, "tls-client-ca", "", "PEM `file` of CA certificates; clients of both listeners must present a certificate they signed (mutual TLS)")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", 0, "on SIGINT/SIGTERM, how long to keep serving after /readyz and gRPC health turn not-ready (let load balancers notice), before refusing new requests")
	fs.StringVar(&o.DebugAddr, "debug-addr", "", "if set, serve Go's profiler (net/http/pprof) on this address; keep it private (loopback)")
	fs.DurationVar(&o.ReadHeaderTimeout, "read-header-timeout", server.DefaultReadHeaderTimeout, "how long a REST client may take to send a request's headers before the connection is closed")
}

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o          server.Options
		lf         cli.LogFlags
		configFile string
	)
	fs.StringVar(&configFile, "config", "", "YAML file naming the functions (required)")
	fs.StringVar(&o.DataDir, "data-dir", "./sluice-data", "where the embedded JetStream stores jobs")
	registerGatewayFlags(fs, &o, "")
	fs.StringVar(&o.NATSAuth.Creds, "nats-creds", "", "with --nats-url: a NATS `.creds` file (user JWT and NKey seed) to connect with")
	fs.StringVar(&o.NATSAuth.NKey, "nats-nkey", "", "with --nats-url: a `file` holding an NKey seed to connect with")
	fs.StringVar(&o.NATSAuth.TLSCA, "nats-tls-ca", "", "with --nats-url: PEM `file` of the CA certificates NATS's certificate must chain to (default: the system's)")
	fs.StringVar(&o.NATSAuth.TLSCert, "nats-tls-cert", "", "with --nats-url: PEM `file` with the client certificate for a NATS that verifies clients; needs --nats-tls-key")
	fs.StringVar(&o.NATSAuth.TLSKey, "nats-tls-key", "", "with --nats-url: PEM `file` with the key of --nats-tls-cert")
	fs.StringVar(&o.NATSAuth.JSDomain, "nats-js-domain", "", "with --nats-url: the JetStream domain Sluice's streams live in (a leaf node's hub)")
	fs.IntVar(&o.Replicas, "replicas", 1, "replica count of Sluice's JetStream streams and buckets: 3 on a three-node NATS cluster, 1 embedded; every gateway must agree, and an existing stream with another count stops start-up")
	lf.Register(fs)
	if err := cli.ParseFlags(fs, args); err != nil {
		return err
	}
	if err := o.Check(); err != nil {
		return err
	}
	if configFile == "" {
		return errors.New("serve: --config is required: a YAML file naming the functions")
	}
	log, err := lf.Logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := config.LoadConfig(configFile)
	if err != nil {
		return err
	}
	server.TuneGC(o.NATSURL == "")
	server.SetMemoryLimitFromContainer(log)
	p, err := server.New(ctx, cfg, o, log)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}
