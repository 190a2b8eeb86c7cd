package config

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/groupcommit"
	"github.com/sluicehq/sluice/buffer/store"
	"github.com/sluicehq/sluice/callback/delivery"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/gateway"
)

// TestYAMLDefaultsAreTheLibraries parses a configuration that sets
// nothing but a function's name and url, converts it into the libraries'
// configurations, and checks that every setting left out is what the
// library does with a zero value: either still zero, so that the library
// applies its default, or that default itself. It fails if a default is
// changed on one side only.
func TestYAMLDefaultsAreTheLibraries(t *testing.T) {
	cfg, err := ParseConfig([]byte("functions:\n  - {name: f, url: http://127.0.0.1:9/}\ncallbacks:\n  secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]\n"))
	if err != nil {
		t.Fatal(err)
	}

	df := DispatchFunction(cfg.Functions[0])
	if want := retry.DefaultPolicy(); df.Retry != want {
		t.Errorf("retry = %+v through YAML, retry.DefaultPolicy() = %+v", df.Retry, want)
	}
	if want := circuit.DefaultPolicy(); df.Circuit != want {
		t.Errorf("circuit breaker = %+v through YAML, circuit.DefaultPolicy() = %+v", df.Circuit, want)
	}
	zeroOr(t, "rate burst", df.RateBurst, 1)
	zeroOr(t, "priority aging", df.PriorityAging, dispatch.DefaultPriorityAging)
	zeroOr(t, "max payload", int64(cfg.Functions[0].MaxPayload), int64(gateway.DefaultMaxPayload))

	q := cfg.Buffer.Queue()
	zeroOr(t, "buffer max jobs", q.MaxJobs, int64(buffer.DefaultMaxJobs))
	zeroOr(t, "buffer max bytes", q.MaxBytes, int64(buffer.DefaultMaxBytes))
	zeroOr(t, "buffer max consumers", q.MaxConsumers, buffer.DefaultMaxConsumers)
	zeroOr(t, "buffer job retention", q.Retention, buffer.DefaultRetention)
	zeroOr(t, "buffer idempotency window", q.IdempotencyWindow, buffer.DefaultIdempotencyWindow)
	zeroOr(t, "buffer dead letter retention", q.DeadLetterRetention, buffer.DefaultDeadLetterRetention)
	zeroOr(t, "buffer group commit max batch", q.Batch.MaxBatch, groupcommit.DefaultMaxBatch)
	zeroOr(t, "buffer group commit in flight", q.Batch.MaxInFlight, groupcommit.DefaultMaxInFlight)
	zeroOr(t, "buffer group commit linger", q.Batch.Linger, time.Duration(0))
	zeroOr(t, "buffer state max bytes", q.Stores.StateBytes, int64(store.DefaultStateBytes))
	zeroOr(t, "buffer idempotency max bytes", q.Stores.IdempotencyBytes, int64(store.DefaultIdempotencyBytes))
	zeroOr(t, "buffer dead letter max bytes", q.Stores.DeadLetterBytes, q.MaxBytes)
	zeroOr(t, "buffer callback max bytes", q.Stores.CallbackBytes, q.MaxBytes)
	zeroOr(t, "buffer high water", q.Stores.HighWater, store.DefaultHighWater)

	cb := cfg.Callbacks.Deliverer()
	retry := retry.DefaultPolicy()
	retry.MaxAttempts = delivery.DefaultMaxAttempts
	zeroOr(t, "callbacks timeout", cb.Timeout, delivery.DefaultTimeout)
	zeroOr(t, "callbacks max attempts", cb.Retry.MaxAttempts, retry.MaxAttempts)
	zeroOr(t, "callbacks initial backoff", cb.Retry.InitialBackoff, retry.InitialBackoff)
	zeroOr(t, "callbacks max backoff", cb.Retry.MaxBackoff, retry.MaxBackoff)
	zeroOr(t, "callbacks multiplier", cb.Retry.Multiplier, retry.Multiplier)
	zeroOr(t, "callbacks concurrency", cb.Concurrency, delivery.DefaultConcurrency)
	zeroOr(t, "callbacks tenant concurrency", cb.TenantConcurrency, max(cb.Concurrency/4, 1))
	zeroOr(t, "callbacks max pending", cb.MaxPending, 64*cb.Concurrency)

	if got := cfg.Streams.Gateway(); got != (gateway.StreamLimits{}) {
		t.Errorf("streams = %+v through YAML, want zeros, which take gateway's defaults", got)
	}
}

// zeroOr checks that a setting left out of the YAML reaches the library
// as zero, which takes the library's default, or as that default.
func zeroOr[T comparable](t *testing.T, name string, got, libraryDefault T) {
	t.Helper()
	var zero T
	if got != zero && got != libraryDefault {
		t.Errorf("%s = %v through YAML, the library's default is %v", name, got, libraryDefault)
	}
}
