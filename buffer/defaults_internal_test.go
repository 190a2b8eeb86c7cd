package buffer

import (
	"testing"

	"github.com/sluicehq/sluice/buffer/store"
)

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
	if s := c.Stores; s.StateBytes != store.DefaultStateBytes || s.IdempotencyBytes != store.DefaultIdempotencyBytes ||
		s.DeadLetterBytes != c.MaxBytes || s.CallbackBytes != c.MaxBytes || s.HighWater != store.DefaultHighWater {
		t.Errorf("zero store.Limits = %+v", s)
	}
}
