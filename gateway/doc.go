// Package gateway is Sluice's ingress: the gRPC services that accept and
// report on jobs (JobService, FunctionService, DeadLetterService), and what
// decides whether a call is let in: tenants and their API keys, submit rate
// limits, max_queued and max age, and the limits on open streams.
//
// The REST API, and the dashboard page served with it, are in package rest
// (gateway/rest): grpc-gateway in front of these services, calling them
// through the same interceptor as gRPC callers, so that everything enforced
// here applies to REST callers too.
//
// Errors are translated once, here: buffer's sentinels become gRPC codes,
// with google.rpc.ErrorInfo and RetryInfo details where a code alone does
// not say enough; package rest turns those into HTTP statuses (413, 409,
// Retry-After).
package gateway
