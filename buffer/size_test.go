package buffer_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/buffer/groupcommit"
)

// stockMaxPayload is a stock nats-server's max_payload: 1 MB.
const stockMaxPayload = 1 << 20

// stockQueue opens a queue with cfg on a fresh embedded server that has a
// stock server's max_payload.
func stockQueue(t *testing.T, cfg buffer.Config) *buffer.Queue {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), MaxPayload: stockMaxPayload})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := buffer.Open(t.Context(), nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestOversizedWriteDoesNotFailItsBatchMates: a message larger than the
// server takes is refused by the client before anything is sent; the
// submits batched with it are stored all the same.
func TestOversizedWriteDoesNotFailItsBatchMates(t *testing.T) {
	q := stockQueue(t, buffer.Config{Batch: groupcommit.Config{Linger: 200 * time.Millisecond, MaxInFlight: 1}})
	in := payloads(20, 100)
	in[7] = bytes.Repeat([]byte{'x'}, stockMaxPayload) // with its headers, over the server's max_payload
	ids, errs := submitAll(t, q, in)
	if len(ids) != 19 || len(errs) != 1 {
		t.Fatalf("%d stored, %d refused (%v): want 19 stored and the oversized one refused", len(ids), len(errs), errs)
	}
	if !errors.Is(errs[0], buffer.ErrTooLarge) {
		t.Errorf("refusal %v is not ErrTooLarge", errs[0])
	}
	assertStored(t, q, ids)
}

// TestLargestJobFits: a job at every bound there is, with the largest
// payload the queue says it takes, ends both ways: with the largest result
// its state holds, and failed with a response, in the dead letters. Every
// write fits what it is stored in.
func TestLargestJobFits(t *testing.T) {
	q := stockQueue(t, buffer.Config{})
	ctx := t.Context()
	if got, want := q.MaxPayloadBytes(), int64(stockMaxPayload-buffer.PayloadOverhead); got != want {
		t.Errorf("MaxPayloadBytes = %d on a stock server, want %d", got, want)
	}
	long := func(n int) string { return strings.Repeat("x", n) }
	function := long(64)
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: function, MaxInFlight: 1, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	// A job with every field at its bound, through 20 failed attempts.
	largest := func(payload []byte) *buffer.Delivery {
		t.Helper()
		job, err := q.Submit(ctx, function, payload, long(buffer.MaxContentTypeBytes),
			buffer.WithTenant(long(64)), buffer.WithCallback("https://"+long(2040)))
		if err != nil {
			t.Fatalf("submit %d bytes: %v", len(payload), err)
		}
		for attempt := 1; ; attempt++ {
			ds, err := fetch(t, c, 1, 5*time.Second)
			if err != nil || len(ds) != 1 {
				t.Fatalf("fetch: %d, %v", len(ds), err)
			}
			d := ds[0]
			if d.JobID != job.Id {
				t.Fatalf("delivered %s, want %s", d.JobID, job.Id)
			}
			d.Record(&sluicev1.Attempt{Number: int32(attempt), Outcome: sluicev1.Attempt_FAILED, HttpStatus: 500, Error: long(1024)})
			if attempt == 21 {
				return d
			}
			if err := d.Retry(ctx, long(1024), &sluicev1.JobResult{HttpStatus: 500, ContentType: long(buffer.MaxContentTypeBytes)}, 0); err != nil {
				t.Fatalf("retry %d: %v", attempt, err)
			}
		}
	}
	d := largest([]byte("p"))
	result := &sluicev1.JobResult{HttpStatus: 200, ContentType: long(buffer.MaxContentTypeBytes), Body: bytes.Repeat([]byte{'r'}, int(q.MaxResultBytes()))}
	if err := d.Succeed(ctx, result); err != nil {
		t.Errorf("Succeed with a result of MaxResultBytes (%d): %v", q.MaxResultBytes(), err)
	} else if job, err := q.Get(ctx, d.JobID); err != nil || int64(len(job.GetResult().GetBody())) != q.MaxResultBytes() {
		t.Errorf("the job with the largest result: %d bytes of result, %v", len(job.GetResult().GetBody()), err)
	}

	d = largest(bytes.Repeat([]byte{'p'}, int(q.MaxPayloadBytes())))
	result.HttpStatus = 500
	if err := d.Fail(ctx, long(1024), result); err != nil {
		t.Errorf("Fail the job with the largest payload (%d): %v", q.MaxPayloadBytes(), err)
	}
	page, err := q.DeadLetters(ctx, function, long(64), 0, 10, true)
	if err != nil || len(page.Letters) != 1 || int64(len(page.Letters[0].Payload)) != q.MaxPayloadBytes() {
		t.Errorf("dead letters: %d, %v; want the one with its whole payload", len(page.Letters), err)
	}
}
