package buffer

import "github.com/sluicehq/sluice/buffer/jsapi"

// Unavailable reports whether err, from a Queue method, means JetStream
// could not be reached or had no leader to answer, rather than that the
// request was wrong: the caller may try again shortly. A write that failed
// so may or may not have been stored. See [jsapi.Unavailable].
func Unavailable(err error) bool { return jsapi.Unavailable(err) }
