package loadgen

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startHTTP serves h on loopback and counts the connections it accepts.
func startHTTP(t *testing.T, h http.HandlerFunc) (addr string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), conns
}

func TestHTTPConnKeepsAlive(t *testing.T) {
	addr, conns := startHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Path", r.URL.Path)
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, r.Header.Get("Content-Type")+" "+r.Header.Get("X-Api-Key")+" "+strconv.Itoa(len(b))) //nolint:errcheck // test
	})
	c, err := DialHTTP(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 50 {
		code, body, err := c.Post(t.Context(), "/v1/x", "application/octet-stream", make([]byte, i*100), "X-Api-Key", "k1")
		if err != nil {
			t.Fatal(err)
		}
		if want := "application/octet-stream k1 " + strconv.Itoa(i*100); code != http.StatusAccepted || string(body) != want {
			t.Fatalf("got %d %q, want 202 %q", code, body, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("50 requests used %d connections, want 1", n)
	}
}

// A large answer comes chunked; an answer that closes the connection makes
// the next request dial again.
func TestHTTPConnChunkedAndClose(t *testing.T) {
	big := strings.Repeat("y", 100<<10)
	addr, conns := startHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, big) //nolint:errcheck // test
	})
	c, err := DialHTTP(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, path := range []string{"/a", "/close", "/b", "/c"} {
		code, body, err := c.Post(t.Context(), path, "text/plain", []byte("x"))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if code != http.StatusOK || string(body) != big {
			t.Fatalf("%s: got %d and %d bytes", path, code, len(body))
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("used %d connections, want 2 (one closed by the server)", n)
	}
}

func TestHTTPConnContext(t *testing.T) {
	addr, _ := startHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	})
	c, err := DialHTTP(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := c.Post(ctx, "/slow", "text/plain", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the deadline took %s to end the request", d)
	}
	// The next request gets a new connection and works.
	if code, _, err := c.Post(t.Context(), "/fast", "text/plain", nil); err != nil || code != http.StatusOK {
		t.Fatalf("after the deadline: %d, %v", code, err)
	}
}
