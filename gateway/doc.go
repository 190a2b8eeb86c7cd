// Package gateway is Sluice's ingress: the gRPC services that accept and
// report on jobs, and the REST API that grpc-gateway derives from them.
//
// The REST handler is registered against a gRPC client connection rather
// than in-process, so that everything the gRPC server enforces (limits now,
// interceptors later) applies to REST callers too. Errors are translated
// once, here: buffer's sentinels become gRPC codes, which grpc-gateway turns
// into HTTP statuses, with google.rpc.ErrorInfo and RetryInfo details where
// a code alone does not say enough (413, Retry-After).
//
// The REST handler also serves the [Dashboard] at /: a page embedded in the
// binary that shows what the REST API says, live, to whoever may read it.
package gateway
