package buffer_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/provision"
)

// TestOpenRefusesContradictingStreams checks that Open refuses, and leaves
// alone, streams and buckets whose replica count or durability contradict
// its configuration, saying what is wrong and what to do.
func TestOpenRefusesContradictingStreams(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, js jetstream.JetStream)
		cfg     buffer.Config
		want    []string // in the error
	}{
		{
			name: "replicas differ",
			prepare: func(t *testing.T, js jetstream.JetStream) {
				if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
					Name: buffer.StreamName, Subjects: []string{buffer.SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
				}); err != nil {
					t.Fatal(err)
				}
			},
			cfg:  buffer.Config{Replicas: 3},
			want: []string{"stream SLUICE_JOBS", "has 1 replicas", "asks for 3", "configure 1", "nats stream edit NAME --replicas 3"},
		},
		{
			name: "job stream in memory",
			prepare: func(t *testing.T, js jetstream.JetStream) {
				if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
					Name: buffer.StreamName, Subjects: []string{buffer.SubjectPrefix + ">"}, Storage: jetstream.MemoryStorage,
				}); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"stream SLUICE_JOBS", "Memory storage", "nats stream rm SLUICE_JOBS"},
		},
		{
			name: "state bucket in memory",
			prepare: func(t *testing.T, js jetstream.JetStream) {
				if _, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{
					Bucket: buffer.StateBucket, Storage: jetstream.MemoryStorage,
				}); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"stream KV_sluice-jobs", "Memory storage"},
		},
		{
			name: "asynchronous persist mode",
			prepare: func(t *testing.T, js jetstream.JetStream) {
				if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
					Name: buffer.StreamName, Subjects: []string{buffer.SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
					PersistMode: jetstream.AsyncPersistMode,
				}); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"stream SLUICE_JOBS", "persist_mode async"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := buffertest.Start(t, "")
			nc := s.Connect(t)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			tc.prepare(t, js)
			_, err = buffer.Open(t.Context(), nc, tc.cfg)
			if !errors.Is(err, provision.ErrDurability) {
				t.Fatalf("Open = %v, want ErrDurability", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestOpenKeepsMatchingStreams checks that a second Open with the same
// configuration, as a second gateway replica does, is no error.
func TestOpenKeepsMatchingStreams(t *testing.T) {
	s := buffertest.Start(t, "")
	for range 2 {
		if _, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{buffer.ErrFull, false},
		{buffer.ErrNotFound, false},
		{fmt.Errorf("buffer: publish: %w", nats.ErrTimeout), true},
		{fmt.Errorf("buffer: publish: %w", jetstream.ErrNoStreamResponse), true},
		{fmt.Errorf("buffer: write: %w", context.DeadlineExceeded), true},
		{buffer.ErrCommitUnknown, true},
		{fmt.Errorf("buffer: read job: %w", nats.ErrConnectionDraining), true},
		{fmt.Errorf("buffer: read job: %w", nats.ErrConnectionClosed), true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10071}, false},
		{fmt.Errorf("buffer: publish job: %w", &jetstream.APIError{Code: 409, ErrorCode: 10158}), true},
		{&jetstream.APIError{Code: 409, ErrorCode: 10164}, false},
	} {
		if got := buffer.Unavailable(tc.err); got != tc.want {
			t.Errorf("Unavailable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestSubmitOnceTakesOverAbandonedClaim: a submit that claimed an
// idempotency key and then failed to store its job (a leader election cut
// it short) leaves the key claimed. Retries with deadlines shorter than the
// claim patience must still take it over once the claim is old enough,
// rather than each wait out its own deadline for a job that will not come.
// Found by TestClusterFaultKillStreamLeader with SLUICE_FAULTS=long.
func TestSubmitOnceTakesOverAbandonedClaim(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the claim patience")
	}
	s := buffertest.Start(t, "")
	nc := s.Connect(t)
	q, err := buffer.Open(t.Context(), nc, buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	idem, err := js.KeyValue(t.Context(), buffer.IdempotencyBucket)
	if err != nil {
		t.Fatal(err)
	}
	// The claim an interrupted submit of key k leaves: a job ID never stored.
	sum := sha256.Sum256([]byte("f\x00k"))
	claimed := buffer.NewJobID()
	if _, err := idem.Create(t.Context(), hex.EncodeToString(sum[:]), []byte(claimed)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var (
		job     *sluicev1.Job
		created bool
	)
	buffertest.WaitForNoError(t, 30*time.Second, "retries with 2s deadlines take the abandoned key over", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		var err error
		job, created, err = q.SubmitOnce(ctx, "f", "k", nil, "")
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		return err
	})
	if !created {
		t.Errorf("SubmitOnce took the key over but says it did not create job %s", job.Id)
	}
	if job.Id != claimed {
		t.Errorf("the key was taken over with job %s; want the claimed ID %s, so that the key has one job", job.Id, claimed)
	}
	t.Logf("key taken over after %s", time.Since(start).Round(time.Millisecond))
	// The interrupted submit's publish lands late: the duplicate window
	// keeps it out, and the key still has one job with one message.
	late := nats.NewMsg(buffer.Subject("f", claimed))
	late.Header.Set(jetstream.MsgIDHeader, claimed)
	ack, err := js.PublishMsg(t.Context(), late)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Errorf("a late publish of job %s was stored again", claimed)
	}
	job, created, err = q.SubmitOnce(t.Context(), "f", "k", nil, "")
	if err != nil || created || job.Id != claimed {
		t.Errorf("SubmitOnce after the takeover: %v, created %v, %v; want job %s", job.GetId(), created, err, claimed)
	}
}
