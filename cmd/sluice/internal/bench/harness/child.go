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
	"strings"
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
// exited is closed once the child that answered has exited.
func startListening(ctx context.Context, wg *sync.WaitGroup, stderr io.Writer, c listeningChild) (_ *exec.Cmd, _ []string, exited <-chan struct{}, err error) {
	for range childStarts {
		addrs := make([]string, c.ports)
		for i := range addrs {
			if addrs[i], err = freeAddr(); err != nil {
				return nil, nil, nil, err
			}
		}
		cmd, exited, err := startChildCmd(ctx, wg, stderr, c.args(addrs)...)
		if err != nil {
			return nil, nil, nil, err
		}
		err = WaitHTTP(ctx, c.readyURL(addrs), 30*time.Second, exited)
		if !errors.Is(err, errChildExited) {
			return cmd, addrs, exited, err
		}
	}
	return nil, nil, nil, err
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

// Tail is a writer that passes what it is given on to W and keeps the
// last bytes of it: what a child process said last before it exited, to
// repeat in the error that reports its exit.
type Tail struct {
	W io.Writer
	// Keep is how many bytes are kept; 0 means 4 KiB.
	Keep int

	mu   sync.Mutex
	last []byte
}

// Write passes p on and keeps its end.
func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.last = append(t.last, p...)
	if over := len(t.last) - t.keep(); over > 0 {
		t.last = append(t.last[:0], t.last[over:]...)
	}
	t.mu.Unlock()
	return t.W.Write(p)
}

// String is the kept end, from its first whole line.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.last)
	if len(t.last) >= t.keep() { // cut: its first line may be a part
		if _, rest, ok := strings.Cut(s, "\n"); ok {
			s = rest
		}
	}
	return strings.TrimRight(s, "\n")
}

func (t *Tail) keep() int {
	if t.Keep <= 0 {
		return 4 << 10
	}
	return t.Keep
}
