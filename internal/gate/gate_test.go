package gate_test

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/sluicehq/sluice/internal/gate"
)

func TestGateHoldsWorkWhileShutAndEndsItWhenShutting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithCancel(t.Context())
		g := gate.New(parent)
		got := make(chan context.Context)
		go func() { got <- g.Wait() }()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("Wait returned while the gate was shut")
		default:
		}
		g.Open()
		work := <-got
		if work == nil || work.Err() != nil {
			t.Fatalf("Wait after Open = %v, want a live context", work)
		}
		g.Shut()
		if work.Err() == nil {
			t.Error("the work's context lives on after Shut")
		}
		g.Open()
		if again := g.Wait(); again == nil || again.Err() != nil {
			t.Errorf("Wait after a second Open = %v, want a live context", again)
		}
		g.Shut()
		go func() { got <- g.Wait() }()
		cancel()
		if w := <-got; w != nil {
			t.Errorf("Wait once the parent ended = %v, want nil", w)
		}
	})
}
