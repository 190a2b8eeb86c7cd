// Package dispatch invokes functions with the jobs buffered for them.
//
// A [Dispatcher] runs one loop per configured function. Each loop pulls
// jobs from the function's durable consumer no faster than it has free
// invocation slots, invokes the function through an [Invoker], and records
// the outcome in the job's state before acknowledging the job's message, so
// a crash at any point leaves the job to be delivered again rather than
// lost. The function's concurrency limit is enforced twice: locally by a
// slot semaphore, and globally by the consumer's MaxAckPending, which the
// JetStream server applies across every gateway process.
package dispatch
