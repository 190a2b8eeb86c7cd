package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/internal/instrument"
)

// telemetry is one gateway process's OpenTelemetry: its tracer provider
// (exporting over OTLP when the standard OTEL_* variables ask for it,
// nothing otherwise) and its meter provider, read by Prometheus at
// /metrics.
type telemetry struct {
	tracer  trace.TracerProvider
	meter   metric.MeterProvider
	metrics http.Handler
	// shutdown flushes what is still buffered for export.
	shutdown func(context.Context) error
}

// newTelemetry sets up the providers. tp, when not nil, is the tracer
// provider to use instead of one from the environment (tests pass one).
func newTelemetry(ctx context.Context, tp trace.TracerProvider) (*telemetry, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "sluice")),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
		resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	// A registry of its own per process, not Prometheus' global one: tests
	// run several gateways in one process.
	reg := prometheus.NewRegistry()
	// No otel_scope_* labels: every series of Sluice's is its own, and
	// the labels only lengthen each one and every query that joins them.
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	// No exemplars: the Prometheus text format served here carries none,
	// and each series' reservoir cost memory per function (6 MiB of a
	// 35 MiB live heap with 1,000 functions).
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res),
		sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	t := &telemetry{
		tracer:   tp,
		meter:    mp,
		metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		shutdown: mp.Shutdown,
	}
	if tp != nil {
		return t, nil
	}
	spans, err := otlpFromEnv(ctx)
	if err != nil || spans == nil {
		t.tracer = noop.NewTracerProvider()
		return t, err
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans), sdktrace.WithResource(res))
	t.tracer = sdk
	t.shutdown = func(ctx context.Context) error { return errors.Join(sdk.Shutdown(ctx), mp.Shutdown(ctx)) }
	return t, nil
}

// otlpFromEnv is the OTLP span exporter the standard environment asks
// for: OTEL_TRACES_EXPORTER=otlp, or an OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT;
// over gRPC when OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL is grpc, else
// http/protobuf. Nil when none is asked for (or OTEL_TRACES_EXPORTER=none).
// The exporters read the rest of OTEL_EXPORTER_OTLP_* themselves.
func otlpFromEnv(ctx context.Context) (sdktrace.SpanExporter, error) {
	switch os.Getenv("OTEL_TRACES_EXPORTER") {
	case "none":
		return nil, nil
	case "", "otlp":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", os.Getenv("OTEL_TRACES_EXPORTER"))
	}
	if os.Getenv("OTEL_TRACES_EXPORTER") == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	protocol := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch protocol {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: use grpc or http/protobuf", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	return exp, nil
}

// registerBatchMetrics reports group commit's counts: how many atomic
// batches were stored and how many writes they held, for submitted jobs
// and for job state changes; their ratio is the mean batch size.
func registerBatchMetrics(mp metric.MeterProvider, queue *buffer.Queue) error {
	b := instrument.NewBuilder(mp.Meter("github.com/sluicehq/sluice/buffer"))
	batches := b.Int64Counter("sluice.buffer.batches", "{batch}",
		"Atomic batches stored by group commit, by kind: jobs (submits), states (job state changes) or keys (concurrency keys' jobs in flight).")
	writes := b.Int64Counter("sluice.buffer.batched_writes", "{write}", "Writes stored in those batches, by kind.")
	refused := b.Int64Counter("sluice.buffer.batch_fallbacks", "{batch}", "Batches refused as a whole and retried write by write, by kind.")
	kinds := map[string]metric.ObserveOption{}
	for kind := range queue.BatchStats() {
		kinds[kind] = metric.WithAttributeSet(attribute.NewSet(attribute.String("sluice.kind", kind)))
	}
	return b.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for kind, st := range queue.BatchStats() {
			o.ObserveInt64(batches, st.Batches, kinds[kind])
			o.ObserveInt64(writes, st.Messages, kinds[kind])
			o.ObserveInt64(refused, st.Fallbacks, kinds[kind])
		}
		return nil
	}, batches, writes, refused)
}

// registerStoreMetrics exports how full each JetStream store is, and how
// many finished jobs wait for room in a full one, so that an operator sees
// a store filling before it refuses work.
func registerStoreMetrics(mp metric.MeterProvider, queue *buffer.Queue) error {
	b := instrument.NewBuilder(mp.Meter("github.com/sluicehq/sluice/buffer"))
	used := b.Int64Gauge("sluice.store.used", "By", "Bytes held by each store: jobs, state, idempotency, dead_letters, callbacks.")
	limit := b.Int64Gauge("sluice.store.limit", "By", "Each store's size limit.")
	fill := b.Float64Gauge("sluice.store.fill", "1",
		"Each store's fill, 0 to 1, the larger of bytes and messages against their limits: at 1 the store refuses writes (submits are refused from buffer.high_water on for state and idempotency).")
	parked := b.Int64Gauge("sluice.store.parked_finishes", "{job}", "Finished jobs whose dead letter or callback waits for room in its full store.")
	return b.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		stores, err := queue.Stores(ctx)
		if err != nil {
			return nil // JetStream away: no reading, rather than a wrong one
		}
		for _, u := range stores {
			at := metric.WithAttributeSet(attribute.NewSet(attribute.String("sluice.store", u.Name)))
			o.ObserveInt64(used, int64(u.Bytes), at)
			o.ObserveInt64(limit, u.MaxBytes, at)
			o.ObserveFloat64(fill, u.Fill(), at)
		}
		if n, err := queue.ParkedCount(ctx); err == nil {
			o.ObserveInt64(parked, int64(n))
		}
		return nil
	}, used, limit, fill, parked)
}
