package delivery

import (
	"testing"

	"github.com/sluicehq/sluice/dispatch/retry"
)

// TestZeroValuesTakeTheDefaults holds a zero Config to the exported
// defaults that `sluice serve`'s configuration reads, so that a default
// changed on one side only fails here.
func TestZeroValuesTakeTheDefaults(t *testing.T) {
	d, err := New(Config{Source: nopSource{}, Sender: nopSender{}})
	if err != nil {
		t.Fatal(err)
	}
	want := retry.DefaultPolicy()
	want.MaxAttempts = DefaultMaxAttempts
	if got := d.cfg; got.Timeout != DefaultTimeout || got.Retry != want || got.Concurrency != DefaultConcurrency {
		t.Errorf("zero Config: timeout %v, retry %+v, concurrency %d; want %v, %+v, %d",
			got.Timeout, got.Retry, got.Concurrency, DefaultTimeout, want, DefaultConcurrency)
	}
}

type nopSource struct{ Source }

type nopSender struct{ Sender }
