package buffer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
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
			if !errors.Is(err, buffer.ErrDurability) {
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
		{&jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10071}, false},
	} {
		if got := buffer.Unavailable(tc.err); got != tc.want {
			t.Errorf("Unavailable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
