package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/buffer/buffertest"
)

// TestMain lets the test binary stand in for the sluice binary: the burst
// benchmark starts its gateways and platforms as child processes of
// os.Executable, which under go test is this binary.
func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_TEST_AS_MAIN") == "1" {
		if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString("sluice: " + err.Error() + "\n")
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchValue reads one number from a row of the burst table.
func benchValue(t *testing.T, out, row string, col int) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + row + `\s+(\d+)\s+(\d+|-)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q row in:\n%s", row, out)
	}
	v, _ := strconv.Atoi(m[col])
	return v
}

func TestBenchBurstSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Setenv("SLUICE_TEST_AS_MAIN", "1")
	var out bytes.Buffer
	var errs buffertest.LockedBuffer // written by the children's output copiers
	err := run(t.Context(), []string{"bench", "burst", "--jobs", "200", "--concurrency", "10", "--initial", "2",
		"--per-minute", "600", "--duration", "20ms", "--cold-start", "50ms", "--gateways", "3", "--submitters", "8"}, &out, &errs)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errs.String())
	}
	t.Log("\n" + out.String())
	s := out.String()
	if got := benchValue(t, s, "completed", 1); got != 200 {
		t.Errorf("sluice completed %d of 200", got)
	}
	if got := benchValue(t, s, "max concurrent", 1); got > 10 {
		t.Errorf("three gateways put %d in flight; the limit is 10", got)
	}
	if got := benchValue(t, s, "throttled responses", 1); got != 0 {
		t.Errorf("sluice met %d throttles with matched limits", got)
	}
	if got := benchValue(t, s, "throttled responses", 2); got == 0 {
		t.Errorf("the direct client met no throttles; the burst should overwhelm the ramp")
	}
}

// TestBenchScaleSmall runs bench scale at a small scale: the gateway
// starts with its functions and tenants, is measured idle, and every first
// job into an idle function reaches its function and succeeds, and so do
// a small key burst's jobs, never two of a key at once. The figures
// themselves are not checked: under -race and beside other tests they say
// little.
func TestBenchScaleSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Setenv("SLUICE_TEST_AS_MAIN", "1")
	var out bytes.Buffer
	var errs buffertest.LockedBuffer // written by the children's output copiers
	err := run(t.Context(), []string{"bench", "scale", "--functions", "50", "--tenants", "50", "--settle", "2s", "--idle", "2s",
		"--first-jobs", "10", "--spacing", "50ms", "--key-jobs", "200", "--keys", "100"}, &out, &errs)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errs.String())
	}
	t.Log("\n" + out.String())
	s := out.String()
	if !regexp.MustCompile(`(?m)^\s*gateway\s+\d+\.\d+\s+[1-9]\d*\s+[1-9]\d*\s*$`).MatchString(s) {
		t.Errorf("no gateway row with CPU and memory in the idle table")
	}
	if !regexp.MustCompile(`SUCCEEDED\s+200 of 200\s+200 of 200`).MatchString(s) {
		t.Errorf("the key burst's jobs, keyed and not, did not all succeed")
	}
	for _, want := range []string{"function calls before the first job: 0", "outcomes: 10 of 10 SUCCEEDED", "keyed drain ÷ unkeyed drain"} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in the output", want)
		}
	}
}
