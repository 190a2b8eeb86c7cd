package circuit

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer/shared"
)

// The recent outcomes open the circuit once enough of them failed, and
// judge a closed circuit afresh after that; outcomes older than the window
// do not count.
func TestOutcomesOpenAtTheFailureRatio(t *testing.T) {
	p := Policy{FailureRatio: 0.5, MinAttempts: 4, Window: time.Minute}
	var o Outcomes
	now := time.Unix(1000, 0)
	for i, failed := range []bool{true, false, true} {
		if open, _, _ := o.Add(&p, now, failed); open {
			t.Fatalf("opened after %d attempts; it takes %d", i+1, p.MinAttempts)
		}
	}
	open, failures, total := o.Add(&p, now, false)
	if !open || failures != 2 || total != 4 {
		t.Fatalf("2 of 4 failed at ratio 0.5: open %v, %d of %d", open, failures, total)
	}
	if open, _, total := o.Add(&p, now, true); open || total != 1 {
		t.Errorf("after opening, one failure: open %v with %d counted; want closed, 1", open, total)
	}
	later := now.Add(2 * time.Minute)
	for range 3 {
		o.Add(&p, later, false)
	}
	if open, failures, total := o.Add(&p, later, true); open || failures != 1 || total != 4 {
		t.Errorf("a failure from before the window counted: open %v, %d of %d", open, failures, total)
	}
}

// Open, a probe, its failure doubling the cooldown up to the cap, and its
// success closing the circuit; each change only from the state it expects.
func TestCircuitStates(t *testing.T) {
	p := Policy{Cooldown: time.Second, MaxCooldown: 3 * time.Second}
	var s shared.PacingState
	now := time.Unix(1000, 0)
	if ClaimProbe(&s, now, time.Second) || ProbeFailed(&s, &p, now) || ProbeSucceeded(&s, now) {
		t.Fatal("a closed circuit changed by a probe")
	}
	if wait, must := Wait(s.Circuit, now); must || wait != 0 {
		t.Fatalf("a closed circuit holds jobs for %v", wait)
	}
	if !Open(&s, &p, now, 5, 8) || s.Circuit.State != shared.CircuitOpen || s.Circuit.Reason != "5 of the last 8 attempts failed" {
		t.Fatalf("open: %+v", s.Circuit)
	}
	if Open(&s, &p, now, 5, 8) {
		t.Error("an open circuit opened again")
	}
	if wait, must := Wait(s.Circuit, now); !must || wait < time.Second || wait >= 2*time.Second {
		t.Errorf("an open circuit holds a job for %v; want its cooldown (1s) plus under a second's spread", wait)
	}
	if ClaimProbe(&s, now.Add(500*time.Millisecond), time.Second) {
		t.Error("probe claimed during the cooldown")
	}
	for i, want := range []time.Duration{2 * time.Second, 3 * time.Second, 3 * time.Second} {
		now = s.Circuit.Until
		if !ClaimProbe(&s, now, time.Second) || s.Circuit.State != shared.CircuitHalfOpen {
			t.Fatalf("probe %d not claimed after the cooldown: %+v", i+1, s.Circuit)
		}
		if ClaimProbe(&s, now, time.Second) {
			t.Fatalf("probe %d claimed twice", i+1)
		}
		if !ProbeFailed(&s, &p, now) || s.Circuit.Cooldown != want {
			t.Fatalf("failed probe %d: cooldown %v, want %v", i+1, s.Circuit.Cooldown, want)
		}
	}
	now = s.Circuit.Until
	ClaimProbe(&s, now, time.Second)
	if !ProbeSucceeded(&s, now) || s.Circuit.State != shared.CircuitClosed || s.Circuit.Opens != 4 {
		t.Errorf("after a good probe: %+v; want closed, with the 4 openings counted", s.Circuit)
	}
}
