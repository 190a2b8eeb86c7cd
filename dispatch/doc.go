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
// Three invokers reach functions: [HTTPInvoker] POSTs to a URL,
// [LambdaInvoker] calls the AWS Lambda Invoke API and [NATSInvoker] sends a
// NATS request to a service. Each maps its platform's answers onto a
// [Response] (a throttle as 429, a function error as a failing status with
// the platform's words in Response.Error, a cold start as
// Response.ColdStart), so the loop judges them all alike.
//
// The code follows that order: dispatcher.go holds the configuration,
// [New] and [Dispatcher.Run], which sets up the loops; functionloop.go the
// loop that pulls and paces one function's jobs; attempt.go what happens
// to one delivered job; pool.go and lanes.go the loops that share a window
// between functions and between tenants; keepwarm.go the keep-warm pings.
package dispatch
