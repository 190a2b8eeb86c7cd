package pacing

import (
	"sync"
	"time"
)

// ColdStarts classifies invocations as cold or warm: by the platform's
// word where it gives one, otherwise by latency against the function's warm
// baseline (a moving average of the invocations judged warm). It is safe
// for concurrent use.
type ColdStarts struct {
	mu       sync.Mutex
	baseline time.Duration // moving average of warm durations
	samples  int
	cold     int64 // not yet flushed to the shared counts
	warm     int64
}

// coldMargin is how much slower than the warm baseline an invocation must
// be to count as cold, besides twice the baseline: cold starts cost from
// about 100ms to seconds.
const coldMargin = 100 * time.Millisecond

// Observe classifies one invocation and counts it.
func (c *ColdStarts) Observe(took time.Duration, platform *bool) (cold bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case platform != nil:
		cold = *platform
	case c.samples >= 5:
		cold = took > 2*c.baseline+coldMargin
	}
	if cold {
		c.cold++
		return true
	}
	c.warm++
	// Exponential moving average, faster while it is young.
	c.samples++
	weight := max(1.0/float64(c.samples), 0.1)
	c.baseline += time.Duration(weight * float64(took-c.baseline))
	return false
}

// Take returns and clears the counts not yet shared.
func (c *ColdStarts) Take() (cold, warm int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cold, warm = c.cold, c.warm
	c.cold, c.warm = 0, 0
	return cold, warm
}

// GiveBack returns counts that could not be shared, to try again.
func (c *ColdStarts) GiveBack(cold, warm int64) {
	c.mu.Lock()
	c.cold += cold
	c.warm += warm
	c.mu.Unlock()
}
