package buffer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer/keyed"
)

// keyedQueue is a queue whose function f takes one job of a key at a
// time, with a consumer of f's jobs.
func keyedQueue(t *testing.T) (*Queue, *Consumer) {
	t.Helper()
	q := openTestQueue(t, Config{KeyConcurrency: map[string]int{"f": 1}})
	c, err := q.Consumer(t.Context(), ConsumerConfig{Function: "f", MaxInFlight: 5, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return q, c
}

// TestKeyedReleaseLeftHalfDoneIsMended: a process that held a waiting
// job and stopped before its copy was stored (here: the copy fails)
// leaves the job held and still waiting; the next settle that mends, as a
// redelivery brings, stores the copy and removes the waiting message, and
// the job is delivered once.
func TestKeyedReleaseLeftHalfDoneIsMended(t *testing.T) {
	q, c := keyedQueue(t)
	ctx := t.Context()
	first, err := q.Submit(ctx, "f", []byte("x"), "", WithConcurrencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := q.Submit(ctx, "f", []byte("y"), "", WithConcurrencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	if ds := fetchAll(t, c, 5, 300*time.Millisecond); len(ds) != 1 || ds[0].JobID != first.Id {
		t.Fatalf("%d delivered; want the first job alone, held at its submit", len(ds))
	}
	hash := keyed.Hash("", "k")
	copyStored := q.keys.Copy
	q.keys.Copy = func(context.Context, *jetstream.RawStreamMsg) error { return errors.New("stopped") }
	// The first job ends; the waiting one takes its place, and its copy
	// fails.
	if _, err := q.keys.Settle(ctx, "f", hash, &keyed.Held{ID: first.Id}, false); err == nil {
		t.Fatal("a settle whose copy failed reports no error")
	}
	q.keys.Copy = copyStored
	// Without mending, the held job stays as it is: the key is full.
	if _, err := q.keys.Settle(ctx, "f", hash, nil, false); err != nil {
		t.Fatal(err)
	}
	if ds := fetchAll(t, c, 5, 300*time.Millisecond); len(ds) != 0 {
		t.Fatalf("%d delivered before the mend; want none", len(ds))
	}
	if _, err := q.keys.Settle(ctx, "f", hash, nil, true); err != nil {
		t.Fatal(err)
	}
	ds := fetchAll(t, c, 5, 2*time.Second)
	if len(ds) != 1 || ds[0].JobID != waiting.Id {
		t.Fatalf("after the mend: %d delivered; want the waiting job once", len(ds))
	}
	if _, err := q.stream.GetMsg(ctx, 2); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the waiting message is still there after the mend: %v", err)
	}
	// Mending again stores no second copy.
	if _, err := q.keys.Settle(ctx, "f", hash, nil, true); err != nil {
		t.Fatal(err)
	}
	if ds := fetchAll(t, c, 5, 300*time.Millisecond); len(ds) != 0 {
		t.Fatalf("%d more delivered after a second mend; want none", len(ds))
	}
}

// TestKeyedClaimNeverStoredIsDropped: a job held at its submit whose
// gateway died before storing it holds its key's slot until claimGrace has
// passed; a settle of the full key then asks to be tried again, and once
// the grace is over, drops the claim and releases the job waiting behind
// it.
func TestKeyedClaimNeverStoredIsDropped(t *testing.T) {
	q, c := keyedQueue(t)
	ctx := t.Context()
	now := time.Now()
	q.keys.Now = func() time.Time { return now }
	hash := keyed.Hash("", "k")
	if held, err := q.keys.Claim(ctx, "f", hash, NewJobID(), now); err != nil || !held {
		t.Fatalf("Claim = %v, %v; want held", held, err)
	}
	waiting, err := q.Submit(ctx, "f", []byte("y"), "", WithConcurrencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	recheck, err := q.keys.Settle(ctx, "f", hash, nil, false)
	if err != nil || !recheck {
		t.Fatalf("Settle within the grace = %v, %v; want to be asked to check again", recheck, err)
	}
	if ds := fetchAll(t, c, 5, 300*time.Millisecond); len(ds) != 0 {
		t.Fatalf("%d delivered within the grace; want none", len(ds))
	}
	now = now.Add(time.Minute + time.Second)
	if recheck, err := q.keys.Settle(ctx, "f", hash, nil, false); err != nil || recheck {
		t.Fatalf("Settle past the grace = %v, %v; want done", recheck, err)
	}
	if ds := fetchAll(t, c, 5, 2*time.Second); len(ds) != 1 || ds[0].JobID != waiting.Id {
		t.Fatalf("past the grace: %d delivered; want the waiting job", len(ds))
	}
}

// TestKeyedPlaceOfAFinishedJobIsFound: a job that finished without giving
// its key's place back (its process stopped between acknowledging it and
// settling its key) holds the place until claimGrace has passed since it
// was held; then the next settle of the full key finds it finished, drops
// it, and lets the waiting job go.
func TestKeyedPlaceOfAFinishedJobIsFound(t *testing.T) {
	q, c := keyedQueue(t)
	ctx := t.Context()
	now := time.Now()
	q.keys.Now = func() time.Time { return now }
	done, err := q.Submit(ctx, "f", []byte("x"), "", WithConcurrencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	ds := fetchAll(t, c, 5, 2*time.Second)
	if len(ds) != 1 {
		t.Fatalf("%d delivered; want the first job", len(ds))
	}
	if _, err := ds[0].Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ds[0].Succeed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// Its place, as a stop between the acknowledgement and the settle
	// leaves it: held again.
	hash := keyed.Hash("", "k")
	if held, err := q.keys.Claim(ctx, "f", hash, done.Id, now); err != nil || !held {
		t.Fatalf("Claim = %v, %v", held, err)
	}
	waiting, err := q.Submit(ctx, "f", []byte("y"), "", WithConcurrencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	if recheck, err := q.keys.Settle(ctx, "f", hash, nil, false); err != nil || !recheck {
		t.Fatalf("Settle within the grace = %v, %v; want the key full, to look again", recheck, err)
	}
	if ds := fetchAll(t, c, 5, 300*time.Millisecond); len(ds) != 0 {
		t.Fatalf("%d delivered within the grace; want none", len(ds))
	}
	now = now.Add(time.Minute + time.Second)
	if _, err := q.keys.Settle(ctx, "f", hash, nil, false); err != nil {
		t.Fatal(err)
	}
	if ds := fetchAll(t, c, 5, 2*time.Second); len(ds) != 1 || ds[0].JobID != waiting.Id {
		t.Fatalf("past the grace: %d delivered; want the waiting job", len(ds))
	}
}
