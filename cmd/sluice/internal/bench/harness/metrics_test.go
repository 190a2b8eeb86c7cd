package harness

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestBatchCounts(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP sluice_buffer_batches_total Batches committed.
# TYPE sluice_buffer_batches_total counter
sluice_buffer_batches_total{otel_scope_name="buffer",sluice_kind="jobs"} 10
sluice_buffer_batches_total{otel_scope_name="buffer",sluice_kind="states"} 4
# HELP sluice_buffer_batched_writes_total Writes committed in batches.
# TYPE sluice_buffer_batched_writes_total counter
sluice_buffer_batched_writes_total{otel_scope_name="buffer",sluice_kind="jobs"} 250
sluice_buffer_batched_writes_total{otel_scope_name="buffer",sluice_kind="states"} 40
# HELP other_total Something else, with a sluice_kind.
# TYPE other_total counter
other_total{sluice_kind="jobs"} 99
`)
	}))
	defer srv.Close()
	s := &Stack{HTTP: srv.URL}
	got, err := s.BatchCounts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	zero := BatchCounts{}
	if m := MeanBatch(zero, got, "jobs"); m != "25.0" {
		t.Errorf("jobs: mean batch %s, want 25.0", m)
	}
	if m := MeanBatch(zero, got, "states"); m != "10.0" {
		t.Errorf("states: mean batch %s, want 10.0", m)
	}
	if m := MeanBatch(got, got, "jobs"); m != "-" {
		t.Errorf("no batches between scrapes: %s, want -", m)
	}
}
