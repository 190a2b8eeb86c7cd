// Package target reaches the functions that dispatch invokes: the
// platforms a function's configuration names as its target
// (`target: {http | lambda | nats}`).
//
// Each invoker sends one [Invocation] (one attempt at one job, or a
// keep-warm ping) and maps the platform's answer onto a [Response]: a
// throttle as 429, a function error as a failing status with the
// platform's words in Response.Error, a cold start as Response.ColdStart.
// So the dispatcher judges every platform's answers alike, by HTTP status.
// Invoke returns an error only when there was no answer; a response over
// the invoker's limit is [ErrResponseTooLarge].
//
//   - [HTTP] POSTs to a URL (http.go), following redirects only within the
//     URL's origin;
//   - [Lambda] calls the AWS Lambda Invoke API synchronously (lambda.go);
//   - [NATS] sends a NATS request to a service, such as one built with
//     nats.go's micro package (nats.go).
//
// invocation.go holds what they share: [Invocation], [Response], the
// Sluice headers and the response limit. The interface they satisfy is
// declared where it is used, as dispatch.Invoker. Outside its tests this
// package imports none of Sluice's others.
package target
