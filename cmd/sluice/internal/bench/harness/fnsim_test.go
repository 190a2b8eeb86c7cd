package harness

import (
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

func TestFnsimFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		want    func(*fnsim.Config) // changes from the defaults; nil if an error is wanted
		wantErr string
	}{
		{name: "defaults", want: func(*fnsim.Config) {}},
		{name: "schedule", args: []string{"--schedule", "3s:20,13s:50"}, want: func(c *fnsim.Config) {
			c.Schedule = []fnsim.Step{{After: 3 * time.Second, Concurrency: 20}, {After: 13 * time.Second, Concurrency: 50}}
		}},
		{name: "rate, burst and Retry-After", args: []string{"--rate", "200", "--rate-burst", "5", "--no-retry-after", "--retry-after", "3s"},
			want: func(c *fnsim.Config) {
				c.RatePerSecond, c.RateBurst, c.OmitRetryAfter, c.RetryAfter = 200, 5, true, 3*time.Second
			}},
		{name: "schedule syntax", args: []string{"--schedule", "3s=20"}, wantErr: `step "3s=20": want AFTER:LIMIT`},
		{name: "schedule count", args: []string{"--schedule", "3s:many"}, wantErr: `step "3s:many": want AFTER:LIMIT`},
		{name: "schedule out of order", args: []string{"--schedule", "13s:50,3s:20"}, wantErr: "--schedule: step 2 (3s:20) must come later than step 1 (13s:50)"},
		{name: "schedule negative limit", args: []string{"--schedule", "3s:-1"}, wantErr: "--schedule: step 1 (3s:-1): the limit must not be negative"},
		{name: "schedule negative time", args: []string{"--schedule", "-3s:1"}, wantErr: "--schedule: step 1 (-3s:1): the time must not be negative"},
		{name: "negative rate", args: []string{"--rate", "-1"}, wantErr: "--rate and --rate-burst must not be negative"},
		{name: "burst without rate", args: []string{"--rate-burst", "5"}, wantErr: "--rate-burst needs --rate"},
		{name: "zero Retry-After", args: []string{"--retry-after", "0s"}, wantErr: "--retry-after must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sim FnsimFlags
			fs := flag.NewFlagSet("fnsim", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			sim.Register(fs, "")
			defaults := sim.Config
			err := cli.ParseFlags(fs, tc.args)
			if err == nil {
				err = sim.Check("")
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := defaults
			tc.want(&want)
			if !reflect.DeepEqual(sim.Config, want) {
				t.Errorf("config %+v, want %+v", sim.Config, want)
			}

			// args gives the same config back, as the child process of a
			// benchmark parses it.
			var again FnsimFlags
			fs2 := flag.NewFlagSet("fnsim", flag.ContinueOnError)
			again.Register(fs2, "")
			if err := cli.ParseFlags(fs2, sim.Args()); err != nil {
				t.Fatalf("args %q: %v", sim.Args(), err)
			}
			if !reflect.DeepEqual(again.Config, sim.Config) {
				t.Errorf("args %q give %+v, want %+v", sim.Args(), again.Config, sim.Config)
			}
		})
	}
}
