// Package arrivals tells dispatch of jobs stored for the functions it
// watches while they rest.
package arrivals

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Arrivals tells of jobs stored for functions that are watched: dispatch
// watches a function while it rests, and wakes it when one comes. A job's
// message is seen by every process that watches its function, whichever
// gateway took the submit, because NATS delivers a published message to
// every subscriber of its subject, as well as to the stream.
//
// A watch is a subscription that ends with its first message, delivered
// into one channel that Run reads: no goroutine and no request per watch,
// so a thousand resting functions cost the server a thousand entries in
// its interest table and nothing more.
type Arrivals struct {
	nc       *nats.Conn
	subjects func(function string) string // every job message's of function
	ch       chan *nats.Msg

	mu      sync.Mutex
	watches map[*nats.Subscription]func()
}

// New returns an Arrivals on nc for up to watches watches at once, where
// subjects matches every job message of a function; Run must run for it
// to tell of any. More watches than that at once may lose a message, as
// NATS drops what a full channel cannot take.
func New(nc *nats.Conn, subjects func(function string) string, watches int) *Arrivals {
	// Each watch takes one message at most, and a cancelled watch may
	// leave one behind: room for both, so NATS never drops one.
	return &Arrivals{nc: nc, subjects: subjects, ch: make(chan *nats.Msg, 2*watches+16), watches: map[*nats.Subscription]func(){}}
}

// watchTimeout bounds the wait for the server to confirm a watch.
const watchTimeout = 10 * time.Second

// Watch calls notify once, from Run, when the next job message of function
// (any lane) is published. It returns once the NATS server it is connected
// to has the interest, so that a job stored after Watch returned is told
// of; in a cluster, a job published through another server within the
// moment it takes the interest to reach that server may not be. cancel
// ends the watch; it is safe to call after notify.
func (a *Arrivals) Watch(ctx context.Context, function string, notify func()) (cancel func(), err error) {
	cancels, err := a.WatchSubjects(ctx, []Subject{{Subject: a.subjects(function), Notify: notify}})
	if err != nil {
		return nil, err
	}
	return cancels[0], nil
}

// Subject is one watch of WatchSubjects: Notify is called once, from Run,
// when the next message on Subject (a NATS subject, wildcards allowed) is
// published.
type Subject struct {
	Subject string
	Notify  func()
}

// WatchSubjects begins the watches, as Watch does one (one lane's jobs,
// say), and returns once the server has the interest of them all: one
// round trip for any number. cancels[i] ends watches[i]. On error none is
// left.
func (a *Arrivals) WatchSubjects(ctx context.Context, watches []Subject) (cancels []func(), err error) {
	cancelAll := func() {
		for _, c := range cancels {
			c()
		}
	}
	for _, w := range watches {
		sub, err := a.nc.ChanSubscribe(w.Subject, a.ch)
		if err != nil {
			cancelAll()
			return nil, fmt.Errorf("buffer: watch arrivals on %s: %w", w.Subject, err)
		}
		cancel := func() {
			a.mu.Lock()
			delete(a.watches, sub)
			a.mu.Unlock()
			sub.Unsubscribe() //nolint:errcheck // closed already, or the connection is
		}
		cancels = append(cancels, cancel)
		a.mu.Lock()
		a.watches[sub] = w.Notify
		a.mu.Unlock()
		if err := sub.AutoUnsubscribe(1); err != nil {
			cancelAll()
			return nil, fmt.Errorf("buffer: watch arrivals on %s: %w", w.Subject, err)
		}
	}
	flushCtx, cancelFlush := context.WithTimeout(ctx, watchTimeout)
	defer cancelFlush()
	if err := a.nc.FlushWithContext(flushCtx); err != nil {
		cancelAll()
		return nil, fmt.Errorf("buffer: watch arrivals: %w", err)
	}
	return cancels, nil
}

// Run calls the watches' notify functions as their jobs arrive, until ctx
// ends. notify must not block.
func (a *Arrivals) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-a.ch:
			a.mu.Lock()
			notify, ok := a.watches[msg.Sub]
			delete(a.watches, msg.Sub)
			a.mu.Unlock()
			if ok {
				notify()
			}
		}
	}
}
