package buffertest

import (
	"net/http"
	"net/http/httptest"
	"sync"
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
