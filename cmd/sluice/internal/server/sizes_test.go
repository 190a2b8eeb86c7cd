package server_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/buffer/embedded"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/dispatch/target"
)

// stockMaxPayload is a stock nats-server's max_payload: 1 MB.
const stockMaxPayload = 1 << 20

// startStockNATS starts a NATS server with a stock max_payload that
// gateways reach over TCP, as with --nats-url.
func startStockNATS(t *testing.T) *embedded.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Listen: true, MaxPayload: stockMaxPayload})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// startGatewayOn starts a gateway with cfg against the NATS server at url;
// it runs until the test ends.
func startGatewayOn(t *testing.T, url string, cfg *config.Config) (*servertest.Gateway, error) {
	t.Helper()
	p, err := servertest.New(t, "", cfg, server.Options{NATSURL: url}, nil)
	if err != nil {
		return nil, err
	}
	return servertest.Run(t, p), nil
}

// TestOversizedResultFailsOnlyItsJob: on a stock NATS server, a function
// answers one job of a batch with more than a job's state can hold. The
// other jobs' outcomes, written in the same batch, are stored once; no job
// runs twice; the big one ends with its outcome said.
func TestOversizedResultFailsOnlyItsJob(t *testing.T) {
	const jobs = 20
	var (
		mu    sync.Mutex
		runs  = map[string]int{}
		all   = make(chan struct{})
		count int
	)
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		payload, _ := io.ReadAll(r.Body)
		mu.Lock()
		runs[r.Header.Get(target.HeaderJobID)]++
		if count++; count == jobs {
			close(all)
		}
		mu.Unlock()
		// Every job answers at once, so that their outcomes are written
		// together, in one batch.
		select {
		case <-all:
		case <-time.After(3 * time.Second):
		}
		if string(payload) == "big" {
			w.Write(bytes.Repeat([]byte{'r'}, 1<<20)) //nolint:errcheck
			return
		}
		w.Write(payload) //nolint:errcheck
	}))
	t.Cleanup(fn.Close)
	srv := startStockNATS(t)
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: fn.URL, Concurrency: jobs, MaxPayload: 64 << 10, Timeout: config.Duration(5 * time.Second)}}}
	cfg.Buffer.GroupCommit.Linger = config.Duration(50 * time.Millisecond)
	g, err := startGatewayOn(t, srv.ClientURL(), cfg)
	if err != nil {
		t.Fatal(err)
	}

	ids := make([]string, jobs)
	for i := range jobs {
		payload := "small"
		if i == 0 {
			payload = "big"
		}
		resp := post(t, g.Base+"/v1/functions/f/jobs", "text/plain", []byte(payload))
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit %d: %d", i, resp.StatusCode)
		}
		ids[i] = strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/")
	}
	final := make([]jobJSON, jobs)
	for i, id := range ids {
		final[i] = waitREST(t, g, id, 20*time.Second)
	}
	// Every job's message acknowledged, none delivered twice: none runs
	// again.
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(t.Context(), buffer.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	buffertest.WaitForNoError(t, 5*time.Second, "every job's message acknowledged, none delivered again", func() error {
		var pending, redelivered int
		for info := range stream.ListConsumers(t.Context()).Info() {
			pending += info.NumAckPending
			redelivered += info.NumRedelivered
		}
		if pending != 0 || redelivered != 0 {
			return fmt.Errorf("%d jobs' messages not acknowledged, %d delivered again", pending, redelivered)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for i, id := range ids {
		if runs[id] != 1 {
			t.Errorf("job %d ran %d times, want once", i, runs[id])
		}
		j := final[i]
		if i == 0 {
			if j.State != "FAILED" || !strings.Contains(j.Error, "function response too large: more than ") {
				t.Errorf("the job with the big result: %s %q, want FAILED saying the response was too large", j.State, j.Error)
			}
			continue
		}
		if j.State != "SUCCEEDED" || j.Result == nil || string(j.Result.Body) != "small" {
			t.Errorf("job %d: %s %q, want SUCCEEDED with its result", i, j.State, j.Error)
		}
	}
}

// TestStartupChecksSizesAgainstNATS: a max_payload whose dead letter (the
// payload, up to 64 KiB of the response, the job) would not fit the NATS
// server's max_payload is refused at start-up, and so is a max_result a
// job's state cannot hold; each is accepted at its limit, and max_result
// defaults to what fits.
func TestStartupChecksSizesAgainstNATS(t *testing.T) {
	srv := startStockNATS(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := buffer.Open(t.Context(), nc, buffer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	maxPayload, maxResult := q.MaxPayloadBytes(), q.MaxResultBytes()
	if maxPayload != stockMaxPayload-96<<10 || maxResult >= target.DefaultMaxResponseBytes {
		t.Fatalf("on a stock server: payloads up to %d, results up to %d; want 1MiB-96KiB, and less than the default result limit", maxPayload, maxResult)
	}
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	for _, tc := range []struct {
		name                  string
		maxPayload, maxResult int64
		wantErr               string
	}{
		{"the old limit: max_payload plus 64KiB", stockMaxPayload - 64<<10, 0, fmt.Sprintf("max_payload: %d bytes does not fit the NATS server's max_payload of %d", stockMaxPayload-64<<10, stockMaxPayload)},
		{"max_payload one over", maxPayload + 1, 0, fmt.Sprintf("at most %d", maxPayload)},
		{"max_payload at the limit", maxPayload, 0, ""},
		{"max_result one over", 1024, maxResult + 1, fmt.Sprintf("max_result: %d bytes does not fit the NATS server's max_payload of %d: a job's state holds its result and the job; at most %d", maxResult+1, stockMaxPayload, maxResult)},
		{"max_result at the limit", 1024, maxResult, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: fnURL, MaxPayload: config.ByteSize(tc.maxPayload), MaxResult: config.ByteSize(tc.maxResult)}}}
			_, err := startGatewayOn(t, srv.ClientURL(), cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("start-up error %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
	functions := []config.FunctionConfig{{Name: "f"}}
	if err := server.FitSizes(functions, q, stockMaxPayload, slog.New(slog.DiscardHandler)); err != nil || int64(functions[0].MaxResult) != maxResult {
		t.Errorf("max_result unset: %d, %v; want the most a job's state holds, %d", functions[0].MaxResult, err, maxResult)
	}
	if int64(functions[0].MaxPayload) != maxPayload {
		t.Errorf("max_payload unset: %d; want the most a dead letter holds, %d", functions[0].MaxPayload, maxPayload)
	}
}

// TestDefaultConfigRunsOnAStockNATS (#22 item 2): against a NATS server
// with its stock max_payload (1MB), a gateway with the shortest config
// starts, takes the largest payload that fits in place of the default
// max_payload, says so in its log, and runs a job; a payload one byte
// over is refused with 413.
func TestDefaultConfigRunsOnAStockNATS(t *testing.T) {
	srv := startStockNATS(t)
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	var logs buffertest.LockedBuffer
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: fnURL}}}
	p, err := servertest.New(t, "", cfg, server.Options{NATSURL: srv.ClientURL()}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("the shortest config on a stock NATS: %v", err)
	}
	g := servertest.Run(t, p)
	maxPayload := g.Queue().MaxPayloadBytes()
	if !strings.Contains(logs.String(), "max_payload not set") || !strings.Contains(logs.String(), fmt.Sprint("max_payload=", maxPayload)) {
		t.Errorf("the log does not say max_payload was taken from the server:\n%s", logs.String())
	}
	code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", strings.Repeat("x", int(maxPayload)))
	if code != http.StatusAccepted {
		t.Fatalf("a payload of the derived max_payload: %d %s", code, body)
	}
	if j := waitRESTKey(t, g, "", decodeJob(t, body).ID, 10*time.Second); j.State != "SUCCEEDED" {
		t.Errorf("the job ended %s", j.State)
	}
	if code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", strings.Repeat("x", int(maxPayload)+1)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a payload one byte over: %d %s; want 413", code, body)
	}
}

// TestContentTypeIsBounded: a payload's content type is kept with the job;
// one over 256 bytes is refused.
func TestContentTypeIsBounded(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "echo", URL: fnURL})
	at := "text/plain; x=" + strings.Repeat("a", 256-len("text/plain; x="))
	over := at + "a"
	for ct, want := range map[string]int{at: http.StatusAccepted, over: http.StatusBadRequest} {
		if resp := post(t, g.Base+"/v1/functions/echo/jobs", ct, []byte("x")); resp.StatusCode != want {
			t.Errorf("REST content type of %d bytes: %d, want %d", len(ct), resp.StatusCode, want)
		}
	}
	jobs := sluicev1.NewJobServiceClient(g.GRPCConn(t))
	for ct, want := range map[string]codes.Code{at: codes.OK, over: codes.InvalidArgument} {
		_, err := jobs.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{Function: "echo", Payload: &httpbody.HttpBody{ContentType: ct, Data: []byte("x")}})
		if status.Code(err) != want {
			t.Errorf("gRPC content type of %d bytes: %v, want %v", len(ct), err, want)
		}
	}
}
