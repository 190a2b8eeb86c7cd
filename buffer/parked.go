package buffer

import (
	"context"
	"errors"
	"log/slog"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/parked"
	"github.com/sluicehq/sluice/buffer/store"
)

// storeFullError is a finished job's dead letter or callback refused by a
// full store.
type storeFullError = store.FullError

// park keeps what a finished job still leads to, which a full store
// refused, for RunParked to store later, and says so in the job's state.
func (d *Delivery) park(ctx context.Context, full *storeFullError) error {
	if dup, err := parked.Park(ctx, d.q.js, d.last.job, d.Payload); err != nil || dup {
		// Failed; or parked before, by a delivery of this job that came back: that
		// park wrote the note, and RunParked may have stored what was
		// pending and cleared it since. Writing it again would leave it
		// standing for good.
		return err
	}
	// The parked message is what counts; the note in the state is for
	// readers, and a job whose note could not be written is parked all
	// the same.
	d.change(ctx, func(j *sluicev1.Job) error { //nolint:errcheck // see above
		j.Pending = full.PendingText()
		return nil
	})
	return nil
}

// ParkedCount is how many finished jobs wait for room to store their dead
// letter or callback.
func (q *Queue) ParkedCount(ctx context.Context) (uint64, error) { return parked.Count(ctx, q.stream) }

// RunParked stores the dead letters and callbacks that full stores
// refused, as room appears, until ctx ends; it returns nil then: see
// [parked.Run].
func (q *Queue) RunParked(ctx context.Context, log *slog.Logger) error {
	return parked.Run(ctx, q.stream, log, consume, q.settleParked)
}

// settleParked stores what a parked finish is pending: a [parked.Settler].
func (q *Queue) settleParked(ctx context.Context, id string, redrives int, payload []byte) (parked.Outcome, error) {
	job, err := q.Get(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidID):
		return parked.Expired, nil
	case err != nil:
		return parked.Later, err
	case !Terminal(job.State) || int(job.Redrives) != redrives:
		return parked.Done, nil // redriven since: the new run makes its own
	}
	if err := q.afterFinish(ctx, job, payload, false); err != nil {
		return parked.Refused, err
	}
	_, err = q.update(ctx, id, nil, nil, func(j *sluicev1.Job) error {
		if j.Pending == "" {
			return ErrFinished
		}
		j.Pending = ""
		return nil
	})
	if err != nil && !errors.Is(err, ErrFinished) {
		return parked.Done, err
	}
	return parked.Done, nil
}
