package dispatch

import (
	"testing"

	"github.com/sluicehq/sluice/dispatch/circuit"
)

// TestZeroValuesTakeTheDefaults holds the zero policies to the exported
// defaults that `sluice serve`'s configuration reads, so that a default
// changed on one side only fails here.
func TestZeroValuesTakeTheDefaults(t *testing.T) {
	var retry RetryPolicy
	retry.setDefaults()
	if want := DefaultRetryPolicy(); retry != want {
		t.Errorf("zero RetryPolicy = %+v, want DefaultRetryPolicy() %+v", retry, want)
	}
	var breaker circuit.Policy
	breaker.SetDefaults()
	if want := circuit.DefaultPolicy(); breaker != want {
		t.Errorf("zero circuit.Policy = %+v, want circuit.DefaultPolicy() %+v", breaker, want)
	}
}
