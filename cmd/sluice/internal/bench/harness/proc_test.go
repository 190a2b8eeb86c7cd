package harness

import (
	"os"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	for _, c := range []struct {
		name, stat string
		utime      string // field 14 of stat, 12 after the name
		fail       bool
	}{
		{name: "plain", stat: "42 (sluice) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 12 0 100 1000 10", utime: "7"},
		{name: "spaces", stat: "42 (a b c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 12 0 100 1000 10", utime: "7"},
		{name: "close-paren-space", stat: "42 (evil) 1 2 3) R 1 42 42 0 -1 4194560 100 0 0 0 8 3 0 0 20 0 12 0 100 1000 10", utime: "8"},
		{name: "no name", stat: "42 S 1", fail: true},
		{name: "short", stat: "42 (x) S 1 2", fail: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := parseProcStat([]byte(c.stat))
			if c.fail {
				if err == nil {
					t.Fatalf("parsed %q: %v, want an error", c.stat, f)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f[0] != "S" && f[0] != "R" {
				t.Errorf("state = %q", f[0])
			}
			if f[11] != c.utime {
				t.Errorf("utime = %q, want %q", f[11], c.utime)
			}
		})
	}
}

func TestProcessReaders(t *testing.T) {
	if _, err := processCPU(os.Getpid()); err != nil {
		t.Errorf("processCPU: %v", err)
	}
	if rss, err := processRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("processRSS = %d, %v", rss, err)
	}
	if m, err := processMemory(os.Getpid()); err != nil || m.RSS <= 0 || m.Peak < m.RSS {
		t.Errorf("processMemory = %+v, %v", m, err)
	}
	if busy, all, err := machineCPU(); err != nil || busy > all || all <= 0 {
		t.Errorf("machineCPU = %s, %s, %v", busy, all, err)
	}
}
