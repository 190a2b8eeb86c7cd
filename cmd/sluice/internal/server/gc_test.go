package server

import (
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	current := func() int {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	cases := []struct {
		name     string
		gogc     string
		embedded bool
		want     int
	}{
		{"gateway on an external JetStream", "", false, gatewayGCPercent},
		{"process holding JetStream", "", true, embeddedGCPercent},
		{"GOGC set wins, external", "150", false, 100},
		{"GOGC set wins, embedded", "150", true, 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GOGC", c.gogc)
			debug.SetGCPercent(100) // TuneGC changes it, or leaves it at 100
			TuneGC(c.embedded)
			if got := current(); got != c.want {
				t.Errorf("GOGC after TuneGC = %d, want %d", got, c.want)
			}
		})
	}
}
