package buffer_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/buffer"
)

// A server's default limit of consumers per stream (1,000 on a stock
// server; 3 here) does not bound the job stream: its own MaxConsumers
// does, and a consumer past it is refused with JetStream's reason.
func TestJobStreamConsumersAreBoundByMaxConsumers(t *testing.T) {
	srv, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoSigs: true, NoLog: true,
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	q, err := buffer.Open(t.Context(), nc, buffer.Config{MaxConsumers: 5})
	if err != nil {
		t.Fatal(err)
	}
	consumer := func(i int) error {
		_, err := q.Consumer(t.Context(), buffer.ConsumerConfig{Function: fmt.Sprintf("f%d", i), MaxInFlight: 1, AckWait: time.Minute})
		return err
	}
	for i := range 5 {
		if err := consumer(i); err != nil {
			t.Fatalf("consumer %d of 5 allowed (the server's default is 3): %v", i+1, err)
		}
	}
	if err := consumer(5); err == nil || !strings.Contains(err.Error(), "maximum consumers") {
		t.Errorf("a sixth consumer: %v; want JetStream's maximum consumers limit", err)
	}
}
