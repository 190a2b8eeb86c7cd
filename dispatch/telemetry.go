package dispatch

import (
	"context"
	"slices"

	"go.opentelemetry.io/otel/attribute"

	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/dispatch/metrics"
)

// Attribute keys on dispatch's spans, besides metrics' own.
const (
	attrFunction = metrics.AttrFunction
	attrOutcome  = metrics.AttrOutcome
	attrJobID    = attribute.Key("sluice.job.id")
	attrAttempt  = attribute.Key("sluice.attempt")
	attrCold     = attribute.Key("sluice.cold_start")
	attrStatus   = attribute.Key("http.response.status_code")
)

// Outcomes of an invocation, as metrics and spans name them.
const (
	outcomeSucceeded = metrics.Succeeded
	outcomeFailed    = metrics.Failed
	outcomeThrottled = metrics.Throttled
)

// Each outcome below is counted twice over, on purpose: in the totals every
// process shares (the API's function status) and in this process's
// metrics.

// countDeadLettered counts a job sent to the dead letters, for reason
// metrics.ReasonFailed or metrics.ReasonExpired.
func (l *functionLoop) countDeadLettered(reason string) {
	l.counts.add(func(c *shared.Counts) { c.DeadLettered++ })
	l.tel.DeadLettered.Add(context.Background(), 1, l.attrs.Reason[reason])
}

// countRetry counts a failed attempt that will be retried.
func (l *functionLoop) countRetry() {
	l.counts.add(func(c *shared.Counts) { c.Retries++ })
	l.tel.Retries.Add(context.Background(), 1, l.attrs.Fn)
}

// countThrottle counts a throttle received from the platform.
func (l *functionLoop) countThrottle() {
	l.counts.add(func(c *shared.Counts) { c.Throttles++ })
	l.tel.Throttles.Add(context.Background(), 1, l.attrs.Fn)
}

// gaugeSources are the loops and the configured pools (not a fair
// function's own) as metrics.RegisterGauges reports them.
func gaugeSources(loops []*functionLoop, pools []*poolLoop) ([]metrics.FunctionGauges, []metrics.PoolGauges) {
	fns := make([]metrics.FunctionGauges, len(loops))
	for i, l := range loops {
		fns[i] = metrics.FunctionGauges{Attrs: l.attrs.Fn, Limit: l.fn.Concurrency, Fair: l.fair(), Gauges: &l.gauges}
	}
	var ps []metrics.PoolGauges
	for _, pl := range slices.DeleteFunc(slices.Clone(pools), func(pl *poolLoop) bool { return pl.implicit }) {
		p := metrics.PoolGauges{Name: pl.pool.Name, Attrs: pl.attrs, Seen: pl.seen.Load}
		for _, m := range pl.members {
			p.Members = append(p.Members, m.fn.Name)
		}
		ps = append(ps, p)
	}
	return fns, ps
}
