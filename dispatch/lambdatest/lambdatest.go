// Package lambdatest runs the AWS Lambda Runtime Interface Emulator
// (aws-lambda-rie) with a small Go function ([testfn]) for tests of Lambda
// targets, as net/http/httptest runs real HTTP servers.
//
// The emulator serves one invocation at a time and breaks on concurrent
// calls, so it doubles as a check that a caller keeps to concurrency 1: an
// [Emulator] puts a counting proxy in front of it that records the most
// invocations it ever had in flight, and every failure.
//
// The emulator binary is found, in order, at $SLUICE_LAMBDA_RIE, as
// aws-lambda-rie on $PATH, or built with `go tool -modfile=tools/go.mod -n
// aws-lambda-rie` (a tool of the repository, pinned in tools/go.mod). Where none works the test fails
// when $CI is "true" and is skipped otherwise. The emulator runs on Linux
// only.
//
// [testfn]: https://pkg.go.dev/github.com/sluicehq/sluice/dispatch/lambdatest/testfn
package lambdatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// InvokePath is where the emulator takes invocations: the Lambda Invoke
// API's path for a function named "function".
const InvokePath = "/2015-03-31/functions/function/invocations"

// FunctionName is the name to invoke the emulated function by.
const FunctionName = "function"

// Emulator is a running aws-lambda-rie serving testfn, behind a counting
// proxy. It is safe for concurrent use.
type Emulator struct {
	// URL is the Lambda API endpoint to give the SDK as BaseEndpoint: the
	// proxy in front of the emulator.
	URL string

	cmd *exec.Cmd
	out *lockedBuffer

	mu     sync.Mutex
	st     Stats
	in     int  // requests in flight
	exited bool // the emulator process ended
}

// Stats is what the proxy saw.
type Stats struct {
	// Invocations is how many requests reached the emulator.
	Invocations int
	// Failures counts requests the emulator answered with a status other
	// than 200, or did not answer.
	Failures int
	// MaxInFlight is the most requests it ever had at once.
	MaxInFlight int
}

// Stats returns the counts so far.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st
}

// Output is what the emulator and the function have written so far.
func (e *Emulator) Output() string { return e.out.String() }

// Alive reports whether the emulator process is still running.
func (e *Emulator) Alive() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.exited
}

// Start builds testfn, starts the emulator with it on loopback ports and
// the proxy in front of it, and stops both when the test ends.
func Start(tb testing.TB) *Emulator {
	tb.Helper()
	if runtime.GOOS != "linux" {
		unavailable(tb, "the Lambda Runtime Interface Emulator runs on Linux only")
	}
	rie, err := findEmulator()
	if err != nil {
		unavailable(tb, err.Error())
	}
	dir := tb.TempDir()
	bootstrap := filepath.Join(dir, "bootstrap")
	if out, err := goCommand("build", "-o", bootstrap, "github.com/sluicehq/sluice/dispatch/lambdatest/testfn").CombinedOutput(); err != nil {
		tb.Fatalf("build the test function: %v\n%s", err, out)
	}
	apiAddr, rieAddr := freeAddr(tb), freeAddr(tb)
	e := &Emulator{out: &lockedBuffer{}}
	e.cmd = exec.Command(rie,
		"--runtime-interface-emulator-address", rieAddr,
		"--runtime-api-address", apiAddr,
		"--log-level", "error",
		bootstrap)
	e.cmd.Dir = dir
	e.cmd.Env = append(os.Environ(), "AWS_LAMBDA_FUNCTION_TIMEOUT=60", "AWS_LAMBDA_FUNCTION_NAME="+FunctionName)
	e.cmd.Stdout, e.cmd.Stderr = e.out, e.out
	setProcessGroup(e.cmd)
	if err := e.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", rie, err)
	}
	exited := make(chan struct{})
	go func() {
		e.cmd.Wait() //nolint:errcheck // an exit is seen through Alive and the stats
		e.mu.Lock()
		e.exited = true
		e.mu.Unlock()
		close(exited)
	}()
	tb.Cleanup(func() {
		killProcessGroup(e.cmd)
		<-exited
		if tb.Failed() {
			tb.Logf("emulator output:\n%s", e.Output())
		}
	})
	if err := waitListening(rieAddr, exited, 15*time.Second); err != nil {
		tb.Fatalf("emulator: %v\n%s", err, e.Output())
	}

	target, _ := url.Parse("http://" + rieAddr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			e.count(func(st *Stats) { st.Failures++ })
		}
		return nil
	}
	proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		e.count(func(st *Stats) { st.Failures++ })
		http.Error(w, "emulator: "+err.Error(), http.StatusBadGateway)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != InvokePath {
			// The emulator serves only Invoke; say so as the Lambda API
			// would for an operation it does not know.
			w.Header().Set("X-Amzn-ErrorType", "UnknownOperationException")
			http.Error(w, `{"message":"the emulator serves only Invoke"}`, http.StatusNotFound)
			return
		}
		e.count(func(st *Stats) { st.Invocations++; e.in++; st.MaxInFlight = max(st.MaxInFlight, e.in) })
		defer e.count(func(*Stats) { e.in-- })
		proxy.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	tb.Cleanup(func() { srv.Close() })
	e.URL = "http://" + ln.Addr().String()
	return e
}

func (e *Emulator) count(f func(*Stats)) {
	e.mu.Lock()
	f(&e.st)
	e.mu.Unlock()
}

// unavailable skips the test, or fails it under CI.
func unavailable(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("Lambda emulator unavailable under CI: %s", why)
	}
	tb.Skipf("Lambda emulator unavailable, skipping (set CI=true to fail instead): %s", why)
}

// findEmulator returns the path of an aws-lambda-rie binary.
func findEmulator() (string, error) {
	if p := os.Getenv("SLUICE_LAMBDA_RIE"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p, nil
	}
	rie, err := buildTool("aws-lambda-rie")
	if err != nil {
		return "", fmt.Errorf("no aws-lambda-rie on $PATH or in $SLUICE_LAMBDA_RIE, and building it failed: %v", err)
	}
	return rie, nil
}

// buildTool builds a tool pinned in the repository's tools/go.mod (the
// gateway's go.mod lists no tools) and returns its path in the build cache.
func buildTool(name string) (string, error) {
	gomod, err := goOutput("env", "GOMOD")
	if err != nil {
		return "", err
	}
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the sluice module")
	}
	modfile := filepath.Join(filepath.Dir(gomod), "tools", "go.mod")
	return goOutput("tool", "-modfile="+modfile, "-n", name)
}

// goOutput runs the go command and returns what it printed, trimmed.
func goOutput(args ...string) (string, error) {
	out, err := goCommand(args...).Output()
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) && len(exitErr.Stderr) > 0 {
			err = fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(exitErr.Stderr))
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// goCommand is the go command on $PATH (go test puts its own toolchain's
// first), building static binaries without VCS stamps.
func goCommand(args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	return cmd
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(addr string, exited <-chan struct{}, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-ctx.Done():
			return fmt.Errorf("not listening on %s after %s", addr, within)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 4<<20 { // keep the start; a burst logs a lot
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var _ io.Writer = (*lockedBuffer)(nil)
