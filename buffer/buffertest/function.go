package buffertest

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// HeaderFunction serves a function that answers 200 to every invocation
// and keeps the last value of the named request header it was sent, until
// the test ends. It returns the function's URL and a reader of that value.
func HeaderFunction(tb testing.TB, header string) (url string, last func() string) {
	tb.Helper()
	var (
		mu    sync.Mutex
		value string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		mu.Lock()
		value = r.Header.Get(header)
		mu.Unlock()
	}))
	tb.Cleanup(srv.Close)
	return srv.URL, func() string {
		mu.Lock()
		defer mu.Unlock()
		return value
	}
}

// StatusFunction is an HTTP function that answers every call with the
// status the test sets in Status (429 with Retry-After: 0, so that a
// throttle waits for nothing) and a short body, and counts the calls.
type StatusFunction struct {
	Status atomic.Int32
	Calls  atomic.Int32
}

func (f *StatusFunction) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	f.Calls.Add(1)
	status := int(f.Status.Load())
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "0")
	}
	w.WriteHeader(status)
	w.Write([]byte("answer")) //nolint:errcheck // the test reads what arrived
}
