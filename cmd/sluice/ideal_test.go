package main

import (
	"testing"
	"time"
)

func TestIdealDrain(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    rampModel
		n    int
		want time.Duration
	}{
		{"one environment", rampModel{limit: 1, handler: 100 * time.Millisecond}, 10, time.Second},
		{"ten at once", rampModel{limit: 10, handler: 100 * time.Millisecond}, 100, time.Second},
		{"cold start first", rampModel{limit: 10, handler: 100 * time.Millisecond, coldStart: 500 * time.Millisecond}, 100, 1500 * time.Millisecond},
		// 1 environment, +60/min = one more each second: in 3s the
		// environments have done 3+2+1 = 6 jobs of 1s.
		{"ramp", rampModel{limit: 100, initial: 1, perMinute: 60, handler: time.Second}, 6, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := idealDrain(tc.m, tc.n); got != tc.want {
				t.Errorf("idealDrain = %v, want %v", got, tc.want)
			}
		})
	}
}
