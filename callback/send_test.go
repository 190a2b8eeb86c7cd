package callback_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/callback"
)

// receiver is a callback receiver that verifies every request the way a
// Standard Webhooks library would and records what it saw.
type receiver struct {
	secret string

	mu        sync.Mutex
	requests  int
	verifyErr []error
	ids       []string
	header    http.Header // of the last request
}

// newReceiver starts a receiver on 127.0.0.1. A request to /status/NNN is
// answered with status NNN, any other with 204.
func newReceiver(tb testing.TB, secret string) (*receiver, *httptest.Server) {
	tb.Helper()
	r := &receiver{secret: secret}
	srv := httptest.NewServer(r)
	tb.Cleanup(srv.Close)
	return r, srv
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = callback.Verify(rc.secret, r.Header, body, time.Minute, time.Now())
	}
	rc.mu.Lock()
	rc.requests++
	rc.ids = append(rc.ids, r.Header.Get("webhook-id"))
	rc.header = r.Header.Clone()
	if err != nil {
		rc.verifyErr = append(rc.verifyErr, err)
	}
	rc.mu.Unlock()

	code := http.StatusNoContent
	if s, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
		code, _ = strconv.Atoi(s)
	}
	w.WriteHeader(code)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests
}

// sendErr asserts that err is an *Error with the given status and
// retryability, and returns it.
func sendErr(tb testing.TB, err error, status int, retryable bool) *callback.Error {
	tb.Helper()
	var e *callback.Error
	if !errors.As(err, &e) {
		tb.Fatalf("Send = %v (%T), want *callback.Error", err, err)
	}
	if e.Status != status || e.Retryable != retryable {
		tb.Fatalf("Send = %v: Status %d, Retryable %v; want Status %d, Retryable %v", err, e.Status, e.Retryable, status, retryable)
	}
	return e
}

