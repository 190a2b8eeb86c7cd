package server

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Options are the settings of a gateway process that `sluice serve` takes
// from flags rather than from its configuration file. The zero value of
// each field but the addresses is its default.
type Options struct {
	HTTPAddr string
	GRPCAddr string
	NATSURL  string // empty: start an embedded JetStream in DataDir
	// NATSAuth is how the gateway proves itself to the NATS at NATSURL,
	// beyond what the URL carries.
	NATSAuth NATSAuth
	// Replicas is the replica count of Sluice's streams and buckets.
	// Zero means 1.
	Replicas     int
	DataDir      string
	DrainTimeout time.Duration
	// TLSCert and TLSKey name PEM files, the certificate (chain) and key
	// both listeners serve TLS with. Empty: plaintext.
	TLSCert, TLSKey string
	// TLSClientCA names a PEM bundle of CA certificates. With it both
	// listeners require client certificates signed by one of them
	// (mutual TLS). It needs TLSCert and TLSKey.
	TLSClientCA string
	// ReadHeaderTimeout is how long a REST client may take to send a
	// request's headers before the connection is closed: the guard against
	// clients that trickle them in to hold connections open (slowloris).
	// Zero means 10s.
	ReadHeaderTimeout time.Duration
	// ShutdownDelay is how long, on shutdown, the gateway keeps serving
	// after /readyz and the gRPC health turn not-ready, so that load
	// balancers stop sending before the servers stop taking requests.
	ShutdownDelay time.Duration
	// DebugAddr, if set, is where Go's profiler is served, apart from the
	// API: profiles reveal internals and cost CPU, so never on a public
	// port.
	DebugAddr string
	// TracerProvider, if set, takes the spans instead of one configured
	// from the OTEL_* environment (tests set it).
	TracerProvider trace.TracerProvider
}

// DefaultReadHeaderTimeout is Options.ReadHeaderTimeout's default.
const DefaultReadHeaderTimeout = 10 * time.Second

// Check checks options given in full, as `sluice serve` takes them from
// flags (where a zero Replicas or ReadHeaderTimeout is an error, not the
// default), naming the flag of a bad one.
func (o Options) Check() error {
	switch {
	case o.Replicas < 1 || o.Replicas > 5:
		return errors.New("--replicas: must be between 1 and 5 (JetStream's limit); 3 for a three-node NATS cluster")
	case o.Replicas > 1 && o.NATSURL == "":
		return fmt.Errorf("--replicas=%d needs --nats-url naming a NATS cluster; the embedded JetStream is one server and keeps one copy", o.Replicas)
	case o.DrainTimeout < 0:
		return errors.New("--drain-timeout: must not be negative")
	case o.ShutdownDelay < 0:
		return errors.New("--shutdown-delay: must not be negative")
	case o.ReadHeaderTimeout <= 0:
		return errors.New("--read-header-timeout: must be positive")
	}
	return o.NATSAuth.check(o.NATSURL)
}
