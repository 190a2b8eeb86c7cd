package deadletter

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
)

// Page is one page of a function's dead letters.
type Page struct {
	// Letters are the dead letters, oldest first.
	Letters []*sluicev1.DeadLetter
	// Next is where the next page starts; 0 on the last page.
	Next uint64
}

// List returns up to limit of the function's dead letters of jobs of
// tenant, oldest first, starting at position from (0 for the first page;
// a page's Next for the one after). Payloads are left out unless
// withPayload. A page reads the tenant's letters only: about limit of them.
func (s *Store) List(ctx context.Context, function, tenant string, from uint64, limit int, withPayload bool) (Page, error) {
	var page Page
	err := s.each(ctx, function, tenant, from, 0, func(sl stored) (bool, error) {
		if len(page.Letters) == limit {
			page.Next = sl.seq // there is more
			return false, nil
		}
		if !withPayload {
			sl.Payload = nil
		}
		page.Letters = append(page.Letters, sl.DeadLetter)
		return true, nil
	})
	return page, err
}

// stored is a dead letter, decoded, and its place in the stream.
type stored struct {
	*sluicev1.DeadLetter
	seq uint64
}

// each calls f with the function's dead letters of jobs of tenant, oldest
// first, from stream position from up to until (0: to the end), one at a
// time, until f returns false or an error. It reads the tenant's letters
// by their subjects, and those in the subject layout of before (normally
// none: see MoveLegacy) one by one.
func (s *Store) each(ctx context.Context, function, tenant string, from, until uint64, f func(stored) (bool, error)) error {
	cursors := []*letterCursor{
		{filter: tenantLetters(function, tenant)},
		{filter: legacyLetters(function)}, // any tenant's: checked below
	}
	for _, c := range cursors {
		if err := c.read(ctx, s.stream, max(from, 1)); err != nil {
			return err
		}
	}
	for {
		var c *letterCursor // the one whose next letter comes first
		for _, cc := range cursors {
			if cc.next != nil && (c == nil || cc.next.Sequence < c.next.Sequence) {
				c = cc
			}
		}
		if c == nil || until > 0 && c.next.Sequence > until {
			return nil
		}
		msg := c.next
		dl, err := decode(msg)
		if err != nil {
			return err
		}
		if dl.Job.Tenant == tenant {
			more, err := f(stored{dl, msg.Sequence})
			if !more || err != nil {
				return err
			}
		}
		if err := c.read(ctx, s.stream, msg.Sequence+1); err != nil {
			return err
		}
	}
}

// letterCursor reads the dead letters on one subject filter in stream
// order.
type letterCursor struct {
	filter string
	next   *jetstream.RawStreamMsg // the next letter; nil past the last
}

// read reads the first letter at position from or after it.
func (c *letterCursor) read(ctx context.Context, s jetstream.Stream, from uint64) error {
	msg, err := s.GetMsg(ctx, from, jetstream.WithGetMsgSubject(c.filter))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		c.next = nil
		return nil
	case err != nil:
		return fmt.Errorf("buffer: read dead letters: %w", err)
	}
	c.next = msg
	return nil
}

// Count is how many dead letters the function has, of every tenant.
func (s *Store) Count(ctx context.Context, function string) (int64, error) {
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(functionLetters(function)))
	if err != nil {
		return 0, fmt.Errorf("buffer: count dead letters of %s: %w", function, err)
	}
	var n int64
	for _, c := range info.State.Subjects {
		n += int64(c)
	}
	return n, nil
}
