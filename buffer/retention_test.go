package buffer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
)

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), buffer.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestFinishedJobsAreRemovedUpToTheAckFloor(t *testing.T) {
	srv := buffertest.Start(t, "")
	nc := srv.Connect(t)
	js, _ := jetstream.New(nc)
	q, err := buffer.Open(t.Context(), nc, buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for range 10 {
		if _, err := q.Submit(ctx, "f", []byte("x"), ""); err != nil {
			t.Fatal(err)
		}
	}
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 10, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := fetch(t, c, 10, 5*time.Second)
	if err != nil || len(ds) != 10 {
		t.Fatalf("fetched %d, %v", len(ds), err)
	}
	// Finish all but the third: the ack floor stops below it.
	for i, d := range ds {
		if i == 2 {
			continue
		}
		if err := d.Succeed(ctx, &sluicev1.JobResult{HttpStatus: 200}); err != nil {
			t.Fatal(err)
		}
	}
	// Acks are not waited for: the floor moves a moment later.
	removeFinishedUntil := func(what string, left uint64) {
		t.Helper()
		buffertest.WaitForNoError(t, 5*time.Second, what, func() error {
			if _, err := c.Load(ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.RemoveFinished(ctx, false); err != nil {
				t.Fatal(err)
			}
			if n := streamMsgs(t, js); n > left {
				return fmt.Errorf("%d messages", n)
			}
			return nil
		})
	}
	removeFinishedUntil("the finished messages below the ack floor removed", 8)
	// The two below the unfinished one are gone; it and the seven after it
	// (finished, above the floor) stay.
	if n := streamMsgs(t, js); n != 8 {
		t.Errorf("after removing up to the floor: %d messages, want 8", n)
	}
	if job, err := q.Get(ctx, ds[2].JobID); err != nil || job.State != sluicev1.Job_QUEUED {
		t.Errorf("unfinished job: %v, %v", job.GetState(), err)
	}
	if err := ds[2].Succeed(ctx, &sluicev1.JobResult{HttpStatus: 200}); err != nil {
		t.Fatal(err)
	}
	removeFinishedUntil("every message removed, all finished", 0)
	for _, d := range ds {
		if job, err := q.Get(ctx, d.JobID); err != nil || job.State != sluicev1.Job_SUCCEEDED {
			t.Errorf("job %s: %v, %v", d.JobID, job.GetState(), err)
		}
	}
}

func TestWorkQueueStreamFromAnEarlierVersion(t *testing.T) {
	srv := buffertest.Start(t, "")
	nc := srv.Connect(t)
	js, _ := jetstream.New(nc)
	old := jetstream.StreamConfig{Name: buffer.StreamName, Subjects: []string{buffer.SubjectPrefix + ">"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}
	if _, err := js.CreateStream(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	id := buffer.NewJobID()
	msg := nats.NewMsg(buffer.Subject("f", id))
	msg.Header.Set("Sluice-Job-Id", id)
	msg.Data = []byte("x")
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	q, err := buffer.Open(t.Context(), nc, buffer.Config{})
	if err != nil {
		t.Fatalf("Open over a work queue with a job in it: %v", err)
	}
	s, _ := js.Stream(t.Context(), buffer.StreamName)
	if r := s.CachedInfo().Config.Retention; r != jetstream.LimitsPolicy {
		t.Errorf("retention after Open: %v, want limits", r)
	}
	if job, err := q.Get(t.Context(), id); err != nil || job.State != sluicev1.Job_QUEUED {
		t.Errorf("the old stream's job after Open: %v, %v; want it QUEUED", job, err)
	}
}
