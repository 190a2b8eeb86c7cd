// Package servertest runs real gateway processes (server.Gateway) on
// loopback ports for tests, as net/http/httptest runs HTTP servers: one
// starter for every test that needs a whole gateway.
package servertest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// Gateway is a gateway process on loopback ports for one test.
type Gateway struct {
	*server.Gateway
	// Base is its REST base URL (https:// when it serves TLS).
	Base string
	stop func()
}

// StartFunctions runs a gateway with the given functions on an embedded
// JetStream in dataDir until the test ends or Stop is called.
func StartFunctions(tb testing.TB, dataDir string, functions ...config.FunctionConfig) *Gateway {
	tb.Helper()
	return StartConfig(tb, dataDir, &config.Config{Functions: functions})
}

// StartConfig is StartFunctions with a whole configuration, which it fills
// in with defaults and checks as `sluice serve` does.
func StartConfig(tb testing.TB, dataDir string, cfg *config.Config) *Gateway {
	tb.Helper()
	return Start(tb, dataDir, cfg, server.Options{})
}

// Start is StartConfig with options, such as TLS files or an external
// NATS; the addresses, the data directory and the drain timeout (100ms)
// are the test's. It returns once the gateway serves.
func Start(tb testing.TB, dataDir string, cfg *config.Config, opts server.Options) *Gateway {
	tb.Helper()
	p, err := New(tb, dataDir, cfg, opts, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return Run(tb, p)
}

// New makes the gateway Start runs, for a test of what its start-up
// refuses or of what it logs; a configuration that does not pass its
// checks fails the test. A nil log discards, or with -v writes to the
// test's output.
func New(tb testing.TB, dataDir string, cfg *config.Config, opts server.Options, log *slog.Logger) (*server.Gateway, error) {
	tb.Helper()
	if err := cfg.SetDefaultsAndCheck(); err != nil {
		tb.Fatal(err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		if testing.Verbose() {
			log = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	opts.HTTPAddr, opts.GRPCAddr, opts.DataDir, opts.DrainTimeout = "127.0.0.1:0", "127.0.0.1:0", dataDir, 100*time.Millisecond
	return server.New(tb.Context(), cfg, opts, log)
}

// Run runs p, a gateway made with server.New, until the test ends or Stop
// is called, and returns once it serves.
func Run(tb testing.TB, p *server.Gateway) *Gateway {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	g := &Gateway{Gateway: p, Base: p.RESTScheme() + "://" + p.HTTPAddr.String()}
	var stopped bool
	g.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("gateway Run: %v", err)
		}
	}
	tb.Cleanup(g.stop)
	buffertest.WaitFor(tb, 10*time.Second, "gateway serving after its start", func() bool {
		if p.Serving() {
			return true
		}
		select {
		case err := <-done: // fail at once, not after the 10s
			stopped = true
			tb.Fatalf("gateway Run ended before it served: %v", err)
		default:
		}
		return false
	})
	return g
}

// Stop stops the gateway as SIGTERM does, and waits for Run to return; the
// test's end does the same if Stop was not called.
func (g *Gateway) Stop() { g.stop() }

// GRPCConn is a plaintext gRPC client connection to the gateway, closed
// when the test ends.
func (g *Gateway) GRPCConn(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(g.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// StartFunction serves a simulated function until the test ends, and
// returns it with its URL.
func StartFunction(t testing.TB, cfg fnsim.Config) (*fnsim.Function, string) {
	t.Helper()
	sim := fnsim.New(cfg)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL
}
