package pacing

import (
	"context"
	"sync"
	"time"

	"github.com/sluicehq/sluice/buffer/shared"
)

// Invocations tracks one function's invocations in this process: how many
// are in flight at the platform, which the platform took or refused
// recently and with how many in flight, and how long they take. It is the
// evidence a throttle is judged by, and the gate that keeps this process's
// invocations within the shared window even while jobs held back after a
// throttle come due. It is safe for concurrent use.
type Invocations struct {
	mu    sync.Mutex
	room  int           // the most that may be in flight in this process now
	inUse int           // in flight now, keep-warm pings included
	wake  chan struct{} // closed when room may have opened
	sent  []sentRecord  // recent sends, oldest first
	first uint64        // sequence number of sent[0]
	took  time.Duration // typical duration of an invocation the platform took
	// pings are the keep-warm pings in flight now; while there are any,
	// nothing starts at or above pingCap (when positive): a pooled
	// function's share of its pool.
	pings, pingCap int
	// known is the most in flight the platform has been seen to take, plus
	// one: sends at or above it explore, spaced by exploreEvery, so that
	// the first throttle comes back before many more go.
	known        int
	exploreEvery time.Duration
	exploreNext  time.Time
	// throttles are the latest throttles' evidence, oldest first.
	throttles []throttleSample
}

// throttleSample is what one throttle saw: in flight, and the start rate.
type throttleSample struct {
	at       time.Time
	inFlight int
	rate     float64
}

// What the spread of recent throttles must show to say "rate": enough of
// them, over long enough, refused at in-flight counts far apart while the
// start rate stayed put. A concurrency limit refuses at one count, however
// fast jobs start; a limit that fell moves both.
const (
	spreadSamples  = 6
	spreadKeep     = 10 * time.Second
	spreadMinSpan  = time.Second
	spreadInFlight = 1.3
	spreadRate     = 1.15
)

// sentRecord is one invocation as it was sent.
type sentRecord struct {
	at      time.Time
	end     time.Time // zero while in flight
	level   int       // in flight across processes when sent, not counting it
	refused bool
}

// Ticket identifies one send until it is done.
type Ticket struct {
	seq   uint64
	at    time.Time
	level int
}

// Bounds of the send history: what Evidence.TakenAbove and Evidence.StartRate look back on.
const (
	sentKeep    = 2 * time.Second
	sentMax     = 1 << 14
	rateHorizon = time.Second
	// tookWeight is the weight of each new duration in the running mean.
	tookWeight = 0.1
)

// exploreSpread is how long sends take to explore a function's whole
// concurrency, from nothing known to all of it: the first throttle of a
// platform whose limit is lower comes back within a few spaced sends.
const (
	exploreSpread   = 250 * time.Millisecond
	maxExploreEvery = time.Millisecond
)

// NewInvocations returns a tracker with room for room invocations in flight
// in this process, of a function whose concurrency is concurrency.
func NewInvocations(room, concurrency int) *Invocations {
	return &Invocations{
		room:         max(1, room),
		wake:         make(chan struct{}),
		exploreEvery: min(maxExploreEvery, exploreSpread/time.Duration(max(1, concurrency))),
	}
}

// SetRoom changes how many may be in flight in this process, waking
// senders waiting for room.
func (v *Invocations) SetRoom(n int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n = max(1, n)
	if n == v.room {
		return
	}
	grew := n > v.room
	v.room = n
	if grew {
		v.broadcast()
	}
}

func (v *Invocations) broadcast() {
	close(v.wake)
	v.wake = make(chan struct{})
}

