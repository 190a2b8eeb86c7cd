package server

import (
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// gatewayGCPercent is the gateway's GOGC when the environment sets none
// and JetStream runs elsewhere (--nats-url). The gateway's own live heap is
// small (tens of MiB) and nearly all it allocates is per-request garbage,
// so Go's default of 100 collects every few MiB: a quarter of a busy
// gateway's CPU. At 400 the collector runs a quarter as often, for a few
// tens of MiB more resident memory.
const gatewayGCPercent = 400

// embeddedGCPercent is GOGC for a process that holds JetStream (sluice
// serve without --nats-url, sluice dev, bench jetstream) when the
// environment sets none. That heap grows with the queue: with a million
// jobs queued it holds ~450 MB live, one subject each, and each collection
// marks it for ~220 ms, slowing every read it overlaps. At Go's default of
// 100 those marks take ~1.1% of the time, so they decided GetJob's p99 (1.45
// times its empty-queue figure over 20 s of reads); at 200 they come half as
// often and it was 1.07, for ~250 MiB more resident at that depth (800 MiB
// instead of 550). Five times the live heap (400) would be too much to trade.
const embeddedGCPercent = 200

// TuneGC sets the process's GOGC for what it holds, unless GOGC says
// otherwise.
func TuneGC(embedsJetStream bool) {
	if os.Getenv("GOGC") != "" {
		return
	}
	if embedsJetStream {
		debug.SetGCPercent(embeddedGCPercent)
		return
	}
	debug.SetGCPercent(gatewayGCPercent)
}

// memoryLimitShare is the part of the container's memory limit the Go
// runtime is told to keep within (GOMEMLIMIT): the rest is room for what
// the runtime does not count (stacks of the OS, mapped files) before the
// kernel's OOM killer acts.
const memoryLimitShare = 0.9

// cgroupMemoryLimits are where Linux tells a process its container's memory
// limit: cgroup v2, then v1.
var cgroupMemoryLimits = []string{"sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"}

// SetMemoryLimit sets the Go runtime's soft memory limit to 90% of the
// container's memory limit, unless GOMEMLIMIT says otherwise or there is
// no limit, and returns it (0 if it set none). Without it, a gateway at a
// high GOGC (see TuneGC) lets garbage grow to several times its live heap
// and is killed by a limit it never looked at.
func SetMemoryLimit(root fs.FS) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit := containerMemoryLimit(root)
	if limit <= 0 {
		return 0
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	return soft
}

// containerMemoryLimit reads the container's memory limit in bytes from
// root (the file system's root); 0 if it has none or it cannot be read.
func containerMemoryLimit(root fs.FS) int64 {
	for _, name := range cgroupMemoryLimits {
		b, err := fs.ReadFile(root, name)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		n, err := strconv.ParseInt(s, 10, 64)
		// "max" (v2) or a huge number (v1's "unlimited") mean none.
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0
		}
		return n
	}
	return 0
}

// SetMemoryLimitFromContainer is SetMemoryLimit on this machine's file
// system, saying so in log when it sets one.
func SetMemoryLimitFromContainer(log *slog.Logger) {
	if soft := SetMemoryLimit(os.DirFS("/")); soft > 0 {
		log.Info("memory limit: the runtime keeps within 90% of the container's (GOMEMLIMIT unset)", "gomemlimit_bytes", soft)
	}
}