func TestSenderDeliversSignedJSON(t *testing.T) {
	rc, srv := newReceiver(t, secretB)
	s := &callback.Sender{
		Client: mustGuard(t, "127.0.0.0/8").Client(5 * time.Second),
		Keys:   mustKeys(t, secretA, secretB), // mid-rotation: the receiver knows only B
	}
	body := []byte(`{"id":"job_1","state":"SUCCEEDED"}`)
	if err := s.Send(context.Background(), "", srv.URL+"/hook", "msg_job_1", body, time.Now()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.requests != 1 || len(rc.verifyErr) != 0 {
		t.Fatalf("receiver saw %d requests, verify errors %v; want 1 verified request", rc.requests, rc.verifyErr)
	}
	for k, want := range map[string]string{
		"Content-Type": "application/json",
		"User-Agent":   "Sluice-Callback/1",
		"Webhook-Id":   "msg_job_1",
	} {
		if got := rc.header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

func TestSenderUserAgent(t *testing.T) {
	rc, srv := newReceiver(t, secretA)
	s := &callback.Sender{
		Client:    mustGuard(t, "127.0.0.0/8").Client(5 * time.Second),
		Keys:      mustKeys(t, secretA),
		UserAgent: "Sluice-Test/9",
	}
	if err := s.Send(context.Background(), "", srv.URL, "msg_1", []byte(`{}`), time.Now()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := rc.header.Get("User-Agent"); got != "Sluice-Test/9" {
		t.Errorf("User-Agent = %q, want Sluice-Test/9", got)
	}
}

func TestSenderStatuses(t *testing.T) {
	rc, srv := newReceiver(t, secretA)
	s := &callback.Sender{
		Client: mustGuard(t, "127.0.0.0/8").Client(5 * time.Second),
		Keys:   mustKeys(t, secretA),
	}
	tests := []struct {
		status    int
		ok        bool
		retryable bool
	}{
		{status: 200, ok: true},
		{status: 202, ok: true},
		{status: 204, ok: true},
		{status: 400},
		{status: 401},
		{status: 404},
		{status: 410},
		{status: 408, retryable: true},
		{status: 429, retryable: true},
		{status: 500, retryable: true},
		{status: 502, retryable: true},
		{status: 503, retryable: true},
		{status: 304},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			url := srv.URL + "/status/" + strconv.Itoa(tt.status)
			err := s.Send(context.Background(), "", url, "msg_"+strconv.Itoa(tt.status), []byte(`{"n":1}`), time.Now())
			if tt.ok {
				if err != nil {
					t.Fatalf("Send = %v, want nil", err)
				}
				return
			}
			e := sendErr(t, err, tt.status, tt.retryable)
			if !strings.Contains(e.Error(), strconv.Itoa(tt.status)) {
				t.Errorf("Error() = %q, want it to name the status", e.Error())
			}
		})
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.requests != len(tests) || len(rc.verifyErr) != 0 {
		t.Errorf("receiver saw %d requests with verify errors %v; want %d verified", rc.requests, rc.verifyErr, len(tests))
	}
}

func TestSenderTransportErrorsAreRetryable(t *testing.T) {
	s := &callback.Sender{
		Client: mustGuard(t, "127.0.0.0/8").Client(5 * time.Second),
		Keys:   mustKeys(t, secretA),
	}

	t.Run("closed port", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		err = s.Send(context.Background(), "", "http://"+addr+"/", "msg_1", []byte(`{}`), time.Now())
		sendErr(t, err, 0, true)
		if errors.Is(err, callback.ErrRefusedAddress) {
			t.Errorf("Send = %v, want a connection error, not a refused address", err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		t.Cleanup(srv.Close)
		t.Cleanup(func() { close(release) })
		slow := &callback.Sender{
			Client: mustGuard(t, "127.0.0.0/8").Client(50 * time.Millisecond),
			Keys:   s.Keys,
		}
		err := slow.Send(context.Background(), "", srv.URL, "msg_1", []byte(`{}`), time.Now())
		sendErr(t, err, 0, true)
	})

	t.Run("cancelled", func(t *testing.T) {
		_, srv := newReceiver(t, secretA)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := s.Send(ctx, "", srv.URL, "msg_1", []byte(`{}`), time.Now())
		sendErr(t, err, 0, true)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Send = %v, want it to wrap context.Canceled", err)
		}
	})
}

func TestSenderRefusesBadInputWithoutSending(t *testing.T) {
	rc, srv := newReceiver(t, secretA)
	client := mustGuard(t, "127.0.0.0/8").Client(5 * time.Second)
	keys := mustKeys(t, secretA)
	tests := []struct {
		name   string
		sender *callback.Sender
		url    string
		id     string
		want   error
	}{
		{name: "no keys", sender: &callback.Sender{Client: client}, url: srv.URL, id: "msg_1"},
		{name: "zero keyring", sender: &callback.Sender{Client: client, Keys: &callback.Keyring{}}, url: srv.URL, id: "msg_1"},
		{name: "empty id", sender: &callback.Sender{Client: client, Keys: keys}, url: srv.URL},
		{name: "id with newline", sender: &callback.Sender{Client: client, Keys: keys}, url: srv.URL, id: "msg_1\r\nX-Evil: 1"},
		{name: "ftp URL", sender: &callback.Sender{Client: client, Keys: keys}, url: "ftp://" + srv.Listener.Addr().String(), id: "msg_1", want: callback.ErrRefusedURL},
		{name: "userinfo", sender: &callback.Sender{Client: client, Keys: keys}, url: "http://u:p@" + srv.Listener.Addr().String(), id: "msg_1", want: callback.ErrRefusedURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.sender.Send(context.Background(), "", tt.url, tt.id, []byte(`{}`), time.Now())
			sendErr(t, err, 0, false)
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Send = %v, want %v", err, tt.want)
			}
		})
	}
	if n := rc.count(); n != 0 {
		t.Errorf("receiver got %d requests, want 0", n)
	}
}

// TestConnectTimeCheck sends to a real server on loopback with clients
// that do not allow loopback: the connection must be refused before any
// request reaches it, whether the URL names the IP or a hostname that
// resolves to it when dialed.
func TestConnectTimeCheck(t *testing.T) {
	rc, srv := newReceiver(t, secretA)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	keys := mustKeys(t, secretA)
	senders := []struct {
		name   string
		sender *callback.Sender
	}{
		{"default guard", &callback.Sender{Client: mustGuard(t).Client(5 * time.Second), Keys: keys}},
		{"other CIDR allowed", &callback.Sender{Client: mustGuard(t, "10.0.0.0/8").Client(5 * time.Second), Keys: keys}},
		{"nil client", &callback.Sender{Keys: keys}},
	}
	urls := []string{
		srv.URL + "/hook",
		"http://localhost:" + strconv.Itoa(port) + "/hook",
		"http://[::ffff:127.0.0.1]:" + strconv.Itoa(port) + "/hook",
	}
	for _, s := range senders {
		for _, u := range urls {
			t.Run(s.name+"/"+u, func(t *testing.T) {
				err := s.sender.Send(context.Background(), "", u, "msg_1", []byte(`{}`), time.Now())
				if !errors.Is(err, callback.ErrRefusedAddress) {
					t.Fatalf("Send = %v, want ErrRefusedAddress", err)
				}
				sendErr(t, err, 0, false)
			})
		}
	}
	if n := rc.count(); n != 0 {
		t.Errorf("loopback server received %d requests, want 0", n)
	}
}

// TestRedirectsAreNotFollowed serves redirects from 127.0.0.2, the only
// allowed address, towards a second receiver on 127.0.0.1 and towards the
// cloud metadata address: Send must return the 302 itself.
func TestRedirectsAreNotFollowed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2 (not all of 127/8 is loopback here): %v", err)
	}
	target, targetSrv := newReceiver(t, secretA)
	targetPort := targetSrv.Listener.Addr().(*net.TCPAddr).Port

	var redirects atomic.Int32
	redirector := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects.Add(1)
		switch r.URL.Path {
		case "/to-loopback":
			http.Redirect(w, r, "http://127.0.0.1:"+strconv.Itoa(targetPort)+"/", http.StatusFound)
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	redirector.Listener.Close()
	redirector.Listener = ln
	redirector.Start()
	t.Cleanup(redirector.Close)

	keys := mustKeys(t, secretA)
	guards := []struct {
		name  string
		allow []string
	}{
		{"only 127.0.0.2", []string{"127.0.0.2/32"}},
		// With all loopback allowed, only the redirect policy stands
		// between the redirector and the second receiver.
		{"all loopback", []string{"127.0.0.0/8"}},
	}
	for _, g := range guards {
		for _, path := range []string{"/to-loopback", "/to-metadata"} {
			t.Run(g.name+path, func(t *testing.T) {
				s := &callback.Sender{Client: mustGuard(t, g.allow...).Client(2 * time.Second), Keys: keys}
				err := s.Send(context.Background(), "", redirector.URL+path, "msg_1", []byte(`{}`), time.Now())
				e := sendErr(t, err, http.StatusFound, false)
				if !strings.Contains(e.Error(), "redirect not followed") {
					t.Errorf("Error() = %q, want it to say the redirect was not followed", e.Error())
				}
			})
		}
	}
	if n := redirects.Load(); n != 4 {
		t.Errorf("redirector received %d requests, want 4", n)
	}
	if n := target.count(); n != 0 {
		t.Errorf("redirect target received %d requests, want 0", n)
	}
}

