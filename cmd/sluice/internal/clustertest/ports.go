package clustertest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// usedStablePorts are the ports StablePort handed out in this process, so
// that a restarted cluster does not get a port a killed one still holds.
var usedStablePorts sync.Map

// StableAddr is "127.0.0.1:" and a StablePort.
func StableAddr(tb testing.TB) string {
	tb.Helper()
	return fmt.Sprintf("127.0.0.1:%d", StablePort(tb))
}

// StablePort returns a free loopback port for a process that a test restarts
// on the same port (a NATS node, a gateway), chosen below the kernel's
// ephemeral range: a port from that range may, while the process is down,
// become the local end of any outgoing connection on the machine (go test
// runs other packages' tests alongside).
func StablePort(tb testing.TB) int {
	tb.Helper()
	low := 32768 // Linux's default start of the ephemeral range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	const first = 10000
	if low-first < 1000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0") // no room below the range: take the kernel's choice
		if err != nil {
			tb.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	for range 1000 {
		port := first + rand.IntN(low-first)
		if _, taken := usedStablePorts.LoadOrStore(port, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	tb.Fatalf("no free port in [%d, %d)", first, low)
	return 0
}
