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
//
// The invokers that reach functions live in package [target], one per
// platform a function's configuration names as its target: [target.HTTP]
// POSTs to a URL, [target.Lambda] calls the AWS Lambda Invoke API and
// [target.NATS] sends a NATS request to a service. Each maps its
// platform's answers onto a [target.Response] (a throttle as 429, a
// function error as a failing status with the platform's words in
// Response.Error, a cold start as Response.ColdStart), so the loop judges
// them all alike. This package reads those answers: whether an attempt
// succeeded, failed or was throttled, and whether to retry it (retry.go).
// [Invoker], the interface the loop calls, is declared here, in invoker.go.
//
// How far the window of invocations in flight may open is decided in
// package [pacing]: its [pacing.Policy] is a function's Pacing, its pure
// functions move the shared [shared.PacingState] for the load seen and for
// each throttle, and its [pacing.Invocations] tracks this process's
// invocations, gating them to the window and gathering the evidence a
// throttle is judged by. The loops here read and write that state through
// the buffer, and turn the window into a consumer cap and a start rate.
//
// The circuit breaker is package [circuit]: a function's [circuit.Policy]
// (its Circuit), the recent outcomes that open it, and the changes of the
// shared state that open it, let one probe through and close or reopen it.
// circuit.go here holds jobs while it is open and judges each attempt.
//
// The code follows that order: dispatcher.go holds the configuration,
// [New] and [Dispatcher.Run], which sets up the loops; functionloop.go the
// loop that pulls and paces one function's jobs; share.go this process's
// report of its share of the window, and how it keeps to the window the
// processes share; attempt.go what happens to one delivered job; circuit.go
// applies the circuit breaker; pool.go and lanes.go the loops that share a window
// between functions and between tenants; keepwarm.go the keep-warm pings.
package dispatch
