package dispatch

import (
	"testing"

	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/retry"
)

// TestZeroValuesTakeTheDefaults holds the zero policies to the exported
// defaults that `sluice serve`'s configuration reads, so that a default
// changed on one side only fails here.
func TestZeroValuesTakeTheDefaults(t *testing.T) {
	var policy retry.Policy
	policy.SetDefaults()
	if want := retry.DefaultPolicy(); policy != want {
		t.Errorf("zero retry.Policy = %+v, want retry.DefaultPolicy() %+v", policy, want)
	}
	var breaker circuit.Policy
	breaker.SetDefaults()
	if want := circuit.DefaultPolicy(); breaker != want {
		t.Errorf("zero circuit.Policy = %+v, want circuit.DefaultPolicy() %+v", breaker, want)
	}
}
