package server_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/buffer/provision"
	"github.com/sluicehq/sluice/cmd/sluice/internal/clustertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// TestExternalNATS runs a gateway against a NATS server it did not start,
// as `sluice serve --nats-url` does.
func TestExternalNATS(t *testing.T) {
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "echo", URL: fnURL}}}
	g := servertest.Start(t, "", cfg, server.Options{NATSURL: srv.ClientURL()})

	resp := post(t, g.Base+"/v1/functions/echo/jobs", "text/plain", []byte("via tcp"))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d", resp.StatusCode)
	}
	if j := waitREST(t, g, strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/"), 10*time.Second); j.State != "SUCCEEDED" {
		t.Fatalf("job = %+v", j)
	}
}

// TestIdempotencyAcrossGateways submits the same keys at once through two
// gateway processes sharing one NATS, over REST and gRPC.
func TestIdempotencyAcrossGateways(t *testing.T) {
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	fnURL := startBlockedFunction(t) // jobs stay put: only the submits matter
	var gateways []*servertest.Gateway
	for range 2 {
		cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: fnURL, Concurrency: 1}}}
		gateways = append(gateways, servertest.Start(t, "", cfg, server.Options{NATSURL: srv.ClientURL()}))
	}

	const submits, keys = 200, 20
	locations := make([]string, submits)
	replayed := make([]bool, submits)
	var wg sync.WaitGroup
	for i := range submits {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, gateways[i%2].Base+"/v1/functions/f/jobs", strings.NewReader("x"))
			req.Header.Set("Idempotency-Key", fmt.Sprint("order-", i%keys))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("submit %d: %d", i, resp.StatusCode)
			}
			locations[i], replayed[i] = resp.Header.Get("Location"), resp.Header.Get("Idempotent-Replayed") == "true"
		})
	}
	wg.Wait()
	jobs := map[string]bool{}
	fresh := 0
	for i, loc := range locations {
		jobs[loc] = true
		if loc != locations[i%keys] {
			t.Fatalf("order-%d gave %s and %s", i%keys, locations[i%keys], loc)
		}
		if !replayed[i] {
			fresh++
		}
	}
	if len(jobs) != keys || fresh != keys {
		t.Errorf("%d submits with %d keys through two gateways made %d jobs, %d not marked replayed; want %d", submits, keys, len(jobs), fresh, keys)
	}

	// The gRPC field means the same, and the key space is per function.
	client := sluicev1.NewJobServiceClient(gateways[1].GRPCConn(t))
	resp, err := client.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{Function: "f", IdempotencyKey: "order-3"})
	if err != nil || "/v1/jobs/"+resp.GetJob().GetId() != locations[3] || !resp.GetReplayed() {
		t.Errorf("gRPC submit with order-3 = %v, %v; want the job at %s, replayed", resp, err, locations[3])
	}
	if _, err := client.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{Function: "f", IdempotencyKey: "bad\x00key"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a key with a control character: %v, want INVALID_ARGUMENT", err)
	}
}

// TestSubmitRefusedWhileNATSDown checks that a submit JetStream cannot
// take, because NATS is gone, is refused with 503 and Retry-After, not 500.
func TestSubmitRefusedWhileNATSDown(t *testing.T) {
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatal(err)
	}
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: fnURL}}}
	g := startTestGatewayLogs(t, cfg, server.Options{NATSURL: srv.ClientURL()}, io.Discard)
	// One job done: the dispatcher is past its start-up. (A gateway that
	// loses NATS while its dispatcher starts exits, after 5s.)
	resp := post(t, g.Base+"/v1/functions/f/jobs", "text/plain", []byte("x"))
	if j := waitREST(t, g, strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/"), 10*time.Second); j.State != "SUCCEEDED" {
		t.Fatalf("job = %+v", j)
	}
	srv.Shutdown()
	start := time.Now()
	resp = post(t, g.Base+"/v1/functions/f/jobs", "text/plain", []byte("x"))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("refused after %s: %d %s", time.Since(start).Round(time.Millisecond), resp.StatusCode, body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("submit with NATS down: %d, Retry-After %q: %s; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

// TestClusterReplicasChecks checks --replicas against a real cluster: R1 on
// a cluster is warned about, and a gateway whose --replicas contradicts the
// streams already there refuses to start, changing nothing.
func TestClusterReplicasChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS cluster")
	}
	c := clustertest.Start(t)
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: "http://127.0.0.1:1/"}}}
	var logs buffertest.LockedBuffer
	p, err := servertest.New(t, "", cfg, server.Options{NATSURL: c.URLs(), Replicas: 1}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	servertest.Run(t, p)
	if !strings.Contains(logs.String(), "NATS is a cluster but --replicas is 1") {
		t.Errorf("no warning about R1 on a cluster in:\n%s", logs.String())
	}

	_, err = server.New(t.Context(), cfg, server.Options{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", NATSURL: c.URLs(), Replicas: 3,
	}, slog.New(slog.DiscardHandler))
	if !errors.Is(err, provision.ErrDurability) || !strings.Contains(err.Error(), "--replicas=3") ||
		!strings.Contains(err.Error(), "has 1 replicas") {
		t.Fatalf("gateway with --replicas=3 on R1 streams: %v, want ErrDurability naming --replicas", err)
	}
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(t.Context(), buffer.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != 1 {
		t.Errorf("the refused gateway changed %s to %d replicas", buffer.StreamName, r)
	}

}
