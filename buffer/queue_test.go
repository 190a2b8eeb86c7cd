package buffer_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
)

func TestSubmitGet(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	job, err := q.Submit(ctx, "resize", []byte(`{"w":10}`), "application/json")
	if err != nil {
		t.Fatal(err)
	}
	if !buffer.ValidJobID(job.Id) {
		t.Errorf("job id %q is not a valid id", job.Id)
	}
	got, err := q.Get(ctx, job.Id)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != sluicev1.Job_QUEUED || got.Function != "resize" || got.ContentType != "application/json" || got.PayloadSize != 8 {
		t.Errorf("Get = %v, want a QUEUED resize job with an 8-byte JSON payload", got)
	}
}

func TestGetErrors(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	for _, tc := range []struct {
		name string
		id   string
		want error
	}{
		{"empty", "", buffer.ErrInvalidID},
		{"too short", "ABC", buffer.ErrInvalidID},
		{"lower case", "abcdefghijklmnopqrstuvwxyz", buffer.ErrInvalidID},
		{"subject wildcard", "ABCDEFGHIJKLMNOPQRSTUVWXY>", buffer.ErrInvalidID},
		{"unknown", buffer.NewJobID(), buffer.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := q.Get(t.Context(), tc.id); !errors.Is(err, tc.want) {
				t.Errorf("Get(%q) error = %v, want %v", tc.id, err, tc.want)
			}
		})
	}
}

// A job's state is read straight from the bucket's stream; an entry deleted
// or purged there reads as no entry, as through KeyValue.Get.
func TestGetSeesDeletedStateAsMissing(t *testing.T) {
	s := buffertest.Start(t, "")
	nc := s.Connect(t)
	ctx := t.Context()
	q, err := buffer.Open(ctx, nc, buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, buffer.StateBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, remove := range []func(string) error{
		func(id string) error { return kv.Delete(ctx, id) },
		func(id string) error { return kv.Purge(ctx, id) },
	} {
		id := buffer.NewJobID()
		b, err := proto.Marshal(&sluicev1.Job{Id: id, Function: "f", State: sluicev1.Job_SUCCEEDED})
		if err != nil {
			t.Fatal(err)
		}
		rev, err := kv.Put(ctx, id, b)
		if err != nil {
			t.Fatal(err)
		}
		job, gotRev, err := q.GetRevision(ctx, id)
		if err != nil || job.State != sluicev1.Job_SUCCEEDED || gotRev != rev {
			t.Fatalf("GetRevision(%s) = %v, %d, %v; want SUCCEEDED at revision %d", id, job, gotRev, err, rev)
		}
		if err := remove(id); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Get(ctx, id); !errors.Is(err, buffer.ErrNotFound) {
			t.Errorf("Get(%s) after its entry was removed: error %v, want ErrNotFound", id, err)
		}
	}
}

func TestJobIDsAreUnique(t *testing.T) {
	seen := make(map[string]bool)
	for range 10000 {
		id := buffer.NewJobID()
		if seen[id] || !buffer.ValidJobID(id) {
			t.Fatalf("id %q repeated or malformed", id)
		}
		seen[id] = true
	}
}

func TestFullQueueRefusesAndKeepsAccepted(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{MaxJobs: 2})
	ctx := t.Context()
	var ids []string
	for range 2 {
		job, err := q.Submit(ctx, "f", []byte("x"), "text/plain")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, job.Id)
	}
	if _, err := q.Submit(ctx, "f", []byte("x"), "text/plain"); !errors.Is(err, buffer.ErrFull) {
		t.Fatalf("third submit error = %v, want ErrFull", err)
	}
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 10, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := fetch(t, c, 10, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].JobID != ids[0] || ds[1].JobID != ids[1] {
		t.Fatalf("fetched %d jobs, want the two accepted ones in order", len(ds))
	}
}

