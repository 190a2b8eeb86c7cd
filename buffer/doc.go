// Package buffer owns everything that touches NATS JetStream: the embedded
// server, the job stream, the consumers that dispatch pulls from, and the
// key-value bucket that holds each job's state.
//
// A job is two things in JetStream. Its payload is one message on the job
// stream, subject "sluice.jobs.<function>.<id>" (or, for a job with a tenant
// or a priority other than normal, "sluice.jobs.<function>.<tenant>~<priority>.<id>":
// see [Lane]), which stays until the job is finished and the dispatcher
// acknowledges it. Once
// dispatch starts it, its state is one entry in the "sluice-jobs" key-value
// bucket, keyed by job ID, holding a [sluicev1.Job] in protobuf form; every
// change to it is a compare-and-set, so concurrent writers cannot move a job
// backwards. Until then the message alone says the job is QUEUED: a submit
// is one fsync'd write.
package buffer
