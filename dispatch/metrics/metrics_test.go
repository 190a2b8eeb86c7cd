package metrics_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/metrics"
)

// TestCircuitOpenGaugeFollowsTheSharedState: the circuit_open gauge is 1
// while the shared state has the breaker open or half-open, 0 when closed.
func TestCircuitOpenGaugeFollowsTheSharedState(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	var g metrics.Gauges
	f := metrics.NewFunction("f")
	if err := metrics.RegisterGauges(mp, []metrics.FunctionGauges{{Attrs: f.Fn, Limit: 10, Gauges: &g}}, nil); err != nil {
		t.Fatal(err)
	}
	read := func() int64 {
		t.Helper()
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		for _, m := range rm.ScopeMetrics[0].Metrics {
			if m.Name == "sluice.dispatch.circuit_open" {
				return m.Data.(metricdata.Gauge[int64]).DataPoints[0].Value
			}
		}
		t.Fatal("no sluice.dispatch.circuit_open")
		return 0
	}
	for _, c := range []struct {
		state string
		want  int64
	}{{shared.CircuitOpen, 1}, {shared.CircuitHalfOpen, 1}, {shared.CircuitClosed, 0}} {
		g.SetShared(shared.PacingState{Circuit: shared.Circuit{State: c.state}})
		if got := read(); got != c.want {
			t.Errorf("circuit %q: gauge %d, want %d", c.state, got, c.want)
		}
	}
}