// submitOne submits one job for function "f" and returns it with a
// consumer of f's jobs.
func submitOne(t *testing.T, q *buffer.Queue, payload string) (*sluicev1.Job, *buffer.Consumer) {
	t.Helper()
	job, err := q.Submit(t.Context(), "f", []byte(payload), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	c, err := q.Consumer(t.Context(), buffer.ConsumerConfig{Function: "f", MaxInFlight: 1, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return job, c
}

func TestDeliveryLifecycle(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	job, c := submitOne(t, q, "hello")
	fetchOne := func() *buffer.Delivery {
		t.Helper()
		ds, err := fetch(t, c, 1, 2*time.Second)
		if err != nil || len(ds) != 1 {
			t.Fatalf("Fetch = %d deliveries, %v; want 1", len(ds), err)
		}
		return ds[0]
	}

	d := fetchOne()
	if d.JobID != job.Id || string(d.Payload) != "hello" || d.ContentType != "text/plain" || d.Function != "f" {
		t.Fatalf("delivery = %+v, want the submitted job", d)
	}
	running, err := d.Begin(ctx)
	if err != nil || running.State != sluicev1.Job_RUNNING || running.Attempts != 1 {
		t.Fatalf("Begin = %v, %v; want RUNNING attempt 1", running, err)
	}
	// Handed back: queued again, and delivered again with its attempt kept.
	if err := d.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := q.Get(ctx, job.Id); got.State != sluicev1.Job_QUEUED {
		t.Fatalf("after Release state = %v, want QUEUED", got.State)
	}
	d = fetchOne()
	if running, err = d.Begin(ctx); err != nil || running.Attempts != 2 {
		t.Fatalf("second Begin = %v, %v; want attempt 2", running, err)
	}
	result := &sluicev1.JobResult{HttpStatus: 200, ContentType: "text/plain", Body: []byte("HELLO")}
	if err := d.Succeed(ctx, result); err != nil {
		t.Fatal(err)
	}
	got, err := q.Get(ctx, job.Id)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != sluicev1.Job_SUCCEEDED || string(got.Result.GetBody()) != "HELLO" || got.FinishTime == nil {
		t.Fatalf("finished job = %v, want SUCCEEDED with its result", got)
	}
	// A finished job cannot be failed or restarted afterwards.
	if err := d.Fail(ctx, "late", nil); err != nil {
		t.Fatalf("Fail after Succeed: %v", err)
	}
	if _, err := d.Begin(ctx); !errors.Is(err, buffer.ErrFinished) {
		t.Fatalf("Begin after Succeed error = %v, want ErrFinished", err)
	}
	if got, _ := q.Get(ctx, job.Id); got.State != sluicev1.Job_SUCCEEDED {
		t.Fatalf("state went from SUCCEEDED to %v", got.State)
	}
	// The queue is empty: the message was acknowledged.
	if ds, err := fetch(t, c, 1, 200*time.Millisecond); err != nil || len(ds) != 0 {
		t.Fatalf("Fetch after finish = %d deliveries, %v; want none", len(ds), err)
	}
}

func fetch(t *testing.T, c *buffer.Consumer, max int, wait time.Duration) ([]*buffer.Delivery, error) {
	var ds []*buffer.Delivery
	n, err := c.Fetch(t.Context(), max, wait, func(d *buffer.Delivery) { ds = append(ds, d) })
	if n != len(ds) {
		t.Errorf("Fetch reported %d deliveries, handed over %d", n, len(ds))
	}
	return ds, err
}

func TestQuickAttemptCountedWithoutBegin(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	job, c := submitOne(t, q, "x")
	ds, err := fetch(t, c, 1, 2*time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("fetch: %d, %v", len(ds), err)
	}
	d := ds[0]
	if d.Redelivered() {
		t.Error("a first delivery says it is a redelivery")
	}
	if _, err := d.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	d.Invoked(started)
	if err := d.Succeed(ctx, &sluicev1.JobResult{HttpStatus: 200}); err != nil {
		t.Fatal(err)
	}
	got, err := q.Get(ctx, job.Id)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != sluicev1.Job_SUCCEEDED || got.Attempts != 1 || !got.StartTime.AsTime().Equal(started) {
		t.Errorf("job = %v, want SUCCEEDED with one attempt started at %v", got, started)
	}
}

func TestCancel(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	queued, err := q.Submit(ctx, "f", []byte("a"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	got, err := q.Cancel(ctx, queued.Id)
	if err != nil || got.State != sluicev1.Job_CANCELLED || got.Error != "cancelled before it ran" || got.FinishTime == nil {
		t.Fatalf("Cancel(queued) = %v, %v; want CANCELLED before it ran", got, err)
	}
	if again, err := q.Cancel(ctx, queued.Id); !errors.Is(err, buffer.ErrFinished) || again.GetState() != sluicev1.Job_CANCELLED {
		t.Errorf("second Cancel = %v, %v; want ErrFinished with the cancelled job", again, err)
	}
	for _, tc := range []struct {
		id   string
		want error
	}{{"nope", buffer.ErrInvalidID}, {buffer.NewJobID(), buffer.ErrNotFound}} {
		if _, err := q.Cancel(ctx, tc.id); !errors.Is(err, tc.want) {
			t.Errorf("Cancel(%q) error = %v, want %v", tc.id, err, tc.want)
		}
	}

	// The dispatcher finds the cancelled job and removes it uninvoked.
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 1, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := fetch(t, c, 1, 2*time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("fetch: %d, %v", len(ds), err)
	}
	if _, err := ds[0].Prepare(ctx); !errors.Is(err, buffer.ErrFinished) {
		t.Errorf("Prepare of a cancelled job: %v, want ErrFinished", err)
	}
}

// A cancel of a job whose message dispatch holds cannot tell whether an
// attempt is on its way (a first attempt is marked RUNNING only after it
// has run a while), and says so; dispatch, which knows, then records a
// sent attempt as a cancel of a running job records it, and one the
// platform refused, or never sent, as it was.
func TestCancelOfAJobDispatchHolds(t *testing.T) {
	q := buffertest.Queue(t, buffer.Config{})
	ctx := t.Context()
	c, err := q.Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 10, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		sent    bool // the attempt was sent
		finish  func(*buffer.Delivery) error
		running bool // the job ends as cancelled while running
	}{
		{"Begin", true, func(d *buffer.Delivery) error {
			if _, err := d.Begin(ctx); !errors.Is(err, buffer.ErrFinished) {
				t.Errorf("Begin = %v, want ErrFinished", err)
			}
			return d.Skip(ctx)
		}, true},
		{"Succeed", true, func(d *buffer.Delivery) error { return d.Succeed(ctx, &sluicev1.JobResult{HttpStatus: 200}) }, true},
		{"Retry", true, func(d *buffer.Delivery) error { return d.Retry(ctx, "boom", nil, time.Second) }, true},
		{"Throttled", true, func(d *buffer.Delivery) error {
			d.Record(&sluicev1.Attempt{Number: 1, Outcome: sluicev1.Attempt_THROTTLED})
			return d.Throttled(ctx, time.Second)
		}, false},
		{"not sent", false, func(d *buffer.Delivery) error { return d.Release(ctx) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job, err := q.Submit(ctx, "f", []byte("a"), "text/plain")
			if err != nil {
				t.Fatal(err)
			}
			ds, err := fetch(t, c, 1, 2*time.Second)
			if err != nil || len(ds) != 1 {
				t.Fatalf("fetch: %d, %v", len(ds), err)
			}
			d := ds[0]
			if _, err := d.Prepare(ctx); err != nil {
				t.Fatal(err)
			}
			started := time.Now()
			if tc.sent {
				d.Invoked(started)
			}
			got, err := q.Cancel(ctx, job.Id)
			if err != nil || got.State != sluicev1.Job_CANCELLED || strings.Contains(got.Error, "before it ran") || !strings.Contains(got.Error, "if any") {
				t.Fatalf("Cancel = %v, %v; want CANCELLED, saying an attempt may have been sent", got, err)
			}
			if err := tc.finish(d); err != nil {
				t.Fatal(err)
			}
			got, err = q.Get(ctx, job.Id)
			if err != nil {
				t.Fatal(err)
			}
			if tc.running {
				if got.State != sluicev1.Job_CANCELLED || got.Attempts != 1 || got.StartTime == nil || got.Result != nil || !strings.HasPrefix(got.Error, "cancelled while running") {
					t.Errorf("job = %v; want cancelled while running, its attempt counted, its outcome discarded", got)
				}
			} else if got.State != sluicev1.Job_CANCELLED || got.Attempts != 0 || !strings.Contains(got.Error, "if any") {
				t.Errorf("job = %v; want the cancel's own words, no attempt", got)
			}
		})
	}
}

func TestSubmitOnceAcrossProcesses(t *testing.T) {
	srv := buffertest.Start(t, "")
	ctx := t.Context()
	// Two queues on two connections, as two gateway processes have.
	var queues []*buffer.Queue
	for range 2 {
		q, err := buffer.Open(ctx, srv.Connect(t), buffer.Config{})
		if err != nil {
			t.Fatal(err)
		}
		queues = append(queues, q)
	}
	const submits, keys = 1000, 100
	ids := make([]string, submits)
	created := make([]bool, submits)
	var wg sync.WaitGroup
	for i := range submits {
		wg.Go(func() {
			job, c, err := queues[i%2].SubmitOnce(ctx, "f", fmt.Sprint("key-", i%keys), []byte("x"), "text/plain")
			if err != nil {
				t.Error(err)
				return
			}
			ids[i], created[i] = job.Id, c
		})
	}
	wg.Wait()
	byKey := map[int]string{}
	distinct := map[string]bool{}
	nCreated := 0
	for i, id := range ids {
		if prev, ok := byKey[i%keys]; ok && prev != id {
			t.Fatalf("key-%d gave jobs %s and %s", i%keys, prev, id)
		}
		byKey[i%keys] = id
		distinct[id] = true
		if created[i] {
			nCreated++
		}
	}
	if len(distinct) != keys || nCreated != keys {
		t.Errorf("%d submits with %d keys made %d jobs (%d reported created), want %d", submits, keys, len(distinct), nCreated, keys)
	}
	c, err := queues[0].Consumer(ctx, buffer.ConsumerConfig{Function: "f", MaxInFlight: 1, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if load, err := c.Load(ctx); err != nil || load.Backlog != keys {
		t.Errorf("queue holds %d jobs (%v), want %d", load.Backlog, err, keys)
	}
	// Another function's key space is its own.
	if job, c, err := queues[0].SubmitOnce(ctx, "g", "key-1", []byte("x"), "text/plain"); err != nil || !c || job.Id == byKey[1] {
		t.Errorf("same key for another function: %v, created %v, %v; want a new job", job, c, err)
	}
}

func TestOpenUpdatesChangedLimits(t *testing.T) {
	srv := buffertest.Start(t, "")
	ctx := t.Context()
	open := func(cfg buffer.Config) *buffer.Queue {
		q, err := buffer.Open(ctx, srv.Connect(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	q := open(buffer.Config{MaxJobs: 1})
	if _, err := q.Submit(ctx, "f", nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Submit(ctx, "f", nil, ""); !errors.Is(err, buffer.ErrFull) {
		t.Fatalf("second submit at MaxJobs 1: %v, want ErrFull", err)
	}
	open(buffer.Config{MaxJobs: 1}) // the same settings: nothing to change
	q = open(buffer.Config{MaxJobs: 2})
	if _, err := q.Submit(ctx, "f", nil, ""); err != nil {
		t.Errorf("submit after raising MaxJobs to 2: %v", err)
	}
}
