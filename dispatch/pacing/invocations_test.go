package pacing

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// TestInvocationsGateAndEvidence runs on synctest's clock: the fourth
// send's wait for room that must not come, and the real-clock spacing of
// sends that explore above the known level, take no time and cannot flake.
func TestInvocationsGateAndEvidence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := t0
		now := func() time.Time { return clock }
		v := NewInvocations(3, 3)
		ctx := context.Background()
		var taken []Ticket
		for range 3 {
			tk, err := v.Acquire(ctx, 0, now)
			if err != nil {
				t.Fatal(err)
			}
			taken = append(taken, tk)
			clock = clock.Add(time.Millisecond)
		}
		if taken[2].level != 2 {
			t.Errorf("third send saw %d in flight, want 2", taken[2].level)
		}
		// No room: a fourth waits until one is done.
		waitCtx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if _, err := v.Acquire(waitCtx, 0, now); err == nil {
			t.Fatal("a fourth send found room in a window of 3")
		}
		got := make(chan Ticket)
		go func() {
			tk, _ := v.Acquire(ctx, 5, now)
			got <- tk
		}()
		v.Done(taken[0], false, 100*time.Millisecond)
		fourth := <-got
		if fourth.level != 2+5 {
			t.Errorf("send with 2 here and 5 elsewhere in flight saw %d", fourth.level)
		}

		// The fourth is refused with fewer in flight than the third was
		// taken with a moment ago: a rate, not a concurrency limit, if the
		// third was clearly above it.
		ev := v.Evidence(fourth, 0)
		if ev.TakenAbove || ev.InFlight != 7 {
			t.Errorf("evidence %+v: nothing was taken clearly above 7", ev)
		}
		v.Done(fourth, true, time.Millisecond)
		v.SetRoom(10)
		lone, _ := v.Acquire(ctx, 0, now) // 2 in flight here now
		ev = v.Evidence(lone, 100)
		if ev.InFlight != 2 || ev.TakenAbove {
			t.Errorf("evidence %+v: want 2 in flight and nothing taken above 2+2", ev)
		}
		clock = clock.Add(time.Millisecond)
		high, _ := v.Acquire(ctx, 40, now) // taken with 43 in flight
		v.Done(high, false, 100*time.Millisecond)
		clock = clock.Add(time.Millisecond)
		low, _ := v.Acquire(ctx, 0, now)
		ev = v.Evidence(low, 100)
		if !ev.TakenAbove {
			t.Errorf("evidence %+v: a send taken with 43 in flight just before one refused with %d says rate", ev, low.level)
		}
		// Six taken (or still running) within a few milliseconds: a rate over
		// the shortest span counted, a tenth of a second, plus 100 elsewhere.
		if ev.StartRate != 6/minGrowEvery.Seconds()+100 {
			t.Errorf("start rate %v, want 6 in %v plus 100 elsewhere", ev.StartRate, minGrowEvery)
		}
		if ev.Took != 100*time.Millisecond {
			t.Errorf("typical duration %v, want 100ms", ev.Took)
		}
		// A second later the taken send is out of the horizon.
		clock = clock.Add(2 * time.Second)
		later, _ := v.Acquire(ctx, 0, now)
		if ev := v.Evidence(later, 0); ev.TakenAbove || ev.StartRate != 1/minGrowEvery.Seconds() {
			t.Errorf("evidence 2s later %+v: want nothing taken above and only itself in the rate", ev)
		}
	})
}

func TestThrottleSpreadTellsRateFromConcurrency(t *testing.T) {
	for _, tc := range []struct {
		name     string
		inFlight []int
		rates    []float64
		rate     bool
	}{
		{"refused at counts far apart, one rate: a rate limit", []int{27, 21, 28, 19, 23, 17}, []float64{205, 210, 208, 212, 206, 209}, true},
		{"refused at one count: a concurrency limit", []int{40, 41, 40, 39, 41, 40}, []float64{400, 395, 402, 398, 401, 399}, false},
		{"a limit that fell: both move", []int{49, 45, 38, 30, 24, 20}, []float64{480, 420, 350, 280, 230, 200}, false},
		{"too few to tell", []int{27, 17}, []float64{205, 206}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewInvocations(100, 100)
			var ev Evidence
			for i := range tc.inFlight {
				ev = Evidence{InFlight: tc.inFlight[i], StartRate: tc.rates[i]}
				v.judgeSpread(&ev, t0.Add(time.Duration(i)*300*time.Millisecond))
			}
			if ev.SpreadSaysRate != tc.rate {
				t.Errorf("spread says rate: %v, want %v", ev.SpreadSaysRate, tc.rate)
			}
			if tc.rate && ev.InFlightSeen != 28 {
				t.Errorf("most in flight seen %d, want 28", ev.InFlightSeen)
			}
		})
	}
}
