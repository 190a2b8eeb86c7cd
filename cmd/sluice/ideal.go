package main

import (
	"math"
	"time"
)

// rampModel is a platform's scaling model: initial environments at once,
// perMinute more each minute after they are all busy, up to limit; a new
// environment pays coldStart before its first job; each job takes handler.
type rampModel struct {
	limit, initial, perMinute int
	handler, coldStart        time.Duration
}

// idealDrain is the shortest time in which the platform can run n jobs
// that are all waiting at time zero: every environment the scaling model
// allows is started as soon as it is allowed and never idles. It simulates
// in 1ms steps.
func idealDrain(m rampModel, n int) time.Duration {
	if n <= 0 || m.limit <= 0 || m.handler <= 0 {
		return 0
	}
	const step = time.Millisecond
	var (
		freeAt  []time.Duration // per environment: when it can take its next job
		started int             // jobs started
		finish  time.Duration   // when the last started job finishes
	)
	for t := time.Duration(0); started < n; t += step {
		allowed := m.limit
		if m.perMinute > 0 {
			grown := int(math.Floor(t.Minutes() * float64(m.perMinute)))
			allowed = min(m.limit, max(m.initial, 1)+grown)
		}
		for len(freeAt) < allowed {
			freeAt = append(freeAt, t+m.coldStart)
		}
		for i := range freeAt {
			for freeAt[i] <= t && started < n {
				freeAt[i] += m.handler
				started++
				finish = max(finish, freeAt[i])
			}
		}
	}
	return finish
}
