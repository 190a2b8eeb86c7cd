package buffer

import (
	"github.com/sluicehq/sluice/buffer/deadletter"
	"github.com/sluicehq/sluice/buffer/store"
)

// Sizes. Every form a job is stored in must fit the NATS server's
// max_payload (and its stream's MaxMsgSize): its message (the payload and
// headers), its state entry (the job and the function's response), and its
// dead letter (the job, the payload, and up to 64 KiB of the response). A
// write that does not fit is refused by the client before it is sent;
// [Queue.MaxPayloadBytes] and [Queue.MaxResultBytes] say what fits, for
// the callers to hold payloads and responses to.

// MaxContentTypeBytes bounds a payload's content type, which its job keeps
// in its message, state and dead letter. Callers refuse longer ones; dispatch
// keeps no longer a response's.
const MaxContentTypeBytes = 256

// jobReserve is room, in a job's state entry and in its dead letter, for
// all of the job but the response body and the payload: IDs, times, content
// types (256 bytes each), the callback URL (2 KiB at most), the tenant, the
// error, and the latest 20 invocations with theirs (errors are a line
// each). A job at those bounds with errors of 1 KiB takes 24 KiB
// (TestLargestJobFits).
const jobReserve = 32 << 10

// PayloadOverhead is the room a job needs in the NATS server's
// max_payload besides its payload, in the largest form that holds the
// payload, its dead letter: the job and up to 64 KiB of the function's
// response. (A job message's headers take less: IDs, content type,
// callback URL, tenant, trace context.) 96 KiB.
const PayloadOverhead = deadletter.MaxResultBytes + jobReserve

// MaxPayloadBytes is the largest payload a job can carry on this queue: its
// message and its dead letter then fit their streams and the NATS server's
// max_payload. Larger payloads must be refused before they are submitted.
func (q *Queue) MaxPayloadBytes() int64 {
	limit := q.js.Conn().MaxPayload()
	return min(store.MaxMsgBytes(limit, q.stream), store.MaxMsgBytes(limit, q.dead)) - PayloadOverhead
}

// MaxResultBytes is the largest function response a job's state can hold
// as its result, within the state bucket's and the NATS server's message
// limit. A larger response must not be stored: its write would be refused,
// and the job's outcome lost.
func (q *Queue) MaxResultBytes() int64 {
	return store.MaxMsgBytes(q.js.Conn().MaxPayload(), q.stateLog) - jobReserve
}
