// Package store keeps the limits and usage of Sluice's streams and
// buckets (the stores): what each may hold ([Limits]), how full each is
// ([Gauge]), who holds what of the shared ones ([Shares]), and a full
// store's refusal of a write ([ErrFull], [FullError]).
package store

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Limits sizes the streams and buckets besides the job stream. Every
// one has a limit: JetStream reserves each against the server's storage
// when it is made (a configuration that does not fit is refused at start),
// so no store can grow into another's room or fill the server's disk.
type Limits struct {
	// StateBytes bounds the job-state bucket: every started job's state,
	// its result included, until its retention passes. Default 1 GiB.
	StateBytes int64
	// IdempotencyBytes bounds the idempotency-key bucket. Default 64 MiB.
	IdempotencyBytes int64
	// DeadLetterBytes bounds the dead letters. Default: the job stream's
	// MaxBytes.
	DeadLetterBytes int64
	// CallbackBytes bounds the callbacks waiting for delivery. Default: the
	// job stream's MaxBytes.
	CallbackBytes int64
	// HighWater is the fraction of the state or idempotency bucket past
	// which submits are refused (ErrHighWater, 503 with Retry-After), so
	// that the jobs already accepted still find room for their state and
	// results. Default 0.9.
	HighWater float64
}

// Defaults of Limits.
const (
	DefaultStateBytes       = 1 << 30
	DefaultIdempotencyBytes = 64 << 20
	DefaultHighWater        = 0.9
	// PacingBytes bounds the pacing bucket: one small entry per function
	// and lane.
	PacingBytes = 8 << 20
)

// SetDefaults gives every unset limit its default; jobBytes is the job
// stream's MaxBytes.
func (l *Limits) SetDefaults(jobBytes int64) {
	if l.StateBytes == 0 {
		l.StateBytes = DefaultStateBytes
	}
	if l.IdempotencyBytes == 0 {
		l.IdempotencyBytes = DefaultIdempotencyBytes
	}
	if l.DeadLetterBytes == 0 {
		l.DeadLetterBytes = jobBytes
	}
	if l.CallbackBytes == 0 {
		l.CallbackBytes = jobBytes
	}
	if l.HighWater == 0 {
		l.HighWater = DefaultHighWater
	}
}

// Check says what is wrong with the limits, if anything.
func (l Limits) Check() error {
	for _, v := range []struct {
		name string
		n    int64
	}{{"state", l.StateBytes}, {"idempotency", l.IdempotencyBytes}, {"dead letters", l.DeadLetterBytes}, {"callbacks", l.CallbackBytes}} {
		if v.n < 0 {
			return fmt.Errorf("buffer: %s store limit %d: must not be negative", v.name, v.n)
		}
	}
	if l.HighWater < 0 || l.HighWater > 1 {
		return fmt.Errorf("buffer: high water %v: must be between 0 and 1", l.HighWater)
	}
	return nil
}

// Names of the stores, as Usage, metrics and /readyz give them.
const (
	Jobs        = "jobs"
	State       = "state"
	Idempotency = "idempotency"
	DeadLetters = "dead_letters"
	Callbacks   = "callbacks"
)

// Usage is how full one store is.
type Usage struct {
	Name     string
	Bytes    uint64
	MaxBytes int64 // -1: unbounded
	Msgs     uint64
	MaxMsgs  int64 // -1: unbounded
}

// Fill is the larger of the store's byte and message fill, from 0 to 1.
func (u Usage) Fill() float64 {
	var f float64
	if u.MaxBytes > 0 {
		f = float64(u.Bytes) / float64(u.MaxBytes)
	}
	if u.MaxMsgs > 0 {
		f = max(f, float64(u.Msgs)/float64(u.MaxMsgs))
	}
	return min(f, 1)
}

// ExplainReservation adds to JetStream's refusal to reserve a store's room
// what Sluice asked for in all, and which settings set it: l, with
// jobBytes for the job stream, on that many replicas.
func (l Limits) ExplainReservation(err error, jobBytes int64, replicas int) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeInsufficientResources {
		return err
	}
	total := jobBytes + l.StateBytes + l.IdempotencyBytes + l.DeadLetterBytes + l.CallbackBytes + PacingBytes
	return fmt.Errorf("%w (Sluice's stores reserve %d bytes × %d replicas in all: jobs %d, state %d, "+
		"idempotency %d, dead letters %d, callbacks %d, pacing %d; lower the buffer's limits or give "+
		"JetStream more storage)", err, total, replicas, jobBytes, l.StateBytes,
		l.IdempotencyBytes, l.DeadLetterBytes, l.CallbackBytes, PacingBytes)
}

// errCodeInsufficientResources is nats-server's JSInsufficientResourcesErr:
// a stream's limits cannot be reserved on the server's storage.
const errCodeInsufficientResources jetstream.ErrorCode = 10047

// MaxMsgBytes is the largest message that can be stored in s: its
// MaxMsgSize, if it has one, within maxPayload, the server's max_payload.
func MaxMsgBytes(maxPayload int64, s jetstream.Stream) int64 {
	limit := maxPayload
	if m := s.CachedInfo().Config.MaxMsgSize; m > 0 {
		limit = min(limit, int64(m))
	}
	return limit
}
