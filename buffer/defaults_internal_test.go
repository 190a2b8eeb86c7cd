package buffer

import "testing"

// TestZeroConfigTakesTheDefaults holds a zero Config to the exported
// defaults that `sluice serve`'s configuration reads, so that a default
// changed on one side only fails here.
func TestZeroConfigTakesTheDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	if c.MaxJobs != DefaultMaxJobs || c.MaxBytes != DefaultMaxBytes || c.Retention != DefaultRetention ||
		c.IdempotencyWindow != DefaultIdempotencyWindow || c.DeadLetterRetention != DefaultDeadLetterRetention {
		t.Errorf("zero Config = %+v", c)
	}
	if s := c.Stores; s.StateBytes != DefaultStateBytes || s.IdempotencyBytes != DefaultIdempotencyBytes ||
		s.DeadLetterBytes != c.MaxBytes || s.CallbackBytes != c.MaxBytes || s.HighWater != DefaultHighWater {
		t.Errorf("zero StoreLimits = %+v", s)
	}
}
