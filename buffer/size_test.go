package buffer_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
)

// stockMaxPayload is a stock nats-server's max_payload: 1 MB.
const stockMaxPayload = 1 << 20

// stockQueue opens a queue with cfg on a fresh embedded server that has a
// stock server's max_payload.
func stockQueue(t *testing.T, cfg buffer.Config) *buffer.Queue {
	t.Helper()
	srv, err := buffer.StartEmbedded(buffer.EmbeddedConfig{StoreDir: t.TempDir(), MaxPayload: stockMaxPayload})
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
	q := stockQueue(t, buffer.Config{Batch: buffer.BatchConfig{Linger: 200 * time.Millisecond, MaxInFlight: 1}})
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
