package buffer

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/buffer/groupcommit"
)

// The hot paths of a submit: the job's message built, and read back as a
// queued job. Run with -benchmem for allocation counts.

func BenchmarkJobMsgEncode(b *testing.B) {
	job := &sluicev1.Job{Id: NewJobID(), Function: "resize", CreateTime: timestamppb.Now(), ContentType: "application/json", Tenant: "acme"}
	payload := bytes.Repeat([]byte("x"), 1024)
	b.ReportAllocs()
	for b.Loop() {
		jobMsg(job, payload)
	}
}

func BenchmarkQueuedJobDecode(b *testing.B) {
	job := &sluicev1.Job{Id: NewJobID(), Function: "resize", CreateTime: timestamppb.Now(), ContentType: "application/json", Tenant: "acme"}
	msg := jobMsg(job, bytes.Repeat([]byte("x"), 1024))
	raw := &jetstream.RawStreamMsg{Subject: msg.Subject, Header: msg.Header, Data: msg.Data, Time: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if queuedJob(raw).Id != job.Id {
			b.Fatal("wrong job")
		}
	}
}

// benchQueue opens a queue on a fresh embedded JetStream that flushes to
// disk before every ack, as Sluice runs by default.
func benchQueue(b *testing.B, batch groupcommit.Config) (*Queue, *nats.Conn) {
	b.Helper()
	e, err := embedded.Start(embedded.Config{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	q, err := Open(context.Background(), nc, Config{Batch: batch, MaxBytes: 8 << 30})
	if err != nil {
		b.Fatal(err)
	}
	return q, nc
}

// BenchmarkDurableSubmit compares, in one run, 1 KiB durable submits from
// 200 concurrent callers: group-committed (Sluice's default), one message
// per publish (group commit off: the baseline any client gets from
// JetStream), and group commit with a lone caller.
func BenchmarkDurableSubmit(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 1024)
	for _, tc := range []struct {
		name    string
		batch   groupcommit.Config
		callers int
	}{
		{"group-commit/callers=200", groupcommit.Config{}, 200},
		{"one-per-publish/callers=200", groupcommit.Config{MaxBatch: 1, MaxInFlight: 200}, 200},
		{"group-commit/callers=1", groupcommit.Config{}, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			q, _ := benchQueue(b, tc.batch)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			work := make(chan struct{}, b.N)
			for range b.N {
				work <- struct{}{}
			}
			close(work)
			done := make(chan error, tc.callers)
			for range tc.callers {
				go func() {
					for range work {
						if _, err := q.Submit(context.Background(), "bench", payload, ""); err != nil {
							done <- err
							return
						}
					}
					done <- nil
				}()
			}
			for range tc.callers {
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
