package harness

import (
	"context"
	"encoding/json"
	"io"
	"sync"

	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// StartPlatform runs a simulated platform (sluice fnsim with flags) in a
// child process until ctx ends, and returns its address once it answers;
// wg tracks it.
func StartPlatform(ctx context.Context, wg *sync.WaitGroup, stderr io.Writer, flags []string) (string, error) {
	_, addrs, _, err := startListening(ctx, wg, stderr, listeningChild{
		ports: 1,
		args: func(a []string) []string {
			return append([]string{"fnsim", "--addr", a[0], "--log-level", "warn"}, flags...)
		},
		readyURL: func(a []string) string { return "http://" + a[0] + "/stats" },
	})
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// StartOwnPlatform is StartPlatform for a command whose platform lives on
// its own: stop ends it and waits for it to exit.
func StartOwnPlatform(ctx context.Context, stderr io.Writer, flags []string) (addr string, stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	if addr, err = StartPlatform(ctx, &wg, stderr, flags); err != nil {
		stop()
		return "", nil, err
	}
	return addr, stop, nil
}

// PlatformStats reads a simulated platform's counts from its stats URL
// (http://ADDR/stats).
func PlatformStats(ctx context.Context, url string) (fnsim.Stats, error) {
	var st fnsim.Stats
	resp, err := Get(ctx, url)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
