package buffertest

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTB records a Fatalf and stops the goroutine, as testing.T does.
type fakeTB struct {
	testing.TB
	fatal string
}

func (*fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls wait with a fakeTB on a goroutine of its own, so that a Fatalf
// ends only that goroutine, and returns what it reported ("" for nothing)
// and how long it took.
func run(t *testing.T, wait func(testing.TB)) (fatal string, took time.Duration) {
	tb := &fakeTB{TB: t}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait(tb)
	}()
	<-done
	return tb.fatal, time.Since(start)
}

func TestWaitForFailsSayingWhatDidNotHappen(t *testing.T) {
	calls := 0
	fatal, took := run(t, func(tb testing.TB) {
		WaitFor(tb, 100*time.Millisecond, "the kettle boiled", func() bool { calls++; return false })
	})
	if want := "the kettle boiled: not within 100ms"; fatal != want {
		t.Errorf("reported %q, want %q", fatal, want)
	}
	if took < 100*time.Millisecond {
		t.Errorf("gave up after %s, before the 100ms were up", took)
	}
	if calls < 3 {
		t.Errorf("looked %d times in 100ms; want it to poll", calls)
	}
}

func TestWaitForReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	fatal, _ := run(t, func(tb testing.TB) {
		WaitFor(tb, 10*time.Second, "the third look", func() bool { calls++; return calls == 3 })
	})
	if fatal != "" || calls != 3 {
		t.Errorf("reported %q after %d looks; want nothing after 3", fatal, calls)
	}
	// A condition that already holds is enough, however short the time.
	fatal, _ = run(t, func(tb testing.TB) {
		WaitFor(tb, 0, "already so", func() bool { return true })
	})
	if fatal != "" {
		t.Errorf("a condition holding at once reported %q", fatal)
	}
}

func TestWaitForNoErrorReportsTheLastError(t *testing.T) {
	calls := 0
	fatal, _ := run(t, func(tb testing.TB) {
		WaitForNoError(tb, 50*time.Millisecond, "job done", func() error { calls++; return fmt.Errorf("look %d: still running", calls) })
	})
	if want := fmt.Sprintf("job done: not within 50ms; last: look %d: still running", calls); fatal != want {
		t.Errorf("reported %q, want %q", fatal, want)
	}
	fatal, _ = run(t, func(tb testing.TB) {
		WaitForNoError(tb, 10*time.Second, "job done", func() error { return nil })
	})
	if fatal != "" {
		t.Errorf("a check returning nil reported %q", fatal)
	}
}

func TestLockedBufferTakesConcurrentWrites(t *testing.T) {
	var b LockedBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintln(&b, "line")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "line\n"); n != 800 {
		t.Errorf("%d lines, want 800", n)
	}
}
