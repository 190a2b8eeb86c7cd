package buffer_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
)

// A consumer with an idle life exists only while jobs wait for it: it is
// not made until one does, the server removes it once nothing has pulled
// for that long, and it is made again, with every job still there, when
// the next comes.
func TestConsumerWithAnIdleLifeExistsWhileJobsWait(t *testing.T) {
	s := buffertest.Start(t, "")
	nc := s.Connect(t)
	q, err := buffer.Open(t.Context(), nc, buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	exists := func() bool {
		_, err := js.Consumer(t.Context(), buffer.StreamName, buffer.ConsumerName("f"))
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	c, err := q.Consumer(t.Context(), buffer.ConsumerConfig{Function: "f", MaxInFlight: 2, AckWait: time.Minute, IdleLife: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	load := func(want int) {
		t.Helper()
		l, err := c.Load(t.Context())
		if err != nil || l.Backlog != want {
			t.Fatalf("Load = %+v, %v; want a backlog of %d", l, err, want)
		}
	}
	load(0)
	if exists() {
		t.Fatal("the consumer was made with no job waiting")
	}
	if _, err := q.Submit(t.Context(), "f", []byte("1"), "text/plain"); err != nil {
		t.Fatal(err)
	}
	load(1)
	if !exists() {
		t.Fatal("a job waits and the consumer was not made")
	}
	buffertest.WaitFor(t, 15*time.Second, "the server removes the consumer nothing pulls from", func() bool { return !exists() })
	if _, err := q.Submit(t.Context(), "f", []byte("2"), "text/plain"); err != nil {
		t.Fatal(err)
	}
	load(2)
	if !exists() {
		t.Fatal("jobs wait and the consumer was not made again")
	}
}
