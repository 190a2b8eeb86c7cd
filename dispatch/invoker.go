package dispatch

import (
	"context"

	"github.com/sluicehq/sluice/dispatch/target"
)

// Invoker calls a function. Invoke returns a Response for any answer the
// function gave, whatever its status, and an error only when there was no
// answer (the function could not be reached, or ctx ended first). The
// invokers of package target implement it, one per platform.
type Invoker interface {
	Invoke(ctx context.Context, inv *target.Invocation) (*target.Response, error)
}

var (
	_ Invoker = (*target.HTTP)(nil)
	_ Invoker = (*target.Lambda)(nil)
	_ Invoker = (*target.NATS)(nil)
)
