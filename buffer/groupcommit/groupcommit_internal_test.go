package groupcommit

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/buffer/embedded"
)

// fakeStream answers every request on its subjects with answer(msg,
// the number of messages it has had); it stores nothing.
func fakeStream(t *testing.T, nc *nats.Conn, subject string, answer func(m *nats.Msg, n uint64) string) {
	t.Helper()
	var seq atomic.Uint64
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		n := seq.Add(1)
		if m.Reply != "" {
			m.Respond([]byte(answer(m, n))) //nolint:errcheck // the test sees a missing answer
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() }) //nolint:errcheck
}

// plainAck answers as a JetStream server older than 2.12 answers an
// atomic batch: it knows nothing of batches, stores each message on its
// own, and acknowledges the last one (the only one with a reply subject)
// with a plain ack.
func plainAck(_ *nats.Msg, n uint64) string { return fmt.Sprintf(`{"stream":"FAKE","seq":%d}`, n) }

// fakeBatcher is a batcher on a fresh server, whose subjects fake.> answer
// with answer, and what it logs.
func fakeBatcher(t *testing.T, answer func(m *nats.Msg, n uint64) string) (*Batcher, *bytes.Buffer) {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	fakeStream(t, nc, "fake.>", answer)
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	return New(nc, Config{Linger: 100 * time.Millisecond, MaxInFlight: 1, Timeout: 2 * time.Second}, log), &logged
}

// publishAll publishes n messages to fake.> at once, and counts the
// outcomes.
func publishAll(t *testing.T, b *Batcher, n int) (stored int, unknown int, other []error) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for i := range n {
		wg.Go(func() {
			_, err := b.Publish(t.Context(), nats.NewMsg(fmt.Sprint("fake.", i)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				stored++
			case errors.Is(err, ErrCommitUnknown):
				unknown++
			default:
				other = append(other, err)
			}
		})
	}
	wg.Wait()
	return stored, unknown, other
}

// TestPlainAckOfABatchIsNotTakenForTheBatch: when the answer to a batch's
// commit names no batch, only the commit message is known stored.
func TestPlainAckOfABatchIsNotTakenForTheBatch(t *testing.T) {
	b, logged := fakeBatcher(t, plainAck)
	if stored, unknown, other := publishAll(t, b, 5); stored != 1 || unknown != 4 || len(other) > 0 {
		t.Errorf("a batch of 5 answered with a plain ack: %d taken as stored, %d as unknown, other errors %v; want 1 (the commit) and 4", stored, unknown, other)
	}
	if !strings.Contains(logged.String(), "older than 2.12") {
		t.Errorf("logged %q: want a warning that atomic batches are off", logged)
	}
	// From then on every write is published, and acknowledged, alone.
	if stored, unknown, other := publishAll(t, b, 5); stored != 5 || unknown != 0 || len(other) > 0 {
		t.Errorf("after a plain ack, 5 writes: %d stored, %d unknown, other errors %v; want all 5 stored one by one", stored, unknown, other)
	}
	if st := b.Stats(); st.Batches != 0 {
		t.Errorf("stats %+v: no batch was stored as one", st)
	}
}

// TestAckOfAnotherBatchOrCount: an answer naming another batch, or
// another count, is not the batch's either.
func TestAckOfAnotherBatchOrCount(t *testing.T) {
	for name, answer := range map[string]func(m *nats.Msg, n uint64) string{
		"another batch": func(m *nats.Msg, n uint64) string {
			return fmt.Sprintf(`{"stream":"FAKE","seq":%d,"batch":"other","count":5}`, n)
		},
		"another count": func(m *nats.Msg, n uint64) string {
			return fmt.Sprintf(`{"stream":"FAKE","seq":%d,"batch":%q,"count":4}`, n, m.Header.Get(headerBatchID))
		},
	} {
		t.Run(name, func(t *testing.T) {
			b, _ := fakeBatcher(t, answer)
			if stored, unknown, other := publishAll(t, b, 5); stored != 1 || unknown != 4 || len(other) > 0 {
				t.Errorf("a batch of 5: %d taken as stored, %d as unknown, other errors %v; want 1 (the commit) and 4", stored, unknown, other)
			}
		})
	}
}

func TestAtomicBatchesFromVersion(t *testing.T) {
	for v, want := range map[string]bool{
		"2.12.0":      true,
		"2.12.4":      true,
		"2.15.2":      true,
		"2.12.0-RC.1": true,
		"3.0.0":       true,
		"v2.12.1":     true,
		"2.11.9":      false,
		"2.10.22":     false,
		"2.2.0":       false,
		"1.4.1":       false,
		"":            false,
		"garbage":     false,
	} {
		if got := AtomicBatches(v); got != want {
			t.Errorf("AtomicBatches(%q) = %v, want %v", v, got, want)
		}
	}
}
