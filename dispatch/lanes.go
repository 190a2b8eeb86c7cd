package dispatch

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"sync/atomic"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
)

// DefaultPriorityAging is how long a fair function's job waits before it
// counts one priority higher, when Function.PriorityAging is zero.
const DefaultPriorityAging = time.Minute

// laneUnit is one consumer of a function's jobs: the function's only one,
// or one lane's of a fair function.
type laneUnit struct {
	name   string
	cons   *buffer.Consumer
	lane   *buffer.Lane // nil: all the function's jobs, in the order they came
	weight int          // its tenant's
	// waitingSince is when its oldest waiting job was stored (Unix ns; 0
	// for none or unknown), for aging. Owned by the pool's leader.
	waitingSince atomic.Int64
}

// priorityClass orders priorities: 0 is dispatched first.
func priorityClass(p sluicev1.Priority) int {
	switch p {
	case sluicev1.Priority_HIGH:
		return 0
	case sluicev1.Priority_LOW:
		return 2
	}
	return 1
}

// effectiveClass is u's priority class after aging: one higher per aging
// period its oldest job has waited, without bound, so that a job waiting
// long enough goes before any fresher one.
func (u *laneUnit) effectiveClass(aging time.Duration, now time.Time) int {
	c := priorityClass(u.lane.Priority)
	if since := u.waitingSince.Load(); since != 0 && aging > 0 {
		c -= int(now.Sub(time.Unix(0, since)) / aging)
	}
	return c
}

// splitLanes divides the function's share g between its consumers: all of
// it to the only one of a function that is not fair. For a fair one, the
// tenants with work share it in proportion to their weights (none gets more
// than it can use; what it leaves goes to the others), and each tenant's
// part goes to its lanes by priority after aging, higher first. With no
// work at all, the default lane keeps one slot, so that a first job starts
// without waiting for the leader.
func (l *functionLoop) splitLanes(g int, loads []buffer.Load, now time.Time) []int {
	out := make([]int, len(l.lanes))
	if l.lanes[0].lane == nil {
		out[0] = g
		return out
	}
	type tenant struct {
		weight, want, given int
		lanes               []int
	}
	var tenants []*tenant
	byName := map[string]*tenant{}
	for i, u := range l.lanes {
		t := byName[u.lane.Tenant]
		if t == nil {
			t = &tenant{weight: max(1, u.weight)}
			byName[u.lane.Tenant] = t
			tenants = append(tenants, t)
		}
		t.want += loads[i].InFlight + loads[i].Backlog
		t.lanes = append(t.lanes, i)
	}
	left := g
	for left > 0 {
		var best *tenant
		for _, t := range tenants {
			// Lowest share per weight next: given/weight < best's.
			if t.given < t.want && (best == nil || t.given*best.weight < best.given*t.weight) {
				best = t
			}
		}
		if best == nil {
			break
		}
		best.given++
		left--
	}
	aging := l.fn.PriorityAging
	if aging == 0 {
		aging = DefaultPriorityAging
	}
	gave := 0
	for _, t := range tenants {
		// Higher priority after aging first; between equals, the higher
		// before aging, then the lane whose oldest job waited longest.
		class := make(map[int]int, len(t.lanes))
		for _, i := range t.lanes {
			class[i] = l.lanes[i].effectiveClass(aging, now)
		}
		since := func(i int) int64 {
			if s := l.lanes[i].waitingSince.Load(); s != 0 {
				return s
			}
			return math.MaxInt64
		}
		slices.SortStableFunc(t.lanes, func(a, b int) int {
			if c := cmp.Compare(class[a], class[b]); c != 0 {
				return c
			}
			if c := cmp.Compare(priorityClass(l.lanes[a].lane.Priority), priorityClass(l.lanes[b].lane.Priority)); c != 0 {
				return c
			}
			return cmp.Compare(since(a), since(b))
		})
		rest := t.given
		for _, i := range t.lanes {
			n := min(rest, loads[i].InFlight+loads[i].Backlog)
			out[i] += n
			rest -= n
		}
		gave += t.given - rest
	}
	if gave == 0 && g > 0 {
		out[0] = 1 // l.lanes[0] is the default lane
	}
	return out
}

// load is the function's load: of all its lanes.
func (l *functionLoop) load(ctx context.Context) (buffer.Load, error) {
	var sum buffer.Load
	for _, u := range l.lanes {
		load, err := u.cons.Load(ctx)
		if err != nil {
			return buffer.Load{}, err
		}
		sum.Backlog += load.Backlog
		sum.InFlight += load.InFlight
		sum.MaxInFlight += capOf(load)
	}
	return sum, nil
}

// removeFinished removes the messages of finished jobs, lane by lane: in
// batches (see [buffer.Consumer.RemoveFinished]), or all of them now.
func (l *functionLoop) removeFinished(ctx context.Context, now bool) error {
	var errs []error
	for _, u := range l.lanes {
		errs = append(errs, u.cons.RemoveFinished(ctx, now))
	}
	return errors.Join(errs...)
}

// oldest is when the oldest unfinished job of the function was stored.
func (l *functionLoop) oldest(ctx context.Context) (time.Time, error) {
	var first time.Time
	for _, u := range l.lanes {
		t, err := u.cons.Oldest(ctx)
		if errors.Is(err, buffer.ErrNotFound) {
			continue
		}
		if err != nil {
			return time.Time{}, err
		}
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	if first.IsZero() {
		return first, buffer.ErrNotFound
	}
	return first, nil
}