// Acquire waits for room in this process and records the send: others is
// how many other processes have in flight, as they last reported. It
// returns ctx's error if ctx ends first.
func (v *Invocations) Acquire(ctx context.Context, others int, now func() time.Time) (Ticket, error) {
	for {
		v.mu.Lock()
		if v.inUse < v.roomNow() {
			t := Ticket{at: now(), level: v.inUse + others}
			if t.level >= v.known {
				// Spaced by the real clock: it is about the network.
				real := time.Now()
				if wait := v.exploreNext.Sub(real); wait > 0 {
					v.mu.Unlock()
					timer := time.NewTimer(wait)
					select {
					case <-timer.C:
					case <-ctx.Done():
						timer.Stop()
						return Ticket{}, ctx.Err()
					}
					continue
				}
				v.exploreNext = real.Add(v.exploreEvery)
			}
			v.inUse++
			v.trim(t.at)
			t.seq = v.first + uint64(len(v.sent))
			v.sent = append(v.sent, sentRecord{at: t.at, level: t.level})
			v.mu.Unlock()
			return t, nil
		}
		wake := v.wake
		v.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return Ticket{}, ctx.Err()
		}
	}
}

// roomNow is how many may be in flight now: the room, and while pings are
// out, their cap. Call it with mu held.
func (v *Invocations) roomNow() int {
	if v.pings > 0 && v.pingCap > 0 {
		return min(v.room, v.pingCap)
	}
	return v.room
}

// StartPings takes places for up to n keep-warm pings, without waiting:
// as many as there is room for now, and below limit if positive (a share
// of a pool, which the function's jobs are then kept below too until the
// pings end). It returns how many it took; PingsDone gives them back. One
// round at a time: call it again only after the pings it took are done.
func (v *Invocations) StartPings(n, limit int) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	room := v.room
	if limit > 0 {
		room = min(room, limit)
	}
	n = max(0, min(n, room-v.inUse))
	if n > 0 {
		v.inUse += n
		v.pings += n
		if limit > 0 {
			v.pingCap = room
		}
	}
	return n
}

// PingsDone gives back the places of n keep-warm pings that ended.
func (v *Invocations) PingsDone(n int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.inUse -= n
	v.pings -= n
	if v.pings == 0 {
		v.pingCap = 0
	}
	v.broadcast()
}

// trim drops sends older than sentKeep, and the oldest beyond sentMax.
func (v *Invocations) trim(now time.Time) {
	cut := 0
	for cut < len(v.sent) && (now.Sub(v.sent[cut].at) > sentKeep || len(v.sent)-cut >= sentMax) {
		cut++
	}
	if cut > 0 {
		v.sent = append(v.sent[:0], v.sent[cut:]...)
		v.first += uint64(cut)
	}
}

// Done ends a send: refused says the platform throttled it; took is how
// long a taken one ran.
func (v *Invocations) Done(t Ticket, refused bool, took time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.inUse--
	if t.seq >= v.first && t.seq-v.first < uint64(len(v.sent)) {
		rec := &v.sent[t.seq-v.first]
		rec.refused = refused
		rec.end = t.at.Add(took)
	}
	if !refused {
		v.known = max(v.known, t.level+1)
	}
	if !refused && took > 0 {
		if v.took == 0 {
			v.took = took
		} else {
			v.took += time.Duration(tookWeight * float64(took-v.took))
		}
	}
	v.broadcast()
}

// RefusedWith lowers what the platform is known to take after it refused
// a send with level in flight, and this process's room with it at once,
// before the shared window follows.
func (v *Invocations) RefusedWith(level int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.known = min(v.known, level)
	v.room = max(1, min(v.room, level))
}

// Evidence is what this process saw around the refused send t, with the
// other processes' in-flight count and start rate added.
func (v *Invocations) Evidence(t Ticket, otherStarts float64) Evidence {
	v.mu.Lock()
	defer v.mu.Unlock()
	horizon := max(v.took, minGrowEvery)
	ev := Evidence{InFlight: max(0, t.level-v.refusedInFlight(t.at, horizon)), Took: v.took}
	// Clearly more: a platform counts a slot busy a little after it
	// answered, and a request may pass another on the way.
	above := ev.InFlight + max(3, ev.InFlight/2)
	taken, earliest := 0, t.at
	for i := len(v.sent) - 1; i >= 0; i-- {
		s := v.sent[i]
		if t.at.Sub(s.at) > rateHorizon {
			break
		}
		earliest = s.at
		if s.refused {
			continue
		}
		taken++
		if s.at.Before(t.at) && t.at.Sub(s.at) <= horizon && s.level >= above &&
			s.level-v.refusedInFlight(s.at, horizon) >= above {
			ev.TakenAbove = true
		}
	}
	// Over the last second, or since sending began if that is later: a
	// burst's first throttle must not read as a slow rate.
	span := min(rateHorizon, max(t.at.Sub(earliest), minGrowEvery))
	ev.StartRate = float64(taken)/span.Seconds() + otherStarts
	v.judgeSpread(&ev, t.at)
	return ev
}

