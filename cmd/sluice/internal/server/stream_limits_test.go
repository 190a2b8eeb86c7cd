package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/gateway"
)

// restWatchResult is how a REST watch was answered: its status, headers,
// and its first line (the job, for 200; the error, otherwise).
type restWatchResult struct {
	code   int
	header http.Header
	first  string
}

// openRESTWatch opens GET /v1/jobs/{id}:watch with an API key (none if
// key is "") and reads its first line; the watch stays open until the
// test ends or close is called.
func openRESTWatch(t *testing.T, client *http.Client, base, id, key string, within time.Duration) (restWatchResult, func(), error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+id+":watch", nil)
	if err != nil {
		cancel()
		return restWatchResult{}, nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	timer := time.AfterFunc(within, cancel)
	defer timer.Stop()
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return restWatchResult{}, nil, fmt.Errorf("no answer within %s: %w", within, err)
	}
	closeWatch := func() { cancel(); resp.Body.Close() }
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil && line == "" {
		closeWatch()
		return restWatchResult{}, nil, fmt.Errorf("%d, no first line within %s: %w", resp.StatusCode, within, err)
	}
	if !timer.Stop() {
		closeWatch()
		return restWatchResult{}, nil, fmt.Errorf("%d, first line only after %s", resp.StatusCode, within)
	}
	t.Cleanup(closeWatch)
	return restWatchResult{code: resp.StatusCode, header: resp.Header, first: line}, closeWatch, nil
}

// watchTransport is an HTTP/1.1 client that opens as many connections as
// it is asked for: a REST watch holds its connection.
func watchTransport(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// One tenant holding as many REST watches as it may leaves room for
// another tenant's: the watch limit is per tenant, and a refused watch is
// answered 429 with Retry-After at once, not left waiting (#19 item 3).
func TestWatchesOfOneTenantLeaveRoomForAnother(t *testing.T) {
	fn := startBlockedFunction(t)
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "f", URL: fn}},
		Tenants: []config.TenantConfig{
			{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}},
			{Name: "bolt", APIKeys: []string{gateway.HashKey(keyB)}},
		},
	})
	submitAs := func(key string) string {
		code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", key, `{}`)
		if code != http.StatusAccepted {
			t.Fatalf("submit: %d %s", code, body)
		}
		return decodeJob(t, body).ID
	}
	acmeJob, boltJob := submitAs(keyA), submitAs(keyB)
	client := watchTransport(t)

	const acmeMost = 1000 // the default per tenant; also the old limit of all REST watches
	var eg errgroup.Group
	eg.SetLimit(64)
	for i := range acmeMost {
		eg.Go(func() error {
			w, _, err := openRESTWatch(t, client, g.Base, acmeJob, keyA, 30*time.Second)
			if err == nil && w.code != http.StatusOK {
				err = fmt.Errorf("%d %s", w.code, w.first)
			}
			if err != nil {
				return fmt.Errorf("acme's watch %d of %d: %w", i+1, acmeMost, err)
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		t.Fatal(err)
	}
	w, _, err := openRESTWatch(t, client, g.Base, boltJob, keyB, 5*time.Second)
	if err != nil || w.code != http.StatusOK || !strings.Contains(w.first, boltJob) {
		t.Fatalf("bolt's watch while acme holds %d: %+v, %v; want it open with bolt's job", acmeMost, w, err)
	}
	w, _, err = openRESTWatch(t, client, g.Base, acmeJob, keyA, 5*time.Second)
	if err != nil || w.code != http.StatusTooManyRequests || w.header.Get("Retry-After") == "" {
		t.Fatalf("acme's watch %d: %+v, %v; want 429 with Retry-After at once", acmeMost+1, w, err)
	}
}

// The streams that need no API key (health Watch, server reflection) are
// bounded per connection (#19 item 17).
func TestUnauthenticatedStreamsAreBoundedPerConnection(t *testing.T) {
	const perConnection = 4 // the default
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "f", URL: startBlockedFunction(t)}},
		Tenants:   []config.TenantConfig{{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}}},
	})
	conn := g.GRPCConn(t)
	health := healthpb.NewHealthClient(conn)
	var streams []context.CancelFunc
	defer func() {
		for _, cancel := range streams {
			cancel()
		}
	}()
	watch := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		stream, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if err != nil {
			cancel()
			return err
		}
		streams = append(streams, cancel)
		return nil
	}
	for i := range perConnection {
		if err := watch(); err != nil {
			t.Fatalf("health watch %d of %d on one connection: %v", i+1, perConnection, err)
		}
	}
	err := watch()
	if status.Code(err) != codes.ResourceExhausted || retryDelay(err) < time.Second {
		t.Fatalf("health watch %d on one connection: %v; want RESOURCE_EXHAUSTED with RetryInfo", perConnection+1, err)
	}
	// Another connection has its own.
	other, err := grpc.NewClient(g.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	health = healthpb.NewHealthClient(other)
	if err := watch(); err != nil {
		t.Fatalf("health watch on a second connection: %v", err)
	}
	// A watch that ends gives its place back.
	streams[0]()
	health = healthpb.NewHealthClient(conn)
	buffertest.WaitForNoError(t, 5*time.Second, fmt.Sprintf("a health watch after one of %d ended", perConnection), watch)
}

