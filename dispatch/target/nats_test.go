package target

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/sluicehq/sluice/buffer/buffertest"
)

// startResizeService runs a micro service on the embedded server, on
// subject svc.resize: it echoes the request with the Sluice headers it got,
// answers a payload "bad" with service error 400, "busy" with 429,
// "crash" with a code that is no status, and "slow" after a second.
func startResizeService(t *testing.T) *NATS {
	t.Helper()
	srv := buffertest.Start(t, "")
	svcConn, callConn := srv.Connect(t), srv.Connect(t)
	svc, err := micro.AddService(svcConn, micro.Config{
		Name: "resize", Version: "1.0.0",
		Endpoint: &micro.EndpointConfig{Subject: "svc.resize", Handler: micro.HandlerFunc(func(r micro.Request) {
			switch string(r.Data()) {
			case "bad":
				r.Error("400", "width must be positive", []byte(`{"field":"width"}`))
			case "busy":
				r.Error("429", "too many resizes", nil, micro.WithHeaders(micro.Headers{"Retry-After": []string{"2"}}))
			case "crash":
				r.Error("E_OOM", "out of memory", nil)
			case "slow":
				time.Sleep(time.Second) // past the caller's timeout
				r.Respond([]byte("late"))
			default:
				h := r.Headers()
				r.Respond([]byte(string(r.Data())+" job="+h.Get(HeaderJobID)+" attempt="+h.Get(HeaderAttempt)+" warmup="+h.Get(HeaderWarmup)+" type="+h.Get("Content-Type")),
					micro.WithHeaders(micro.Headers{"Content-Type": []string{"text/plain"}}))
			}
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Stop() })
	// The service's subscription reaches the server before any request.
	if err := svcConn.Flush(); err != nil {
		t.Fatal(err)
	}
	return &NATS{Conn: callConn, Subject: "svc.resize"}
}

// TestNATSTargetAnswers invokes a micro service on the embedded server and
// checks how each kind of answer maps onto a Response.
func TestNATSTargetAnswers(t *testing.T) {
	inv := startResizeService(t)
	for _, tc := range []struct {
		name, payload string
		want          Response
		wantBody      string
	}{
		{name: "reply", payload: "cat.png",
			want: Response{Status: 200, ContentType: "text/plain"}, wantBody: "cat.png job=job-1 attempt=2 warmup= type=image/png"},
		{name: "service error", payload: "bad",
			want: Response{Status: 400, Error: "NATS service error 400: width must be positive"}, wantBody: `{"field":"width"}`},
		{name: "busy", payload: "busy",
			want: Response{Status: 429, RetryAfter: "2", Error: "NATS service error 429: too many resizes"}},
		{name: "code that is no status", payload: "crash",
			want: Response{Status: 500, Error: "NATS service error E_OOM: out of memory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := inv.Invoke(t.Context(), &Invocation{JobID: "job-1", Attempt: 2, ContentType: "image/png", Payload: []byte(tc.payload)})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tc.want.Status || resp.Error != tc.want.Error || resp.RetryAfter != tc.want.RetryAfter || string(resp.Body) != tc.wantBody ||
				(tc.want.ContentType != "" && resp.ContentType != tc.want.ContentType) {
				t.Errorf("response = {Status:%d Error:%q RetryAfter:%q ContentType:%q Body:%q}, want %+v body %q",
					resp.Status, resp.Error, resp.RetryAfter, resp.ContentType, resp.Body, tc.want, tc.wantBody)
			}
		})
	}
	t.Run("warmup", func(t *testing.T) {
		resp, err := inv.Invoke(t.Context(), &Invocation{Warmup: true})
		if err != nil || resp.Status != 200 || !strings.Contains(string(resp.Body), "job= attempt= warmup=1") {
			t.Errorf("keep-warm ping = %+v, %v", resp, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		resp, err := inv.Invoke(ctx, &Invocation{JobID: "j", Attempt: 1, Payload: []byte("slow")})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("slow reply = %+v, %v; want a deadline error", resp, err)
		}
	})
	t.Run("no responders", func(t *testing.T) {
		other := &NATS{Conn: inv.Conn, Subject: "svc.nobody"}
		resp, err := other.Invoke(t.Context(), &Invocation{JobID: "j", Attempt: 1, Payload: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != http.StatusServiceUnavailable || resp.RetryAfter != "1" || resp.Error == "" {
			t.Errorf("no responders = %+v; want a throttle of 1s: 503 with Retry-After 1 and an error", resp)
		}
	})
	t.Run("too large", func(t *testing.T) {
		small := &NATS{Conn: inv.Conn, Subject: inv.Subject, MaxResponseBytes: 10}
		if _, err := small.Invoke(t.Context(), &Invocation{JobID: "j", Attempt: 1, Payload: []byte("a long enough payload")}); !errors.Is(err, ErrResponseTooLarge) {
			t.Errorf("err = %v, want ErrResponseTooLarge", err)
		}
	})
}
