package buffer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/buffer/provision"
)

// oldJob publishes a job's message as an earlier Sluice did, and returns
// the job's ID; "" if the stream did not acknowledge it.
func oldJob(t *testing.T, js jetstream.JetStream, payload string) string {
	t.Helper()
	job := &sluicev1.Job{Id: NewJobID(), Function: "f", CreateTime: timestamppb.Now(), ContentType: "text/plain"}
	if _, err := js.PublishMsg(t.Context(), jobMsg(job, []byte(payload)), jetstream.WithRetryAttempts(0)); err != nil {
		t.Logf("%s: not stored (%v)", payload, err)
		return ""
	}
	return job.Id
}

// workQueueServer starts a server holding an earlier Sluice's work-queue
// job stream with waiting jobs in it, and returns a connection to it and
// the jobs' payloads by ID.
func workQueueServer(t *testing.T, waiting int) (*nats.Conn, jetstream.JetStream, map[string]string) {
	t.Helper()
	e, err := embedded.Start(embedded.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	old := jetstream.StreamConfig{Name: StreamName, Subjects: []string{SubjectPrefix + ">"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}
	if _, err := js.CreateStream(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	payloadOf := map[string]string{}
	for i := range waiting {
		p := fmt.Sprintf("waiting %d", i)
		payloadOf[oldJob(t, js, p)] = p
	}
	return nc, js, payloadOf
}

// checkUpgraded checks that q's job stream holds each of the jobs, once.
func checkUpgraded(t *testing.T, q *Queue, js jetstream.JetStream, payloadOf map[string]string) {
	t.Helper()
	if r := q.stream.CachedInfo().Config.Retention; r != jetstream.LimitsPolicy {
		t.Errorf("retention after Open: %v, want limits", r)
	}
	for id, p := range payloadOf {
		if job, err := q.Get(t.Context(), id); err != nil || job.State != sluicev1.Job_QUEUED || job.PayloadSize != int64(len(p)) {
			t.Errorf("job %q (%s) after the upgrade: %v, %v; want QUEUED", p, id, job, err)
		}
	}
	c, err := q.Consumer(t.Context(), ConsumerConfig{Function: "f", MaxInFlight: 100, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	ds := fetchAll(t, c, 100, time.Second)
	for _, d := range ds {
		got[d.JobID] = string(d.Payload)
		if d.ContentType != "text/plain" {
			t.Errorf("job %s delivered with content type %q", d.JobID, d.ContentType)
		}
	}
	if len(ds) != len(payloadOf) {
		t.Errorf("delivered %d jobs: %v; want each of %v once", len(ds), got, payloadOf)
	}
	for id, p := range payloadOf {
		if got[id] != p {
			t.Errorf("job %s delivered with payload %q, want %q", id, got[id], p)
		}
	}
	if _, err := js.Stream(t.Context(), provision.UpgradeStream); err == nil {
		t.Errorf("stream %s left behind", provision.UpgradeStream)
	}
}

// #19 item 13: opening over the work-queue stream of an earlier Sluice
// loses no job, neither one waiting in it nor one an older replica submits
// while the stream is replaced.
func TestWorkQueueUpgradeLosesNoJob(t *testing.T) {
	for _, waiting := range []int{0, 3} {
		t.Run(fmt.Sprintf("%d waiting", waiting), func(t *testing.T) {
			nc, js, payloadOf := workQueueServer(t, waiting)
			// An older replica submits at every step of the upgrade.
			testHookUpgrade = func(step string) {
				if id := oldJob(t, js, step); id != "" {
					payloadOf[id] = step
				}
			}
			t.Cleanup(func() { testHookUpgrade = nil })
			q, err := Open(t.Context(), nc, Config{})
			if err != nil {
				t.Fatalf("Open over a work queue with %d jobs: %v", waiting, err)
			}
			testHookUpgrade = nil
			checkUpgraded(t, q, js, payloadOf)
		})
	}
}

// An upgrade cut short at any step is finished by the next Open, and
// leaves each job once.
func TestWorkQueueUpgradeInterrupted(t *testing.T) {
	for _, stop := range []string{"found", "sealed", "copied", "deleted", "moved"} {
		t.Run(stop, func(t *testing.T) {
			nc, js, payloadOf := workQueueServer(t, 3)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			testHookUpgrade = func(step string) {
				if step == stop {
					cancel() // the process dies here
				}
			}
			t.Cleanup(func() { testHookUpgrade = nil })
			if _, err := Open(ctx, nc, Config{}); err == nil {
				t.Fatalf("Open cut short after %s: no error", stop)
			}
			testHookUpgrade = nil
			q, err := Open(t.Context(), nc, Config{})
			if err != nil {
				t.Fatalf("Open after an upgrade cut short after %s: %v", stop, err)
			}
			checkUpgraded(t, q, js, payloadOf)
		})
	}
}
