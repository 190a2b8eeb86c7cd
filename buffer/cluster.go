package buffer

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// errCodeDuplicateInProcess is JetStream's JSStreamDuplicateMessageConflict:
// "duplicate message id is in process".
const errCodeDuplicateInProcess = 10158

// Unavailable reports whether err, from a Queue method, means JetStream
// could not be reached or had no leader to answer (a node down, a leader
// election, a network cut, this process draining its connection as it
// stops) rather than that the request was wrong: the
// caller may try again shortly. A write that failed so may or may not have
// been stored.
func Unavailable(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrCommitUnknown), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDrainTimeout),
		errors.Is(err, nats.ErrStaleConnection),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, nats.ErrJetStreamNotEnabled):
		return true
	case errors.As(err, &apiErr):
		// 503: JetStream system temporarily unavailable, no quorum.
		// 10158: a publish with the same message ID is still being
		// replicated (an idempotent submit taken over during a leader
		// change); asked again shortly, JetStream answers with that one.
		return apiErr.Code == 503 || apiErr.ErrorCode == errCodeDuplicateInProcess
	}
	return false
}
