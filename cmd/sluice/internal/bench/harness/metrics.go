package harness

import (
	"context"
	"fmt"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The benchmarks' one reader of a gateway's Prometheus /metrics.

// scrapeMetrics reads the metric families that url (a /metrics endpoint)
// shows, by name.
func scrapeMetrics(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	resp, err := Get(ctx, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return families, nil
}

// sumBy sums a counter or gauge family's series by the value of one label;
// a family that is absent sums to nothing.
func sumBy(families map[string]*dto.MetricFamily, name, label string) map[string]float64 {
	sums := map[string]float64{}
	for _, m := range families[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				sums[l.GetValue()] += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
			}
		}
	}
	return sums
}

// BatchCounts are group commit's counters as the gateway's /metrics shows
// them, by kind (jobs, states, keys).
type BatchCounts map[string]struct{ batches, writes float64 }

// BatchCounts scrapes the gateway's group commit counters.
func (s *Stack) BatchCounts(ctx context.Context) (BatchCounts, error) {
	families, err := scrapeMetrics(ctx, s.HTTP+"/metrics")
	if err != nil {
		return nil, err
	}
	out := BatchCounts{}
	batches := sumBy(families, "sluice_buffer_batches_total", "sluice_kind")
	writes := sumBy(families, "sluice_buffer_batched_writes_total", "sluice_kind")
	for _, kind := range []string{"jobs", "states", "keys"} {
		b, okB := batches[kind]
		w, okW := writes[kind]
		if okB || okW {
			out[kind] = struct{ batches, writes float64 }{b, w}
		}
	}
	return out, nil
}

// MeanBatch formats the mean batch size between two scrapes.
func MeanBatch(from, to BatchCounts, kind string) string {
	b, w := to[kind].batches-from[kind].batches, to[kind].writes-from[kind].writes
	if b == 0 {
		return "-"
	}
	return strconv.FormatFloat(w/b, 'f', 1, 64)
}
