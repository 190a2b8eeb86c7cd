package server

import (
	"os"
	"runtime/debug"
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
