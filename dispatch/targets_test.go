package dispatch

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch/pacing"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
)

// TestTargetsNoAnswer: when a target gets no answer, the dispatcher words
// the invoker's error for the job (a timeout as its timeout, a failed dial
// as no connection) and tries again. Package target's tests check the
// answers themselves.
func TestTargetsNoAnswer(t *testing.T) {
	lambdaAt := func(endpoint string) *target.Lambda {
		client := lambda.New(lambda.Options{
			Region:       "eu-west-1",
			BaseEndpoint: aws.String(endpoint),
			Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		})
		return &target.Lambda{Client: client, Function: "my-fn"}
	}
	job := &target.Invocation{JobID: "j", Attempt: 1, Payload: []byte(`{}`)}

	t.Run("lambda timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(release)
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		resp, err := lambdaAt(srv.URL).Invoke(ctx, job)
		if err == nil || !retry.RetryableError(err) {
			t.Fatalf("Invoke past the deadline = %+v, %v; want a retryable error", resp, err)
		}
		if got := describeInvokeError(err, 200*time.Millisecond); !strings.Contains(got, "did not answer within its timeout") {
			t.Errorf("described as %q", got)
		}
	})
	t.Run("lambda endpoint gone", func(t *testing.T) {
		gone := httptest.NewServer(http.NotFoundHandler())
		gone.Close()
		resp, err := lambdaAt(gone.URL).Invoke(t.Context(), job)
		if err == nil || !retry.RetryableError(err) {
			t.Fatalf("Invoke on a closed endpoint = %+v, %v; want a retryable error", resp, err)
		}
		if got := describeInvokeError(err, time.Second); got != "could not connect to the function" {
			t.Errorf("described as %q", got)
		}
	})

	srv := buffertest.Start(t, "")
	svcConn, callConn := srv.Connect(t), srv.Connect(t)
	// A service that takes requests and never replies.
	if _, err := svcConn.Subscribe("svc.silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := svcConn.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Run("nats timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		inv := &target.NATS{Conn: callConn, Subject: "svc.silent"}
		resp, err := inv.Invoke(ctx, job)
		if err == nil || !retry.RetryableError(err) {
			t.Fatalf("silent service = %+v, %v; want a retryable error", resp, err)
		}
		if got := describeInvokeError(err, 100*time.Millisecond); !strings.Contains(got, "did not answer within its timeout") {
			t.Errorf("described as %q", got)
		}
	})
	t.Run("nats no responders", func(t *testing.T) {
		inv := &target.NATS{Conn: callConn, Subject: "svc.nobody"}
		resp, err := inv.Invoke(t.Context(), job)
		if err != nil {
			t.Fatal(err)
		}
		if retryAfter, _, throttled := pacing.ThrottleOf(resp, time.Now()); !throttled || retryAfter != time.Second || resp.Error == "" {
			t.Errorf("no responders = %+v: throttled %v after %v; want a throttle of 1s", resp, throttled, retryAfter)
		}
	})
}
