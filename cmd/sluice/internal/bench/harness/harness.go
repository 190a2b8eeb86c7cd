// Package harness is what every `sluice bench` benchmark stands on: child
// processes of this binary started on free loopback ports (the simulated
// platform of `sluice fnsim`, gateways, the JetStream of `bench jetstream`),
// the two set-ups the benchmarks measure (a Stack: one gateway on a
// JetStream of its own; a ReplicaSet: gateways sharing one JetStream), the
// clients that submit to them, the closed-loop load that times them, and
// what they read of the processes (/proc) and of a gateway (/metrics).
// The benchmarks themselves are in package bench, above it.
package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// Get GETs url and wants 200; the caller closes the body.
func Get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return resp, nil
}

// raiseFileLimit lifts the open-file limit to its hard maximum: burst's
// direct client opens a connection per request.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) //nolint:errcheck // best effort
	}
}

// ScratchDir makes a benchmark's scratch directory, and lifts the
// open-file limit, which load generators with many connections need.
func ScratchDir() (dir string, remove func(), err error) {
	dir, err = os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return "", nil, err
	}
	raiseFileLimit()
	return dir, func() { os.RemoveAll(dir) }, nil
}

// ServeLoopback serves h on a fresh loopback port until stop is called.
func ServeLoopback(h http.Handler) (ln net.Listener, stop func(), err error) {
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends when stop closes it
	return ln, func() { srv.Close() }, nil
}

// Sleep sleeps for d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