// TestSenderReusesConnections checks that answers with a body are read, so
// the next delivery to the same receiver reuses the connection.
func TestSenderReusesConnections(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, strings.Repeat("x", 16<<10))
	}))
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	s := &callback.Sender{Client: mustGuard(t, "127.0.0.0/8").Client(5 * time.Second), Keys: mustKeys(t, secretA)}
	for i := range 3 {
		err := s.Send(context.Background(), "", srv.URL, "msg_"+strconv.Itoa(i), []byte(`{}`), time.Now())
		sendErr(t, err, http.StatusServiceUnavailable, true)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("server saw %d connections for 3 sequential sends, want 1", n)
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		err  *callback.Error
		want string
	}{
		{&callback.Error{Status: 500, Retryable: true, Err: errors.New("Internal Server Error")}, "callback: delivery failed with status 500 (retryable): Internal Server Error"},
		{&callback.Error{Status: 400, Err: errors.New("Bad Request")}, "callback: delivery failed with status 400: Bad Request"},
		{&callback.Error{Retryable: true, Err: io.ErrUnexpectedEOF}, "callback: delivery failed (retryable): unexpected EOF"},
		{&callback.Error{}, "callback: delivery failed"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	inner := errors.New("inner")
	if !errors.Is(&callback.Error{Err: inner}, inner) {
		t.Error("Unwrap does not expose Err")
	}
}
