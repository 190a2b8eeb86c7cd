package groupcommit

import "testing"

// TestZeroConfigTakesTheDefaults holds a zero Config to the exported
// defaults that `sluice serve`'s configuration reads, so that a default
// changed on one side only fails here.
func TestZeroConfigTakesTheDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	if c.MaxBatch != DefaultMaxBatch || c.MaxInFlight != DefaultMaxInFlight || c.Linger != 0 {
		t.Errorf("zero Config = %+v", c)
	}
}
