package bench

import (
	"testing"
	"time"
)

func TestIdealDrain(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name string
		m    rampModel
		n    int
		want time.Duration
	}{
		{"one environment", rampModel{limit: 1, handler: 100 * ms}, 10, time.Second},
		{"ten at once", rampModel{limit: 10, handler: 100 * ms}, 100, time.Second},
		{"cold start first", rampModel{limit: 10, handler: 100 * ms, coldStart: 500 * ms}, 100, 1500 * ms},
		// 1 environment, +60/min = one more each second: in 3s the
		// environments have done 3+2+1 = 6 jobs of 1s.
		{"ramp", rampModel{limit: 100, initial: 1, perMinute: 60, handler: time.Second}, 6, 3 * time.Second},

		// Schedules. 10 jobs of 1s at 0s; at 1s only 5 may run: 5 at 1s
		// and 5 at 2s, done at 3s.
		{"limit drops", rampModel{limit: 10, handler: time.Second, schedule: []limitStep{{time.Second, 5}}}, 20, 3 * time.Second},
		// The drop at 500ms stops none of the 10 running; from 1s, 2 at a
		// time: 10 + 2 (1s) + 2 (2s), done at 3s.
		{"a drop stops no running job", rampModel{limit: 10, handler: time.Second, schedule: []limitStep{{500 * ms, 2}}}, 14, 3 * time.Second},
		// 5 at 0s; at 1s 10: the 5 warm ones and 5 new, done at 2s.
		{"limit rises", rampModel{limit: 5, handler: time.Second, schedule: []limitStep{{time.Second, 10}}}, 15, 2 * time.Second},
		// With cold starts of 500ms: 5 run 0-1.5s; at 1s 5 new ones start
		// cold (1-2.5s); at 1.5s the first 5, warm, take the last 5
		// (1.5-2.5s).
		{"a rise meets cold starts", rampModel{limit: 5, handler: time.Second, coldStart: 500 * ms,
			schedule: []limitStep{{time.Second, 10}}}, 15, 2500 * ms},
		// 2 run 0-1s; from 500ms the limit is 1: 1 runs 1-2s; from 1.5s it
		// is 3: the idle warm environment and a new one start, 1.5-2.5s.
		{"down then up", rampModel{limit: 2, handler: time.Second,
			schedule: []limitStep{{500 * ms, 1}, {1500 * ms, 3}}}, 5, 2500 * ms},

		// Rate caps. 10 starts a second, one at a time: starts at 0, 100ms,
		// …, 900ms; the last done at 1s.
		{"rate", rampModel{limit: 100, handler: 100 * ms, rate: 10}, 10, time.Second},
		// A bucket of 5: 5 at 0s, then one each 100ms from 100ms to 500ms.
		{"rate with a burst", rampModel{limit: 100, handler: 100 * ms, rate: 10, rateBurst: 5}, 10, 600 * ms},
		// 200/s and a bucket of 20: 20 at 0s, the other 2980 one each 5ms
		// from 5ms, the last at 14.9s, done 100ms later.
		{"rate of 200", rampModel{limit: 100, handler: 100 * ms, rate: 200, rateBurst: 20}, 3000, 15 * time.Second},
		// 150/s, one every 6.67ms: steps of 1ms do not slow it; the
		// 3001st starts at 20s.
		{"rate of 150", rampModel{limit: 100, handler: 100 * ms, rate: 150}, 3001, 20100 * ms},
		// Concurrency binds before an ample rate: 1 at a time.
		{"rate above the limit", rampModel{limit: 1, handler: 100 * ms, rate: 1000}, 5, 500 * ms},
		// The rate binds new environments too: 2/s with cold starts of
		// 1s: starts at 0, 500ms and 1s, each on a new environment (the
		// first is busy until 1.1s), the last done at 2.1s.
		{"rate and cold starts", rampModel{limit: 10, handler: 100 * ms, coldStart: time.Second, rate: 2}, 3, 2100 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := idealDrain(tc.m, tc.n); got != tc.want {
				t.Errorf("idealDrain = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestIdealPacingRows checks the ideals of bench pacing's rows against
// hand-computed drains of 3000 jobs of 100ms, and that the rows a user
// would configure shortest are configured so.
func TestIdealPacingRows(t *testing.T) {
	const ms = time.Millisecond
	rows := map[string]pacingRow{}
	for _, r := range pacingRows(100 * ms) {
		rows[r.name] = r
	}
	for _, tc := range []struct {
		row  string
		want time.Duration
	}{
		// 40 at a time after a 200ms cold start: 75 rounds of 100ms.
		{"lower-limit", 7700 * ms},
		{"lower-limit-not-adaptive", 7700 * ms},
		// The ramp allows 100 at once, the limit 40.
		{"lower-limit-scaling", 7700 * ms},
		// 20 at once, then one each 5ms from 5ms: the last at 14.9s.
		{"rate-limit", 15 * time.Second},
		// 4000 jobs: 50 at 0s (cold, to 300ms), then 50 a round from
		// 300ms to 2.9s: 1400; 20 a round from 3s to 12.9s: 2000; the last
		// 600 in 12 rounds of 50 from 13s, done at 14.2s.
		{"limit-drops", 14200 * ms},
		// 20 at 0s (cold), 20 a round from 300ms to 2.9s: 560; at 3s 20
		// warm and 30 new (cold until 3.3s), 20 a round at 3.1s and 3.2s:
		// 650; 50 a round from 3.3s: 47 rounds, done at 8s.
		{"limit-rises", 8 * time.Second},
	} {
		t.Run(tc.row, func(t *testing.T) {
			r := rows[tc.row]
			n := 3000
			if r.jobsScale > 0 {
				n = int(float64(n)*r.jobsScale + 0.5)
			}
			if got := idealDrain(r.model(), n); got != tc.want {
				t.Errorf("ideal drain of %d jobs = %v, want %v", n, got, tc.want)
			}
		})
	}
	for _, name := range []string{"lower-limit", "lower-limit-no-retry-after", "rate-limit", "jitter"} {
		want := "name: " + name + "\nurl: http://fn/\nconcurrency: 100\ntimeout: 30s\n"
		if got := rows[name].config("http://fn/"); got != want {
			t.Errorf("%s's config:\n%s\nwant the shortest:\n%s", name, got, want)
		}
	}
}
