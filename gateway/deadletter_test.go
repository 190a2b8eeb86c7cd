package gateway_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/gateway"
)

// #19 item 18: a redrive of all the dead letters requeues a bounded number
// of them per call, however many there are, and the calls after the first
// go on where it stopped, over the letters there were when it started.
func TestRedriveAllIsBoundedPerCall(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	s, err := gateway.NewService(gateway.Config{Jobs: q, DeadLetters: q, Functions: []gateway.Function{{Name: "f"}}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1001 // one more than a call's share
	ids := buffertest.DeadLetters(t, q, "f", "", n)
	r, err := s.RedriveDeadLetters(t.Context(), &sluicev1.RedriveDeadLettersRequest{Function: "f"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Jobs) != 1000 || r.NextPageToken == "" {
		t.Fatalf("a redrive of all %d answered %d jobs, next page token %q; want 1000 and a token for the rest", n, len(r.Jobs), r.NextPageToken)
	}
	redriven := map[string]bool{}
	for _, j := range r.Jobs {
		redriven[j.Id] = true
	}

	// A redriven job that fails again meanwhile is not part of this redrive.
	c, err := q.Consumer(t.Context(), buffer.ConsumerConfig{Function: "f", MaxInFlight: 1, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var again string
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Consume(ctx, 1, func(d *buffer.Delivery) {
		again = d.JobID
		if err := d.Fail(t.Context(), "failed again", nil); err != nil {
			t.Error(err)
		}
		cancel()
	}); err != nil || again == "" {
		t.Fatalf("take a redriven job: %q, %v", again, err)
	}
	if _, err := s.RedriveDeadLetters(t.Context(), &sluicev1.RedriveDeadLettersRequest{Function: "f", PageToken: r.NextPageToken, Ids: ids[:1]}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("IDs with a page token: %v, want InvalidArgument", err)
	}
	list, err := s.ListDeadLetters(t.Context(), &sluicev1.ListDeadLettersRequest{Function: "f", PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RedriveDeadLetters(t.Context(), &sluicev1.RedriveDeadLettersRequest{Function: "f", PageToken: list.NextPageToken}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a listing's page token: %v, want InvalidArgument", err)
	}
	r, err = s.RedriveDeadLetters(t.Context(), &sluicev1.RedriveDeadLettersRequest{Function: "f", PageToken: r.NextPageToken})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Jobs) != 1 || r.NextPageToken != "" {
		t.Fatalf("the second call answered %d jobs, next page token %q; want the last one and no token", len(r.Jobs), r.NextPageToken)
	}
	if id := r.Jobs[0].Id; redriven[id] {
		t.Errorf("the second call redrove %s again, dead-lettered again after the redrive started", id)
	}
	redriven[r.Jobs[0].Id] = true
	for _, id := range ids {
		if !redriven[id] {
			t.Errorf("job %s was not redriven", id)
		}
	}
	list, err = s.ListDeadLetters(t.Context(), &sluicev1.ListDeadLettersRequest{Function: "f"})
	if err != nil || len(list.DeadLetters) != 1 || list.DeadLetters[0].Job.Id != again {
		t.Errorf("dead letters left: %v, %v; want only %s, which failed again", list.GetDeadLetters(), err, again)
	}
}
