package instrument_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sluicehq/sluice/internal/instrument"
)

func TestBuilderObserves(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	b := instrument.NewBuilder(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"))
	depth := b.Int64Gauge("test.depth", "{job}", "Jobs waiting.")
	fill := b.Float64Gauge("test.fill", "1", "How full.")
	count := b.Int64Counter("test.count", "{batch}", "Batches.")
	if err := b.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(depth, 3)
		o.ObserveFloat64(fill, 0.5)
		o.ObserveInt64(count, 7)
		return nil
	}, depth, fill, count); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := make(map[string]metricdata.Metrics)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		got[m.Name] = m
	}
	if m := got["test.depth"]; m.Unit != "{job}" || m.Description != "Jobs waiting." || m.Data.(metricdata.Gauge[int64]).DataPoints[0].Value != 3 {
		t.Errorf("test.depth = %+v", m)
	}
	if m := got["test.fill"]; m.Unit != "1" || m.Data.(metricdata.Gauge[float64]).DataPoints[0].Value != 0.5 {
		t.Errorf("test.fill = %+v", m)
	}
	if m := got["test.count"]; m.Unit != "{batch}" || m.Data.(metricdata.Sum[int64]).DataPoints[0].Value != 7 {
		t.Errorf("test.count = %+v", m)
	}
}

// A bad instrument's error comes back from Err and RegisterCallback, the
// first one only, and the callback is not registered.
func TestBuilderKeepsFirstError(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	b := instrument.NewBuilder(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"))
	b.Int64Gauge("test.good", "1", "Fine.")
	if b.Err() != nil {
		t.Fatalf("Err = %v after a good instrument", b.Err())
	}
	bad := b.Int64Gauge("0bad", "1", "A name must start with a letter.")
	first := b.Err()
	if first == nil {
		t.Fatal("Err = nil after an instrument with a bad name")
	}
	b.Float64Gauge("1bad", "1", "Another.")
	if b.Err() != first {
		t.Errorf("Err = %v, want the first error %v", b.Err(), first)
	}
	called := false
	err := b.RegisterCallback(func(context.Context, metric.Observer) error { called = true; return nil }, bad)
	if err != first {
		t.Errorf("RegisterCallback = %v, want %v", err, first)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if called {
		t.Error("the callback ran, though making an instrument failed")
	}
}
