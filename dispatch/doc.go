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
// succeeded, failed or was throttled, whether to retry it (retry.go), and
// how the pacing window moves (pacing.go). [Invoker], the interface the
// loop calls, is declared here, in invoker.go.
//
// The code follows that order: dispatcher.go holds the configuration,
// [New] and [Dispatcher.Run], which sets up the loops; functionloop.go the
// loop that pulls and paces one function's jobs; attempt.go what happens
// to one delivered job; pool.go and lanes.go the loops that share a window
// between functions and between tenants; keepwarm.go the keep-warm pings.
package dispatch