// retryDelay is the RetryInfo delay an error carries; 0 for none.
func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// openGRPCWatch opens WatchJob of id on conn with an API key and reads its
// first message; the watch stays open until the test ends or close is
// called.
func openGRPCWatch(t *testing.T, conn *grpc.ClientConn, id, key string) (func(), error) {
	t.Helper()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+key))
	stream, err := sluicev1.NewJobServiceClient(conn).WatchJob(ctx, &sluicev1.WatchJobRequest{Id: id})
	if err == nil {
		_, err = stream.Recv()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	t.Cleanup(cancel)
	return cancel, nil
}

func newConn(t *testing.T, g *servertest.Gateway) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(g.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Each watch limit holds at its edge, over gRPC and REST together: per
// connection, per tenant and in all; a watch that ends gives its place
// back (#19 item 3).
func TestWatchLimitsAtTheirEdges(t *testing.T) {
	fn := startBlockedFunction(t)
	pki := servertest.NewPKI(t)
	g := servertest.Start(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "f", URL: fn}},
		Tenants: []config.TenantConfig{
			{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}},
			{Name: "bolt", APIKeys: []string{gateway.HashKey(keyB)}},
		},
		Streams: config.StreamsConfig{Watches: 5, WatchesPerTenant: 3, WatchesPerConnection: 2},
	}, server.Options{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey})
	h2 := func() *http.Client { return httpsClient(t, pki.ClientTLS(nil)) }
	submitAs := func(key string) string {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, g.Base+"/v1/functions/f/jobs", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := h2().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var job jobJSON
		if err := json.NewDecoder(resp.Body).Decode(&job); err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit: %d %v", resp.StatusCode, err)
		}
		return job.ID
	}
	acmeJob, boltJob := submitAs(keyA), submitAs(keyB)
	grpcRefused := func(what string, err error, want string) {
		t.Helper()
		if status.Code(err) != codes.ResourceExhausted || retryDelay(err) < time.Second || !strings.Contains(status.Convert(err).Message(), want) {
			t.Errorf("%s: %v; want RESOURCE_EXHAUSTED with RetryInfo, saying %q", what, err, want)
		}
	}
	restRefused := func(what string, w restWatchResult, err error, want string) {
		t.Helper()
		if err != nil || w.code != http.StatusTooManyRequests || w.header.Get("Retry-After") == "" || !strings.Contains(w.first, want) {
			t.Errorf("%s: %+v, %v; want 429 with Retry-After, saying %q", what, w, err, want)
		}
	}
	grpcCreds := credentials.NewTLS(pki.ClientTLS(nil))
	tlsConn := func() *grpc.ClientConn {
		conn, err := grpc.NewClient(g.GRPCAddr.String(), grpc.WithTransportCredentials(grpcCreds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	// Per gRPC connection: 2.
	conn1 := tlsConn()
	closeFirst, err := openGRPCWatch(t, conn1, acmeJob, keyA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openGRPCWatch(t, conn1, acmeJob, keyA); err != nil {
		t.Fatalf("acme's second watch on one connection: %v", err)
	}
	_, err = openGRPCWatch(t, conn1, acmeJob, keyA)
	grpcRefused("acme's third watch on one gRPC connection", err, "this connection has 2 job watches open")

	// Per REST (HTTP/2) connection: 2, whatever the one in-memory
	// connection REST's streams cross.
	bolt := h2()
	for i := range 2 {
		if w, _, err := openRESTWatch(t, bolt, g.Base, boltJob, keyB, 5*time.Second); err != nil || w.code != http.StatusOK {
			t.Fatalf("bolt's REST watch %d on one HTTP/2 connection: %+v %v", i+1, w, err)
		}
	}
	w, _, err := openRESTWatch(t, bolt, g.Base, boltJob, keyB, 5*time.Second)
	restRefused("bolt's third REST watch on one HTTP/2 connection", w, err, "this connection has 2 job watches open")

	// Per tenant: 3, over gRPC and REST together.
	if _, err := openGRPCWatch(t, tlsConn(), acmeJob, keyA); err != nil {
		t.Fatalf("acme's third watch, on another connection: %v", err)
	}
	_, err = openGRPCWatch(t, tlsConn(), acmeJob, keyA)
	grpcRefused("acme's fourth watch", err, `tenant "acme" has 3 job watches open`)
	w, _, err = openRESTWatch(t, h2(), g.Base, acmeJob, keyA, 5*time.Second)
	restRefused("acme's fourth watch, over REST", w, err, `tenant \"acme\" has 3 job watches open`)

	// In all: 5 (acme 3, bolt 2).
	_, err = openGRPCWatch(t, tlsConn(), boltJob, keyB)
	grpcRefused("a sixth watch", err, "this gateway has as many job watches open as it allows")

	// A watch that ends gives its place back.
	closeFirst()
	buffertest.WaitForNoError(t, 5*time.Second, "acme's watch after one of its watches ended", func() error {
		_, err := openGRPCWatch(t, conn1, acmeJob, keyA)
		return err
	})
}

// The limits of streams without an API key hold at their edges: per
// connection and in all, health Watch and reflection together (#19 item
// 17).
func TestUnauthenticatedStreamLimitsAtTheirEdges(t *testing.T) {
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "f", URL: startBlockedFunction(t)}},
		Tenants:   []config.TenantConfig{{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}}},
		Streams:   config.StreamsConfig{Unauthenticated: 3, UnauthenticatedPerConnection: 2},
	})
	healthWatch := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithCancel(t.Context())
		t.Cleanup(cancel)
		stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}
	reflect := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithCancel(t.Context())
		t.Cleanup(cancel)
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err == nil {
			err = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		}
		// A stream the server refused before the request went fails its
		// Send with io.EOF; its status is what Recv then returns.
		if err == nil || errors.Is(err, io.EOF) {
			_, err = stream.Recv()
		}
		return err
	}
	conn1, conn2, conn3 := newConn(t, g), newConn(t, g), newConn(t, g)
	if err := healthWatch(conn1); err != nil {
		t.Fatal(err)
	}
	if err := reflect(conn1); err != nil {
		t.Fatalf("reflection beside a health watch on one connection: %v", err)
	}
	if err := healthWatch(conn1); status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "this connection has 2 streams without an API key open") {
		t.Errorf("a third stream without a key on one connection: %v; want RESOURCE_EXHAUSTED", err)
	}
	if err := healthWatch(conn2); err != nil {
		t.Fatalf("a health watch on another connection: %v", err)
	}
	if err := reflect(conn3); status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "as many streams without an API key open as it allows") {
		t.Errorf("a fourth stream without a key: %v; want RESOURCE_EXHAUSTED", err)
	}
	// Calls with a key are not held to these limits.
	if _, err := openGRPCWatch(t, conn3, "AAAAAAAAAAAAAAAAAAAAAAAAAA", keyA); status.Code(err) != codes.NotFound {
		t.Errorf("a job watch with a key while the streams without one are full: %v; want NOT_FOUND (it ran)", err)
	}
}

func TestParseStreamsConfig(t *testing.T) {
	cfg, err := config.ParseConfig([]byte(`
functions: [{name: f, url: "http://127.0.0.1:9000"}]
streams: {watches: 7, watches_per_tenant: 6, watches_per_connection: 5, unauthenticated: 4, unauthenticated_per_connection: 3}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Streams.Gateway(), (gateway.StreamLimits{Watches: 7, WatchesPerTenant: 6, WatchesPerConnection: 5, Unauthenticated: 4, UnauthenticatedPerConnection: 3}); got != want {
		t.Errorf("streams = %+v; want %+v", got, want)
	}
	if _, err := config.ParseConfig([]byte("functions: [{name: f, url: \"http://127.0.0.1:9000\"}]\nstreams: {watches_per_tenant: 0}\n")); err == nil || !strings.Contains(err.Error(), "streams.watches_per_tenant") {
		t.Errorf("streams.watches_per_tenant: 0: %v; want an error naming it", err)
	}
}
