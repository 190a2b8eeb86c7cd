package dispatch

import (
	"sync"

	"github.com/sluicehq/sluice/buffer/shared"
)

// tally counts what this process's dispatch of a function did and has not
// yet added to the totals every process shares. It is safe for concurrent
// use.
type tally struct {
	mu sync.Mutex
	c  shared.Counts
}

func (t *tally) add(change func(*shared.Counts)) {
	t.mu.Lock()
	change(&t.c)
	t.mu.Unlock()
}

// take returns and clears the counts not yet shared.
func (t *tally) take() shared.Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.c
	t.c = shared.Counts{}
	return c
}

// giveBack returns counts that could not be shared, to try again.
func (t *tally) giveBack(c shared.Counts) { t.add(func(own *shared.Counts) { own.Add(c) }) }
