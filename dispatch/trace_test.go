package dispatch_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/target"
)

// A job submitted inside a span is invoked in a span of the same trace, and
// the function gets that trace as traceparent.
func TestAttemptJoinsTheSubmitTrace(t *testing.T) {
	fnURL, traceparentSent := buffertest.HeaderFunction(t, "traceparent")
	var logs buffertest.LockedBuffer
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	q := buffertest.Queue(t, buffer.Config{})

	ctx, submit := tp.Tracer("test").Start(t.Context(), "submit")
	job, err := q.Submit(ctx, "f", []byte("x"), "text/plain")
	submit.End()
	if err != nil {
		t.Fatal(err)
	}
	d, err := dispatch.New(dispatch.Config{
		Source:         q,
		Functions:      []dispatch.Function{{Name: "f", Invoker: &target.HTTP{URL: fnURL}, Concurrency: 1, Timeout: time.Second}},
		TracerProvider: tp,
		Logger:         slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	waitJob(t, q, job.Id, 10*time.Second)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	want := submit.SpanContext().TraceID()
	var attempt sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.Name() == "invoke f" {
			attempt = s
		}
	}
	if attempt == nil {
		t.Fatalf("no attempt span among %d ended spans", len(spans.Ended()))
	}
	if attempt.SpanContext().TraceID() != want || attempt.Parent().SpanID() != submit.SpanContext().SpanID() || attempt.SpanKind() != trace.SpanKindClient {
		t.Errorf("attempt span in trace %s under %s; want trace %s under the submit span %s", attempt.SpanContext().TraceID(), attempt.Parent().SpanID(), want, submit.SpanContext().SpanID())
	}
	// Lines about the job carry its ID and its trace's, and no payload.
	line := ""
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "invocation succeeded") {
			line = l
		}
	}
	if !strings.Contains(line, `"job_id":"`+job.Id+`"`) || !strings.Contains(line, `"trace_id":"`+want.String()+`"`) {
		t.Errorf("log line about the job = %q; want its job_id and trace_id", line)
	}
	traceparent := traceparentSent()
	if wantHeader := "00-" + want.String() + "-" + attempt.SpanContext().SpanID().String() + "-01"; traceparent != wantHeader {
		t.Errorf("function got traceparent %q, want %q", traceparent, wantHeader)
	}
}
