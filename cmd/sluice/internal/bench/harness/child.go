package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// startChildCmd runs this binary with args until ctx ends, then stops it
// with SIGTERM; wg tracks it. It returns the running command and a channel
// closed once it has exited.
func startChildCmd(ctx context.Context, wg *sync.WaitGroup, stderr io.Writer, args ...string) (*exec.Cmd, <-chan struct{}, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	exited := make(chan struct{})
	wg.Go(func() {
		defer close(exited)
		cmd.Wait() //nolint:errcheck // stopped on purpose
	})
	return cmd, exited, nil
}

// childStarts is how many times startListening starts a child whose
// picked ports another process took first.
const childStarts = 3

// listeningChild says how a child of this binary that listens is started:
// the arguments and the URL that answers 200 once it is ready, both given
// the loopback addresses it is to listen on.
type listeningChild struct {
	ports    int
	args     func(addrs []string) []string
	readyURL func(addrs []string) string
}

// startListening starts a child on loopback ports picked free just before
// it starts and waits until it is ready. Another process may take a picked
// port between the pick and the child's listen, and the child then exits
// at once: it is started again on fresh ports, up to childStarts times.
func startListening(ctx context.Context, wg *sync.WaitGroup, stderr io.Writer, c listeningChild) (*exec.Cmd, []string, error) {
	var err error
	for range childStarts {
		addrs := make([]string, c.ports)
		for i := range addrs {
			if addrs[i], err = freeAddr(); err != nil {
				return nil, nil, err
			}
		}
		cmd, exited, err := startChildCmd(ctx, wg, stderr, c.args(addrs)...)
		if err != nil {
			return nil, nil, err
		}
		err = WaitHTTP(ctx, c.readyURL(addrs), 30*time.Second, exited)
		if !errors.Is(err, errChildExited) {
			return cmd, addrs, err
		}
	}
	return nil, nil, err
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// errChildExited is WaitHTTP's answer when the child it waits for exits
// first.
var errChildExited = errors.New("exited before it was ready")

// WaitHTTP polls url until it answers 200, or until exited (if not nil)
// is closed.
func WaitHTTP(ctx context.Context, url string, within time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(within)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %s", url, within)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-exited:
			return fmt.Errorf("%s: %w", url, errChildExited)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
