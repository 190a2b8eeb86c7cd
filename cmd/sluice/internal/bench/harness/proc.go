package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// The benchmarks' one reader of /proc (Linux): a process's CPU time and
// resident memory, and the machine's CPU time.

// userHZ is the unit of /proc's CPU times: USER_HZ ticks, 100 a second.
const userHZ = 100

// ticks converts a count of USER_HZ ticks to a duration.
func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }

// processCPU reads a process's user plus system CPU time.
func processCPU(pid int) (time.Duration, error) {
	fields, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	// utime and stime are fields 14 and 15 of stat, 12 and 13 after the
	// command name.
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return ticks(utime + stime), nil
}

// procStat reads /proc/PID/stat and returns its fields after the command
// name (field 3, the state, onwards). The name, in parentheses, may hold
// spaces and parentheses, ") " too: it ends at the last ')'.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return parseProcStat(b)
}

// parseProcStat is procStat's parsing of a stat file's text.
func parseProcStat(b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat: no command name")
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return nil, errors.New("malformed /proc stat: too few fields")
	}
	return fields, nil
}

// Memory is a process's resident memory, now (VmRSS) and at its peak
// (VmHWM), in bytes.
type Memory struct{ RSS, Peak int64 }

// processRSS reads a process's resident set size.
func processRSS(pid int) (int64, error) {
	m, err := processMemory(pid)
	return m.RSS, err
}

// processMemory reads a process's resident memory and its peak.
func processMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	fields := map[string]*int64{"VmRSS:": &m.RSS, "VmHWM:": &m.Peak}
	for line := range strings.Lines(string(b)) {
		for name, v := range fields {
			if rest, ok := strings.CutPrefix(line, name); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err != nil {
					return Memory{}, fmt.Errorf("/proc/%d/status: %s %w", pid, name, err)
				}
				*v = kb << 10
				delete(fields, name)
			}
		}
	}
	if len(fields) > 0 {
		return Memory{}, fmt.Errorf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return m, nil
}

// machineCPU reads the machine's busy and total CPU time, summed over its
// cores, from /proc/stat.
func machineCPU() (busy, all time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, 0, errors.New("malformed /proc/stat")
	}
	// user nice system idle iowait irq softirq steal, in USER_HZ ticks.
	var t [8]int64
	for i := range t {
		if t[i], err = strconv.ParseInt(fields[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	idle := t[3] + t[4]
	var sum int64
	for _, n := range t {
		sum += n
	}
	return ticks(sum - idle), ticks(sum), nil
}
