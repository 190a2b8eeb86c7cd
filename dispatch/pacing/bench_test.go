package pacing

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/shared"
)

// BenchmarkStepWindow is the pacer's step, run every PaceEvery per
// function in each process.
func BenchmarkStepWindow(b *testing.B) {
	cfg := &Policy{Initial: 10, PerMinute: 500, Adaptive: true}
	cfg.SetDefaults(100)
	now := time.Now()
	p := &shared.PacingState{}
	load := buffer.Load{Backlog: 5000, InFlight: 10, MaxInFlight: 10}
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		Step(p, cfg, 100, load, now)
		load.InFlight = min(int(p.Window), 100)
		load.MaxInFlight = load.InFlight
	}
}
