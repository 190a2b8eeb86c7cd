package dispatch

import (
	"context"
	"sync"
)

// pullGate stops a function's pulls while its pace loop rests, and lets
// them run again when it wakes. A resting function makes no pull request
// and gets no heartbeat: what wakes it is the arrival of a job (see
// buffer/arrivals), which every process sees.
type pullGate struct {
	parent context.Context // the pullers', which outlives every rest

	mu     sync.Mutex
	ctx    context.Context // pulls run under it while open; nil while shut
	cancel context.CancelFunc
	opened chan struct{} // closed when the gate opens
}

// newPullGate returns a shut gate whose pulls end with parent: a function
// starts at rest, and pulls once its pace loop finds work.
func newPullGate(parent context.Context) *pullGate {
	return &pullGate{parent: parent, opened: make(chan struct{})}
}

// open lets pulls run (again).
func (g *pullGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx != nil {
		return
	}
	g.ctx, g.cancel = context.WithCancel(g.parent)
	close(g.opened)
}

// shut ends the pulls running, and holds new ones until open.
func (g *pullGate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx == nil {
		return
	}
	g.cancel()
	g.ctx, g.cancel = nil, nil
	g.opened = make(chan struct{})
}

// wait returns, once the gate is open, the context a pull runs under: it
// ends when the gate shuts. It returns nil if parent ends first.
func (g *pullGate) wait() context.Context {
	for {
		g.mu.Lock()
		ctx, opened := g.ctx, g.opened
		g.mu.Unlock()
		if ctx != nil {
			return ctx
		}
		select {
		case <-opened:
		case <-g.parent.Done():
			return nil
		}
	}
}
