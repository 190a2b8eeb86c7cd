// Package pacing decides how many invocations of a function may be in
// flight at once: the window, which dispatch keeps every function under.
//
// A [Policy] is what the function's configuration says of its platform:
// how many environments it has ready, how fast it adds more, whether to
// learn its limits from its throttles, and what a Retry-After pauses. The
// window itself lives in the shared [shared.PacingState], so that every
// gateway process dispatching the function keeps to one window; the
// functions here move it and are pure, so that every process computes the
// same ramp from the same inputs. [Step] moves it for the load seen now
// (ramping at the platform's scaling rate, probing above a limit once no
// throttle has come for a while, falling back when the platform reaps
// idle environments); [Throttle] moves it for one throttle, from the
// [Evidence] gathered around it: a ceiling at what was in flight, or a
// learned rate when the platform took more a moment before. [ThrottleOf]
// and [ParseRetryAfter] read a throttle from a [target.Response].
//
// [Invocations] is the part that is not pure: one process's record of its
// own invocations of a function. It gates them to the process's room in
// the window, spaces sends that explore above what the platform is known
// to take, and from what it recorded tells what was in flight and what
// was taken around a refused send. [PutReport] writes the process's share
// into the shared state for the others, and [ReportFresh] says how long
// a report counts.
//
// Package dispatch runs the loops that call these, reading and writing the
// state through the buffer; this package does not import it.
package pacing