// judgeSpread adds the throttle to the recent ones and says whether their
// spread points to a rate limit; if so, ev.InFlightSeen is the most they
// were refused at.
func (v *Invocations) judgeSpread(ev *Evidence, at time.Time) {
	cut := 0
	for cut < len(v.throttles) && at.Sub(v.throttles[cut].at) > spreadKeep {
		cut++
	}
	v.throttles = append(v.throttles[cut:], throttleSample{at: at, inFlight: ev.InFlight, rate: ev.StartRate})
	if n := len(v.throttles); n > 2*spreadSamples {
		v.throttles = v.throttles[n-2*spreadSamples:]
	}
	if len(v.throttles) < spreadSamples || at.Sub(v.throttles[0].at) < spreadMinSpan {
		return
	}
	minC, maxC := v.throttles[0].inFlight, v.throttles[0].inFlight
	minR, maxR := v.throttles[0].rate, v.throttles[0].rate
	for _, s := range v.throttles[1:] {
		minC, maxC = min(minC, s.inFlight), max(maxC, s.inFlight)
		minR, maxR = min(minR, s.rate), max(maxR, s.rate)
	}
	if minC > 0 && minR > 0 && float64(maxC) >= spreadInFlight*float64(minC) && maxR <= spreadRate*minR {
		ev.SpreadSaysRate, ev.InFlightSeen = true, maxC
	}
}

// refusedInFlight counts this process's sends in flight at the instant
// at that the platform refused: they were counted in flight then, but
// never were at the platform. It looks back as far as horizon.
func (v *Invocations) refusedInFlight(at time.Time, horizon time.Duration) int {
	n := 0
	for i := len(v.sent) - 1; i >= 0; i-- {
		s := v.sent[i]
		if !s.at.Before(at) {
			continue
		}
		if at.Sub(s.at) > horizon {
			break
		}
		if s.refused && s.end.After(at) {
			n++
		}
	}
	return n
}

// Report is this process's share, for the others: in flight now, and
// starts per second the platform took over the last second.
func (v *Invocations) Report(now time.Time) (inFlight int, starts float64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	taken := 0
	for i := len(v.sent) - 1; i >= 0 && now.Sub(v.sent[i].at) <= rateHorizon; i-- {
		if !v.sent[i].refused {
			taken++
		}
	}
	return v.inUse, float64(taken) / rateHorizon.Seconds()
}

// Reports of other processes older than ReportFresh are not counted; older
// than ReportStale, they are removed.
const (
	ReportFresh = time.Second
	ReportStale = 10 * time.Second
)

// PutReport writes this process's report into the shared state, when it
// says something new: an idle process that said so already writes
// nothing. It removes other processes' stale reports on the way and
// reports whether it changed p.
func PutReport(p *shared.PacingState, self string, mine shared.ProcLoad, now time.Time) bool {
	idle := mine.Idle()
	var prev shared.ProcLoad
	var had bool
	if p.Procs != nil {
		prev, had = (*p.Procs)[self]
	}
	same := prev.Invoking == mine.Invoking && prev.Held == mine.Held && prev.Starts == mine.Starts
	if (idle && (!had || same)) || (had && same && now.Sub(prev.At) < ReportFresh/2) {
		return false
	}
	procs := shared.ProcLoads{}
	if p.Procs != nil {
		for id, r := range *p.Procs {
			if now.Sub(r.At) < ReportStale {
				procs[id] = r
			}
		}
	}
	if idle {
		delete(procs, self)
	} else {
		procs[self] = mine
	}
	p.Procs = &procs
	return true
}
