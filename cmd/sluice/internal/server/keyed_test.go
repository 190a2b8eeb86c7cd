package server_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
)

// keyedFunction is a function that runs each job for a while and notes,
// at the function, how many of the hot key's jobs run at once, the order
// they start in, and how many of them had finished when the other keys'
// jobs were submitted and when the last of those finished. A job's payload
// names it: "hot-<i>" or "cold-<i>".
type keyedFunction struct {
	run time.Duration

	mu                 sync.Mutex
	hotNow, hotMost    int
	hotStarted         []int // in the order they started
	hotDone, coldDone  int
	hotDoneAtColdStart int
	hotDoneAtColdEnd   int
	colds              int
}

func (f *keyedFunction) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	name, n, _ := strings.Cut(string(body), "-")
	i, _ := strconv.Atoi(n)
	f.mu.Lock()
	if name == "hot" {
		f.hotNow++
		f.hotMost = max(f.hotMost, f.hotNow)
		f.hotStarted = append(f.hotStarted, i)
	}
	f.mu.Unlock()
	time.Sleep(f.run) // the function's work
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "hot" {
		f.hotNow--
		f.hotDone++
	} else {
		if f.coldDone++; f.coldDone == f.colds {
			f.hotDoneAtColdEnd = f.hotDone
		}
	}
	w.WriteHeader(http.StatusOK)
}

// TestKeyConcurrencyHoldsAcrossGatewaysWhileOtherKeysGoOn (#21 item 3):
// 100 jobs of one key with key_concurrency 2, submitted over REST through
// two gateway processes, never run more than two at once at the function,
// start in the order they came within that window, and do not hold back
// 100 jobs of other keys, submitted over gRPC after them, which all finish
// while most of the hot key's jobs then waiting still wait. (Counted from
// the other keys' submits: the hot key's jobs run while they are
// submitted, one at a time, for as long as that takes.)
func TestKeyConcurrencyHoldsAcrossGatewaysWhileOtherKeysGoOn(t *testing.T) {
	const hot, cold = 100, 100
	fn := &keyedFunction{run: 100 * time.Millisecond, colds: cold}
	fnSrv := httptest.NewServer(fn)
	t.Cleanup(fnSrv.Close)
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	var gateways []*servertest.Gateway
	for range 2 {
		cfg := &config.Config{Functions: []config.FunctionConfig{
			{Name: "f", URL: fnSrv.URL, Concurrency: 20, KeyConcurrency: 2},
			{Name: "plain", URL: fnSrv.URL},
		}}
		gateways = append(gateways, servertest.Start(t, "", cfg, server.Options{NATSURL: srv.ClientURL()}))
	}

	for i := range hot { // one at a time: their order is the order they came
		code, _, body := call(t, http.MethodPost, gateways[i%2].Base+"/v1/functions/f/jobs", "", fmt.Sprint("hot-", i),
			"Sluice-Concurrency-Key", "customer-42")
		if code != http.StatusAccepted {
			t.Fatalf("hot submit %d: %d %s", i, code, body)
		}
	}
	jobs := sluicev1.NewJobServiceClient(gateways[1].GRPCConn(t))
	fn.mu.Lock()
	fn.hotDoneAtColdStart = fn.hotDone
	fn.mu.Unlock()
	var wg sync.WaitGroup
	for i := range cold {
		wg.Go(func() {
			_, err := jobs.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{
				Function: "f", ConcurrencyKey: fmt.Sprint("customer-", 1000+i),
				Payload: &httpbody.HttpBody{ContentType: "text/plain", Data: fmt.Appendf(nil, "cold-%d", i)},
			})
			if err != nil {
				t.Errorf("cold submit %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	buffertest.WaitFor(t, 60*time.Second, "every job run", func() bool {
		fn.mu.Lock()
		defer fn.mu.Unlock()
		return fn.hotDone == hot && fn.coldDone == cold
	})

	fn.mu.Lock()
	defer fn.mu.Unlock()
	waiting, during := hot-fn.hotDoneAtColdStart, fn.hotDoneAtColdEnd-fn.hotDoneAtColdStart
	t.Logf("hot key: at most %d in flight; %d of %d finished when the other keys' were submitted, %d more when their last finished",
		fn.hotMost, fn.hotDoneAtColdStart, hot, during)
	if fn.hotMost != 2 {
		t.Errorf("the hot key had at most %d in flight at the function; want 2 (key_concurrency)", fn.hotMost)
	}
	if during > waiting/2 {
		t.Errorf("%d of the hot key's %d jobs still waiting when the other keys' were submitted finished before the other keys' last did; they were held behind it",
			during, waiting)
	}
	for pos, i := range fn.hotStarted {
		if i > pos+1 { // at most one later job may start before an earlier one: the two slots
			t.Fatalf("hot job %d started %dth: out of the order they came (%v)", i, pos+1, fn.hotStarted)
		}
	}
}

// TestConcurrencyKeyRefusedWhereItCannotHold: a function without
// key_concurrency refuses a keyed submit rather than run it unkeyed, and a
// key past its limit is refused.
func TestConcurrencyKeyRefusedWhereItCannotHold(t *testing.T) {
	g := servertest.StartFunctions(t, t.TempDir(),
		config.FunctionConfig{Name: "f", URL: "http://127.0.0.1:9/", KeyConcurrency: 1},
		config.FunctionConfig{Name: "plain", URL: "http://127.0.0.1:9/"})
	code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/plain/jobs", "", "x", "Sluice-Concurrency-Key", "k")
	if code != http.StatusBadRequest || !strings.Contains(string(body), "no key_concurrency") {
		t.Errorf("keyed submit to a function without key_concurrency: %d %s; want 400 saying so", code, body)
	}
	code, _, body = call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", "x", "Sluice-Concurrency-Key", strings.Repeat("k", 256))
	if code != http.StatusAccepted {
		t.Errorf("a 256-byte key: %d %s; want 202", code, body)
	}
	_, err := sluicev1.NewJobServiceClient(g.GRPCConn(t)).SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{
		Function: "f", ConcurrencyKey: strings.Repeat("k", 257),
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "1 to 256 bytes") {
		t.Errorf("a 257-byte key: %v; want INVALID_ARGUMENT saying the limit", err)
	}
}
