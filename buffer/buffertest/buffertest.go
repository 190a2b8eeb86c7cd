// Package buffertest starts real, embedded JetStream servers for tests,
// as net/http/httptest starts real HTTP servers.
package buffertest

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/embedded"
)

// Server is an embedded JetStream server for one test.
type Server struct {
	*embedded.Server
	// StoreDir is where it keeps its files; a new Server on the same
	// directory sees the same streams.
	StoreDir string
}

// Start starts an embedded JetStream server storing into dir (a fresh
// temporary directory when dir is empty), stopped when the test ends.
func Start(tb testing.TB, dir string) *Server {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	e, err := embedded.Start(embedded.Config{StoreDir: dir})
	if err != nil {
		tb.Fatalf("start embedded JetStream: %v", err)
	}
	tb.Cleanup(e.Shutdown)
	return &Server{Server: e, StoreDir: dir}
}

// Connect opens a connection to s, closed when the test ends.
func (s *Server) Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := s.Server.Connect()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Queue opens a [buffer.Queue] with cfg on a fresh server.
func Queue(tb testing.TB, cfg buffer.Config) *buffer.Queue {
	tb.Helper()
	s := Start(tb, "")
	q, err := buffer.Open(tb.Context(), s.Connect(tb), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return q
}
