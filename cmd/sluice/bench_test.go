package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
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
