package buffer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/keyed"
)

// TestKeyedReleaseLeftHalfDoneIsMended: a process that held a keyed job
// and stopped before its copy was stored (here: the copy fails) leaves the
// job held and still waiting; the next settle that mends, as a redelivery
// brings, stores the copy and removes the waiting message, and the job is
// delivered once.
func TestKeyedReleaseLeftHalfDoneIsMended(t *testing.T) {
	q := openTestQueue(t, Config{KeyConcurrency: map[string]int{"f": 1}})
	ctx := t.Context()
	job, err := q.Submit(ctx, "f", []byte("x"), "", WithConcurrencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	hash := keyed.Hash("", "k")
	copyStored := q.keys.Copy
	q.keys.Copy = func(context.Context, *jetstream.RawStreamMsg) error { return errors.New("stopped") }
	if err := q.keys.Settle(ctx, "f", hash, nil, false); err == nil {
		t.Fatal("a settle whose copy failed reports no error")
	}
	q.keys.Copy = copyStored
	// Without mending, the held job stays as it is: the key is full.
	if err := q.keys.Settle(ctx, "f", hash, nil, false); err != nil {
		t.Fatal(err)
	}
	c, err := q.Consumer(ctx, ConsumerConfig{Function: "f", MaxInFlight: 5, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if ds := fetchAll(t, c, 5, 300*time.Millisecond); len(ds) != 0 {
		t.Fatalf("%d delivered before the mend; want none", len(ds))
	}
	if err := q.keys.Settle(ctx, "f", hash, nil, true); err != nil {
		t.Fatal(err)
	}
	ds := fetchAll(t, c, 5, 2*time.Second)
	if len(ds) != 1 || ds[0].JobID != job.Id {
		t.Fatalf("after the mend: %d delivered; want the job once", len(ds))
	}
	if _, err := q.stream.GetMsg(ctx, 1); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the waiting message is still there after the mend: %v", err)
	}
	// Mending again stores no second copy.
	if err := q.keys.Settle(ctx, "f", hash, nil, true); err != nil {
		t.Fatal(err)
	}
	if ds := fetchAll(t, c, 5, 300*time.Millisecond); len(ds) != 0 {
		t.Fatalf("%d more delivered after a second mend; want none", len(ds))
	}
}
