// Package gate lets work run while a gate is open and ends it while the
// gate is shut: dispatch holds a resting function's pulls with one (a
// resting function makes no pull request and gets no heartbeat; the arrival
// of a job wakes it).
package gate

import (
	"context"
	"sync"
)

// Gate hands out contexts that work runs under while it is open and that
// end when it shuts. It is safe for concurrent use.
type Gate struct {
	parent context.Context // outlives every opening

	mu     sync.Mutex
	ctx    context.Context // work runs under it while open; nil while shut
	cancel context.CancelFunc
	opened chan struct{} // closed when the gate opens
}

// New returns a shut gate whose work ends with parent.
func New(parent context.Context) *Gate {
	return &Gate{parent: parent, opened: make(chan struct{})}
}

// Open lets work run (again).
func (g *Gate) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx != nil {
		return
	}
	g.ctx, g.cancel = context.WithCancel(g.parent)
	close(g.opened)
}

// Shut ends the work running, and holds new work until Open.
func (g *Gate) Shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx == nil {
		return
	}
	g.cancel()
	g.ctx, g.cancel = nil, nil
	g.opened = make(chan struct{})
}

// Wait returns, once the gate is open, the context work runs under: it
// ends when the gate shuts. It returns nil if parent ends first.
func (g *Gate) Wait() context.Context {
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
