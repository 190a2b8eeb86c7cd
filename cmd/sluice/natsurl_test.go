package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// TestExternalNATS runs a gateway against a NATS server it did not start,
// as `sluice serve --nats-url` does.
func TestExternalNATS(t *testing.T) {
	srv, err := buffer.StartEmbedded(buffer.EmbeddedConfig{StoreDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	_, fnURL := startFunction(t, fnsim.Config{})
	cfg := &Config{Functions: []FunctionConfig{{Name: "echo", URL: fnURL}}}
	if err := cfg.setDefaultsAndCheck(); err != nil {
		t.Fatal(err)
	}
	p, err := startGateway(t.Context(), cfg, gatewayOptions{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", NATSURL: srv.ClientURL(), DrainTimeout: time.Second,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	g := &testGateway{gatewayProcess: p, base: "http://" + p.HTTPAddr.String()}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	resp := post(t, g.base+"/v1/functions/echo/jobs", "text/plain", []byte("via tcp"))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d", resp.StatusCode)
	}
	if j := waitREST(t, g, strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/"), 10*time.Second); j.State != "SUCCEEDED" {
		t.Fatalf("job = %+v", j)
	}
}
