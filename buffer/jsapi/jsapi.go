// Package jsapi says what JetStream's answers mean to Sluice: no one to
// answer ([Unavailable]), a lost compare-and-set ([Conflict]), a key-value
// entry deleted ([Deleted]); where a key-value entry lives on its bucket's
// stream ([KVSubject]); and which subjects a filter matches.
package jsapi

import (
	"context"
	"errors"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/groupcommit"
)

// errCodeDuplicateInProcess is JetStream's JSStreamDuplicateMessageConflict:
// "duplicate message id is in process".
const errCodeDuplicateInProcess = 10158

// Unavailable reports whether err, from a buffer.Queue method, means JetStream
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
	case errors.Is(err, groupcommit.ErrCommitUnknown), errors.Is(err, context.DeadlineExceeded),
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

// Conflict reports whether a KV write lost a compare-and-set race.
func Conflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	// 10071 is JSStreamWrongLastSequenceErrF: the revision moved on.
	// 10164, JSStreamWrongLastSequenceConstantErr, is what the server
	// answers instead around a leader change (seen in the fault runs).
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == 10071 || apiErr.ErrorCode == 10164)
}

// KVOperation is the header of a key-value bucket's delete and purge
// markers: DEL or PURGE.
const KVOperation = "KV-Operation"

// KVSubject is the subject of key's entry in bucket, on the bucket's
// stream: what a write of it is published to, and a read of it asks for.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// Deleted reports whether a bucket message's headers mark its key
// deleted or purged (by an operation, or by JetStream's TTL markers), as
// KeyValue.Get reads them.
func Deleted(h nats.Header) bool {
	if len(h) == 0 {
		return false
	}
	if op := h.Get(KVOperation); op != "" {
		return op == "DEL" || op == "PURGE"
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge", "Purge", "Remove":
		return true
	}
	return false
}

// SubjectMatches reports whether a NATS subject matches filter, with its
// wildcards: * for one token, > for one or more at the end.
func SubjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}
