package scale

import (
	"io"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/gateway"
)

// TestScaleConfig checks that the config bench scale writes is one sluice
// serve takes: every function at its own path of the bench's server, every
// tenant with its key, and the key burst's function last, with
// key_concurrency 1.
func TestScaleConfig(t *testing.T) {
	b, err := ParseFlags([]string{"--functions", "30", "--tenants", "20", "--first-jobs", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.ParseConfig([]byte(scaleConfig(b, "127.0.0.1:1234")))
	if err != nil {
		t.Fatalf("the generated config: %v", err)
	}
	if len(cfg.Functions) != 32 || len(cfg.Tenants) != 20 {
		t.Fatalf("%d functions and %d tenants, want 32 (30, the keyed one and its twin) and 20", len(cfg.Functions), len(cfg.Tenants))
	}
	if f := cfg.Functions[30]; f.Name != keyedFunctionName || f.KeyConcurrency != 1 || f.Concurrency != 50 {
		t.Errorf("the last function: %s, key_concurrency %d, concurrency %d; want keyed, 1, 50", f.Name, f.KeyConcurrency, f.Concurrency)
	}
	if f := cfg.Functions[7]; f.Name != scaleFunction(7) || f.URL != "http://127.0.0.1:1234/"+scaleFunction(7) || f.Concurrency != 10 || f.Fairness {
		t.Errorf("function 7: %s at %s, concurrency %d, fairness %v", f.Name, f.URL, f.Concurrency, f.Fairness)
	}
	if !cfg.Functions[0].Fairness {
		t.Error("function 0 is not fair; --fair is 1 by default")
	}
	if keys := cfg.Tenants[19].APIKeys; len(keys) != 1 || keys[0] != gateway.HashKey(scaleKey(19)) {
		t.Errorf("tenant 19's keys: %v, want the hash of %q", keys, scaleKey(19))
	}
}

func TestParseScaleFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // in the error; "" for none
	}{
		{nil, ""},
		{[]string{"--jetstream", "process"}, ""},
		{[]string{"--functions", "10", "--first-jobs", "11"}, "needs as many functions"},
		{[]string{"--jetstream", "elsewhere"}, "neither gateway nor process"},
		{[]string{"--idle", "0s"}, "must be positive"},
		{[]string{"--tenants", "0"}, "must be positive"},
		{[]string{"--functions", "5", "--first-jobs", "5", "--fair", "6"}, "--fair 6 is out of range"},
		{[]string{"--keys", "0"}, "--keys, --key-window and --key-submitters must be positive"},
		{[]string{"--key-jobs", "-1"}, "--key-jobs and --key-run not negative"},
	} {
		b, err := ParseFlags(c.args, io.Discard)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		case c.want == "" && b.InGateway != (b.jetstream == "gateway"):
			t.Errorf("%v: InGateway %v with --jetstream %s", c.args, b.InGateway, b.jetstream)
		}
	}
}
