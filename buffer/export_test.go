package buffer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Fetch asks for at most max jobs and calls handle with each as it
// arrives, until max have come, maxWait has passed or ctx ends. It returns
// how many it handed over. Only tests use it: a dispatcher consumes.
func (c *Consumer) Fetch(ctx context.Context, max int, maxWait time.Duration, handle func(*Delivery)) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	batch, err := c.cons.Fetch(max, jetstream.FetchContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil // waited the whole maxWait, or stopped
		}
		return 0, fmt.Errorf("buffer: fetch: %w", err)
	}
	n := 0
	for msg := range batch.Messages() {
		n++
		handle(newDelivery(c.q, msg))
	}
	if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoMessages) {
		return n, fmt.Errorf("buffer: fetch: %w", err)
	}
	return n, nil
}
