package buffer_test

import (
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
)

// A gateway that starts where the streams exist already changes none of
// them: an update needs every peer of a replicated stream, so one that
// restarts during a fault would fail to start for nothing.
func TestOpeningAgainUpdatesNoStream(t *testing.T) {
	s := buffertest.Start(t, "")
	if _, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{}); err != nil {
		t.Fatal(err)
	}
	nc := s.Connect(t)
	var updates atomic.Int64
	if _, err := nc.Subscribe("$JS.API.STREAM.UPDATE.>", func(m *nats.Msg) {
		updates.Add(1)
		t.Logf("updated: %s", m.Subject)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := buffer.Open(t.Context(), s.Connect(t), buffer.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := updates.Load(); n != 0 {
		t.Errorf("opening again updated %d streams, want none", n)
	}
}
