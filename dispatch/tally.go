package dispatch

import (
	"sync"

	"github.com/sluicehq/sluice/buffer"
)

// tally counts what this process's dispatch of a function did and has not
// yet added to the totals every process shares. It is safe for concurrent
// use.
type tally struct {
	mu sync.Mutex
	c  buffer.Counts
}

func (t *tally) add(change func(*buffer.Counts)) {
	t.mu.Lock()
	change(&t.c)
	t.mu.Unlock()
}

// take returns and clears the counts not yet shared.
func (t *tally) take() buffer.Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.c
	t.c = buffer.Counts{}
	return c
}

// giveBack returns counts that could not be shared, to try again.
func (t *tally) giveBack(c buffer.Counts) { t.add(func(own *buffer.Counts) { own.Add(c) }) }
