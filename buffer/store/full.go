package store

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrFull: the job stream is at its configured limit and refuses new
// jobs rather than evict accepted ones; or another store is at its limit
// and refuses a write.
var ErrFull = errors.New("buffer: queue full")

// ErrCodeFull is nats-server's JSStreamStoreFailedF: with DiscardNew,
// "maximum messages exceeded" and "maximum bytes exceeded" come back as it.
const ErrCodeFull jetstream.ErrorCode = 10077

// PublishError turns a stream's refusal of a publish for being at its
// limits into [ErrFull].
func PublishError(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == ErrCodeFull {
		return fmt.Errorf("%w: %s", ErrFull, apiErr.Description)
	}
	return fmt.Errorf("buffer: publish job: %w", err)
}

// TenantHeader names, on a job's message, dead letter and callback, the
// tenant the job is of: [Shares] counts what each tenant holds by it.
const TenantHeader = "Sluice-Tenant"

// FullError is a finished job's dead letter or callback refused by a
// full store.
type FullError struct {
	Store string // DeadLetters or Callbacks
	err   error
}

func (e *FullError) Error() string { return e.err.Error() }
func (e *FullError) Unwrap() error { return e.err }

// PendingText is what a job parked for it says, in its state, that it
// waits for.
func (e *FullError) PendingText() string {
	if e.Store == DeadLetters {
		return "dead letter: the dead-letter store is full; it is stored once there is room"
	}
	return "callback: the callback store is full; it is delivered once there is room"
}

// MarkFull marks err, a publish to the store named name, as a full
// store's refusal: a [*FullError] if it is an [ErrFull].
func MarkFull(name string, err error) error {
	if errors.Is(err, ErrFull) {
		return &FullError{Store: name, err: err}
	}
	return err
}
