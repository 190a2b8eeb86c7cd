package delivery_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/callbacks"
	"github.com/sluicehq/sluice/callback"
	"github.com/sluicehq/sluice/callback/delivery"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
)

var testSecret = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))

// hook answers callbacks by a script of statuses (the last from then on),
// recording each webhook-id and whether its signature held.
type hook struct {
	script []int

	mu       sync.Mutex
	ids      []string
	verified []bool
	types    []string
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var event callbacks.Event
	json.Unmarshal(body, &event) //nolint:errcheck // an empty type fails the test
	h.mu.Lock()
	n := len(h.ids)
	h.ids = append(h.ids, r.Header.Get("webhook-id"))
	h.verified = append(h.verified, callback.Verify(testSecret, r.Header, body, time.Minute, time.Now()) == nil)
	h.types = append(h.types, event.Type)
	h.mu.Unlock()
	w.WriteHeader(h.script[min(n, len(h.script)-1)])
}

func (h *hook) seen() ([]string, []bool, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ids...), append([]bool(nil), h.verified...), append([]string(nil), h.types...)
}

// runCallbacks finishes one job with a callback to h, delivers callbacks
// until want calls arrived (failing the test after 10s), and gives an
// extra one, which must not come, time to come.
func runCallbacks(t *testing.T, h *hook, want int) []string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	q := buffertest.Queue(t, buffer.Config{})
	job, err := q.Submit(t.Context(), "f", []byte("x"), "text/plain", buffer.WithCallback(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	finishJobs(t, q, 1)
	startCallbacks(t, delivery.Config{
		Source:  q,
		Timeout: time.Second,
		Retry:   retry.Policy{MaxAttempts: 4, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond},
	}, nil)
	buffertest.WaitFor(t, 10*time.Second, fmt.Sprintf("%d calls of the receiver", want), func() bool {
		ids, _, _ := h.seen()
		return len(ids) >= want
	})
	time.Sleep(200 * time.Millisecond) // time for a call too many, which must not come
	ids, verified, types := h.seen()
	for i := range ids {
		if ids[i] != callbacks.WebhookID(job) || !verified[i] || types[i] != "job.succeeded" {
			t.Errorf("call %d: webhook-id %s, signature valid %v, type %q; want %s, valid, job.succeeded", i, ids[i], verified[i], types[i], callbacks.WebhookID(job))
		}
	}
	return ids
}

func TestCallbackRetriedUntilDelivered(t *testing.T) {
	if ids := runCallbacks(t, &hook{script: []int{500, 503, 200}}, 3); len(ids) != 3 {
		t.Errorf("receiver was called %d times; want 2 failures, then the delivery, then nothing", len(ids))
	}
}

func TestCallbackGivesUpAfterMaxAttempts(t *testing.T) {
	if ids := runCallbacks(t, &hook{script: []int{500}}, 4); len(ids) != 4 {
		t.Errorf("receiver was called %d times; want exactly max_attempts (4)", len(ids))
	}
}

func TestCallbackNotRetriedWhenRefused(t *testing.T) {
	if ids := runCallbacks(t, &hook{script: []int{410, 200}}, 1); len(ids) != 1 {
		t.Errorf("receiver was called %d times; a 4xx is final", len(ids))
	}
}

// startCallbacks delivers callbacks as cfg says, signed with testSecret and
// allowed to reach loopback, until the test ends; before it waits for the
// deliverer to stop, it runs beforeStop (if any), to release what
// deliveries may be waiting on.
func startCallbacks(t *testing.T, cfg delivery.Config, beforeStop func()) {
	t.Helper()
	guard, err := callback.NewGuard([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := callback.NewKeyring([]string{testSecret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sender = &callback.Sender{Client: guard.Client(cfg.Timeout), Keys: keys}
	d, err := delivery.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, d.Run, beforeStop)
}

// finishJobs runs function f's jobs, concurrency at a time, on a function
// that answers "ok", until the test ends: a job with a callback then
// leaves one to deliver.
func finishJobs(t *testing.T, q *buffer.Queue, concurrency int) {
	t.Helper()
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(fn.Close)
	d, err := dispatch.New(dispatch.Config{
		Source:       q,
		Functions:    []dispatch.Function{{Name: "f", Invoker: &target.HTTP{URL: fn.URL}, Concurrency: concurrency, Timeout: time.Second}},
		DrainTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, d.Run, nil)
}

// runUntilCleanup runs run until the test ends; then it runs beforeStop
// (if any), ends run's context and waits for it to return nil.
func runUntilCleanup(t *testing.T, run func(context.Context) error, beforeStop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		if beforeStop != nil {
			beforeStop()
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}
