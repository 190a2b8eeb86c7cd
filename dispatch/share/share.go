// Package share divides concurrency: a pool's limit between its functions,
// and a fair function's share between its lanes, by tenant weight and
// priority. It is arithmetic only: the pool loops in dispatch read the
// loads and apply what it gives.
package share

import (
	"cmp"
	"math"
	"slices"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
)

// Claim is one member's claim on a pool: its reserved share and how many
// slots it could use now.
type Claim struct {
	Reserved, Want int
}

// Pool divides limit between the claims: each gets one slot (so a first
// job can start without waiting for the leader), then its reserved share
// as far as it wants it (reserved shares scaled down if the limit shrank
// below their sum), then what is left goes round the ones that want more,
// one slot at a time, until it is gone or all are served.
func Pool(limit int, claims []Claim) []int {
	g := make([]int, len(claims))
	totalReserved := 0
	for _, c := range claims {
		totalReserved += c.Reserved
	}
	left := limit
	for i, c := range claims {
		r := c.Reserved
		if totalReserved > limit {
			r = c.Reserved * limit / totalReserved
		}
		g[i] = max(1, min(r, c.Want))
		left -= g[i]
	}
	for left > 0 {
		gave := false
		for i, c := range claims {
			if left > 0 && g[i] < c.Want {
				g[i]++
				left--
				gave = true
			}
		}
		if !gave {
			break
		}
	}
	return g
}

// Lane is one lane of a fair function as Lanes divides its share.
type Lane struct {
	// Tenant is the lane's tenant; Weight its weight (at least 1 counts).
	Tenant string
	Weight int
	// Priority is the lane's.
	Priority sluicev1.Priority
	// WaitingSince is when its oldest waiting job was stored (Unix ns; 0
	// for none or unknown), for aging.
	WaitingSince int64
	// Want is what it could use now: its jobs in flight and waiting.
	Want int
}

// Lanes divides a fair function's share g between its lanes, the first of
// which is its default lane: the tenants with work share it in proportion
// to their weights (none gets more than it can use; what it leaves goes to
// the others), and each tenant's part goes to its lanes by priority after
// aging (see Class), higher first. With no work at all, the default lane
// keeps one slot, so that a first job starts without waiting for the
// leader.
func Lanes(g int, lanes []Lane, aging time.Duration, now time.Time) []int {
	out := make([]int, len(lanes))
	type tenant struct {
		weight, want, given int
		lanes               []int
	}
	var tenants []*tenant
	byName := map[string]*tenant{}
	for i, l := range lanes {
		t := byName[l.Tenant]
		if t == nil {
			t = &tenant{weight: max(1, l.Weight)}
			byName[l.Tenant] = t
			tenants = append(tenants, t)
		}
		t.want += l.Want
		t.lanes = append(t.lanes, i)
	}
	for left := g; left > 0; left-- {
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
	}
	gave := 0
	for _, t := range tenants {
		orderByPriority(t.lanes, lanes, aging, now)
		rest := t.given
		for _, i := range t.lanes {
			n := min(rest, lanes[i].Want)
			out[i] += n
			rest -= n
		}
		gave += t.given - rest
	}
	if gave == 0 && g > 0 && len(out) > 0 {
		out[0] = 1 // the default lane
	}
	return out
}

// orderByPriority sorts idx, indexes of one tenant's lanes, the higher
// priority after aging first; between equals, the higher before aging,
// then the lane whose oldest job waited longest.
func orderByPriority(idx []int, lanes []Lane, aging time.Duration, now time.Time) {
	class := make(map[int]int, len(idx))
	for _, i := range idx {
		class[i] = Class(lanes[i].Priority, lanes[i].WaitingSince, aging, now)
	}
	since := func(i int) int64 {
		if s := lanes[i].WaitingSince; s != 0 {
			return s
		}
		return math.MaxInt64
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		if c := cmp.Compare(class[a], class[b]); c != 0 {
			return c
		}
		if c := cmp.Compare(PriorityClass(lanes[a].Priority), PriorityClass(lanes[b].Priority)); c != 0 {
			return c
		}
		return cmp.Compare(since(a), since(b))
	})
}

// PriorityClass orders priorities: 0 is dispatched first.
func PriorityClass(p sluicev1.Priority) int {
	switch p {
	case sluicev1.Priority_HIGH:
		return 0
	case sluicev1.Priority_LOW:
		return 2
	}
	return 1
}

// Class is a lane's priority class after aging: one higher per aging
// period its oldest job, stored at waitingSince (Unix ns; 0 for none), has
// waited, without bound, so that a job waiting long enough goes before any
// fresher one.
func Class(p sluicev1.Priority, waitingSince int64, aging time.Duration, now time.Time) int {
	c := PriorityClass(p)
	if waitingSince != 0 && aging > 0 {
		c -= int(now.Sub(time.Unix(0, waitingSince)) / aging)
	}
	return c
}
