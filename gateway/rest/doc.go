// Package rest serves Sluice's REST API: grpc-gateway's HTTP and JSON
// form of the gRPC services in package gateway, plus its OpenAPI 3
// document (GET /openapi.json; the generated Swagger 2.0 one at GET
// /openapi-v2.json) and the [Dashboard].
//
// The handler ([NewHandler]) is registered against a gRPC client
// connection rather than directly against the services, so that
// everything the gRPC server enforces (API keys and tenants, limits)
// applies to REST callers too. [InProcessConn] is that connection without
// a transport: a unary call runs the services' interceptor and method in
// this process; streams (:watch) go over a real connection.
//
// Payloads travel raw: a submit's request body is the payload, and a
// result is the function's own response body, each with its own
// Content-Type. Errors come from the services as gRPC statuses, which
// this package turns into HTTP statuses once: grpc-gateway's mapping,
// except 413 for a payload over its function's limit, 409 for the result
// of a job that ended without one or the cancel of a finished one, and
// 405 for a method a path does not take; with Retry-After from a
// google.rpc.RetryInfo detail, and a Bearer challenge with 401.
//
// The handler also serves the [Dashboard] at /: a page embedded in the
// binary that shows what the REST API says, live, to whoever may read it.
package rest
