package server

import (
	"math"
	"runtime/debug"
	"testing"
	"testing/fstest"
)

func TestTuneGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	current := func() int {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	cases := []struct {
		name     string
		gogc     string
		embedded bool
		want     int
	}{
		{"gateway on an external JetStream", "", false, gatewayGCPercent},
		{"process holding JetStream", "", true, embeddedGCPercent},
		{"GOGC set wins, external", "150", false, 100},
		{"GOGC set wins, embedded", "150", true, 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GOGC", c.gogc)
			debug.SetGCPercent(100) // TuneGC changes it, or leaves it at 100
			TuneGC(c.embedded)
			if got := current(); got != c.want {
				t.Errorf("GOGC after TuneGC = %d, want %d", got, c.want)
			}
		})
	}
}

// TestSetMemoryLimit: 90% of a container's memory limit (cgroup v2 or v1)
// becomes the runtime's soft limit; none for no limit ("max", v1's
// unlimited), and none over a GOMEMLIMIT the environment sets.
func TestSetMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	const mi = 1 << 20
	cases := []struct {
		name, env string
		files     fstest.MapFS
		want      int64
	}{
		{"cgroup v2 limit", "", fstest.MapFS{"sys/fs/cgroup/memory.max": {Data: []byte("536870912\n")}}, 512 * mi * 9 / 10},
		{"cgroup v2 without a limit", "", fstest.MapFS{"sys/fs/cgroup/memory.max": {Data: []byte("max\n")}}, 0},
		{"cgroup v1 limit", "", fstest.MapFS{"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("1073741824")}}, 1024 * mi * 9 / 10},
		{"cgroup v1 unlimited", "", fstest.MapFS{"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("9223372036854771712")}}, 0},
		{"no cgroup", "", fstest.MapFS{}, 0},
		{"GOMEMLIMIT set wins", "400MiB", fstest.MapFS{"sys/fs/cgroup/memory.max": {Data: []byte("536870912")}}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", c.env)
			debug.SetMemoryLimit(math.MaxInt64)
			got := SetMemoryLimit(c.files)
			if got < c.want-1 || got > c.want+1 {
				t.Fatalf("SetMemoryLimit = %d, want %d", got, c.want)
			}
			if runtime := debug.SetMemoryLimit(-1); c.want > 0 && runtime != got || c.want == 0 && runtime != math.MaxInt64 {
				t.Errorf("the runtime's limit is %d after SetMemoryLimit returned %d", runtime, got)
			}
		})
	}
}
