package buffertest

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"
)

// pollEvery is how often WaitFor and WaitForNoError look again.
const pollEvery = 10 * time.Millisecond

// WaitFor waits until cond holds, looking every few milliseconds, and
// fails tb with "what: not within d" if it does not within the given time.
// what names the awaited thing, e.g. "job abc finished". cond runs on the
// calling goroutine, so it may call tb.Fatal itself.
func WaitFor(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	waitFor(tb, within, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// WaitForNoError is WaitFor for a condition that says why it does not
// hold yet: it waits until check returns nil, and on timeout reports the
// last error, e.g. "job abc finished: not within 10s; last: still RUNNING".
func WaitForNoError(tb testing.TB, within time.Duration, what string, check func() error) {
	tb.Helper()
	waitFor(tb, within, what, check)
}

var errNotYet = errors.New("not yet")

func waitFor(tb testing.TB, within time.Duration, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			if err == errNotYet {
				tb.Fatalf("%s: not within %s", what, within)
			} else {
				tb.Fatalf("%s: not within %s; last: %v", what, within, err)
			}
			return // for a tb whose Fatalf returns
		}
		time.Sleep(pollEvery)
	}
}

// LockedBuffer is a bytes.Buffer that several goroutines may write at once,
// for capturing a logger's or a child process's output. Its zero value is
// ready to use.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
