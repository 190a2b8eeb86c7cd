package bench

import (
	"math"
	"time"
)

// rampModel is a platform's scaling model: initial environments at once,
// perMinute more each minute after they are all busy, up to limit; a new
// environment pays coldStart before its first job; each job takes handler.
// Optionally the limit changes over time (schedule) and starts are capped
// per second (rate).
type rampModel struct {
	limit, initial, perMinute int
	handler, coldStart        time.Duration
	// schedule changes the limit over time: from each step's at, measured
	// from time zero, the limit is the step's limit (positive). Sorted by
	// at. A falling limit stops no job: no new one starts while as many run.
	schedule []limitStep
	// rate caps job starts per second with a token bucket of rateBurst
	// (at least 1) that starts full; 0: no cap.
	rate      float64
	rateBurst int
}

// limitStep is one change of the limit in a rampModel's schedule.
type limitStep struct {
	at    time.Duration
	limit int
}

// limitAt is the limit in force at t.
func (m rampModel) limitAt(t time.Duration) int {
	limit := m.limit
	for _, s := range m.schedule {
		if s.at > t {
			break
		}
		limit = s.limit
	}
	return limit
}

// idealDrain is the shortest time in which the platform can run n jobs
// that are all waiting at time zero: every environment the scaling model
// allows is started as soon as it is allowed, and a free environment takes
// the next job as soon as the limit and the rate allow. It simulates in 1ms
// steps.
func idealDrain(m rampModel, n int) time.Duration {
	if n <= 0 || m.limit <= 0 || m.handler <= 0 {
		return 0
	}
	for _, s := range m.schedule {
		if s.limit <= 0 {
			return 0
		}
	}
	const step = time.Millisecond
	// The rate cap as a token bucket counted in millionths of a token, so
	// that what a step accrues beyond a whole token carries to the next
	// and starts quantised to steps do not drift below the rate. A step's
	// tokens are added before its starts and the bucket capped after them,
	// as starts waiting for a token take it the moment it is whole.
	const token = 1_000_000
	capped := m.rate > 0
	var perStep, capacity, tokens int64
	if capped {
		perStep = max(1, int64(math.Round(m.rate*token*step.Seconds())))
		capacity = int64(max(m.rateBurst, 1)) * token
		tokens = capacity
	}
	take := func() bool {
		if !capped {
			return true
		}
		if tokens < token {
			return false
		}
		tokens -= token
		return true
	}
	var (
		freeAt  []time.Duration // per environment: when it can take its next job
		started int             // jobs started
		finish  time.Duration   // when the last started job finishes
	)
	for t := time.Duration(0); started < n; t += step {
		if t > 0 {
			tokens += perStep
		}
		limit := m.limitAt(t)
		allowed := limit
		if m.perMinute > 0 {
			grown := int(math.Floor(t.Minutes() * float64(m.perMinute)))
			allowed = min(limit, max(m.initial, 1)+grown)
		}
		busy := 0
		for _, f := range freeAt {
			if f > t {
				busy++
			}
		}
		// Free environments take jobs first (warm), each at the moment it
		// became free, or now if it has idled since an earlier step.
		for i := range freeAt {
			for freeAt[i] <= t && started < n && busy < limit {
				s := freeAt[i]
				if s <= t-step {
					s = t
				}
				if !take() {
					break
				}
				freeAt[i] = s + m.handler
				started++
				finish = max(finish, freeAt[i])
				if freeAt[i] > t {
					busy++
				}
			}
		}
		// Then new environments, each with a cold start before its job.
		for len(freeAt) < allowed && started < n && busy < limit && take() {
			freeAt = append(freeAt, t+m.coldStart+m.handler)
			started++
			busy++
			finish = max(finish, t+m.coldStart+m.handler)
		}
		tokens = min(capacity, tokens)
	}
	return finish
}
