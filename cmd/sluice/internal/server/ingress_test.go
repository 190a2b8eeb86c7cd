package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/net/http2"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// Tests of what the ingress refuses, and what refusing costs: payload
// limits over REST (with and without Content-Length) and gRPC, the memory a
// refused body takes, the HTTP server's timeouts and header limit, gRPC
// keepalive enforcement, and a fuzz test of the REST submit path.

const mib = 1 << 20

// jobsPublished is how many job messages the gateway's buffer has ever
// stored: the job stream's last sequence number. A refused submit must
// leave it as it was.
func jobsPublished(t testing.TB, g *servertest.Gateway) uint64 {
	t.Helper()
	js, err := jetstream.New(g.NATS())
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), buffer.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// restError is the body of a REST error answer.
type restError struct {
	Code    *int    `json:"code"`
	Message *string `json:"message"`
}

// decodeRESTError checks that body is a JSON error with a code and a
// message, and returns the message.
func decodeRESTError(t testing.TB, contentType string, body []byte) string {
	t.Helper()
	var e restError
	if err := json.Unmarshal(body, &e); err != nil || e.Code == nil || e.Message == nil {
		t.Errorf("error body %q (Content-Type %q) is not JSON with code and message", body, contentType)
		return ""
	}
	if contentType != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", contentType)
	}
	return *e.Message
}

// submitBody POSTs body to function's jobs; size < 0 sends it chunked,
// without a Content-Length.
func submitBody(t testing.TB, g *servertest.Gateway, function string, body io.Reader, size int64) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", g.Base+"/v1/functions/"+function+"/jobs", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// TestRESTPayloadLimit submits bodies at and just over the default 1 MiB
// limit, with Content-Length and chunked: those over it get 413 with a JSON
// error and store no job.
func TestRESTPayloadLimit(t *testing.T) {
	sim, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "echo", URL: fnURL})

	for _, tc := range []struct {
		name    string
		size    int64
		chunked bool
		want    int
	}{
		{"exactly 1 MiB", mib, false, http.StatusAccepted},
		{"exactly 1 MiB chunked", mib, true, http.StatusAccepted},
		{"1 MiB + 1 with Content-Length", mib + 1, false, http.StatusRequestEntityTooLarge},
		{"1 MiB + 1 chunked", mib + 1, true, http.StatusRequestEntityTooLarge},
		{"2 MiB chunked", 2 * mib, true, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := jobsPublished(t, g)
			length := tc.size
			// An io.LimitReader is of unknown length to net/http;
			// ContentLength -1 says so, and the body goes chunked.
			var body io.Reader = io.LimitReader(zeros{}, tc.size)
			if tc.chunked {
				length = -1
			} else {
				body = bytes.NewReader(make([]byte, tc.size))
			}
			code, header, b := submitBody(t, g, "echo", body, length)
			if code != tc.want {
				t.Fatalf("status %d %.200s; want %d", code, b, tc.want)
			}
			stored := jobsPublished(t, g) - before
			if code == http.StatusAccepted {
				if stored != 1 {
					t.Errorf("accepted, and %d jobs stored; want 1", stored)
				}
				return
			}
			if stored != 0 {
				t.Errorf("refused, yet %d jobs stored", stored)
			}
			if msg := decodeRESTError(t, header.Get("Content-Type"), b); !strings.Contains(msg, "1048576") {
				t.Errorf("message %q does not name the limit of 1048576 bytes", msg)
			}
		})
	}

	// The two accepted jobs run; nothing else does.
	buffertest.WaitForNoError(t, 10*time.Second, "the accepted jobs ran", func() error {
		if st := sim.Stats(); st.Invocations < 2 {
			return fmt.Errorf("function stats %+v", st)
		}
		return nil
	})
	buffertest.WaitForNoError(t, 10*time.Second, "the backlog emptied", func() error {
		if st := fnStatusOf(t, g, "echo"); st.Backlog != "0" || st.InFlight != 0 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if n := sim.Stats().Invocations; n != 2 {
		t.Errorf("%d invocations after 2 accepted and 3 refused submits; want 2", n)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// heapPeak samples HeapInuse every few milliseconds until stop is called,
// which returns the highest sample.
func heapPeak() (stop func() uint64) {
	done := make(chan struct{})
	result := make(chan uint64)
	go func() {
		var peak uint64
		var m runtime.MemStats
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-done:
				result <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(done); return <-result }
}

// TestRefusedBodyIsNotBuffered sends 64 MiB chunked bodies to a function
// that accepts 1 MiB, two one after the other and six at once, and checks
// that the gateway (in this process) refuses each with 413 having read and
// held about the limit, not the body: the heap's peak and all that was
// allocated meanwhile stay far below what the clients offered.
func TestRefusedBodyIsNotBuffered(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "echo", URL: fnURL})
	const bodySize, sequential, concurrent = 64 * mib, 2, 6
	const requests = sequential + concurrent
	before := jobsPublished(t, g)

	var written atomic.Int64 // what the clients got onto the wire
	send := func() {
		// zeros allocates nothing: the client holds no body either.
		body := countingReader{io.LimitReader(zeros{}, bodySize), &written}
		req, err := http.NewRequestWithContext(t.Context(), "POST", g.Base+"/v1/functions/echo/jobs", body)
		if err != nil {
			t.Error(err)
			return
		}
		req.ContentLength = -1
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("64 MiB chunked submit: %v", err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("64 MiB chunked submit: %d %.200s; want 413", resp.StatusCode, b)
		}
	}

	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	stopSampling := heapPeak()
	for range sequential {
		send()
	}
	var wg sync.WaitGroup
	for range concurrent {
		wg.Go(send)
	}
	wg.Wait()
	peak := stopSampling()
	runtime.ReadMemStats(&m1)

	offered := int64(requests * bodySize)
	growth := int64(peak) - int64(m0.HeapInuse)
	allocated := int64(m1.TotalAlloc - m0.TotalAlloc)
	t.Logf("%d refused chunked bodies of %d MiB: %.1f MiB offered, %.1f MiB written by the clients; "+
		"heap in use %.1f MiB before, peak %.1f MiB (growth %.1f MiB); %.1f MiB allocated in all (%.1f MiB a request), %d GCs",
		requests, bodySize/mib, float64(offered)/mib, float64(written.Load())/mib,
		float64(m0.HeapInuse)/mib, float64(peak)/mib, float64(growth)/mib,
		float64(allocated)/mib, float64(allocated)/requests/mib, m1.NumGC-m0.NumGC)
	if n := jobsPublished(t, g) - before; n != 0 {
		t.Errorf("%d jobs stored from refused bodies", n)
	}
	// Reading up to the limit into a growing slice costs about twice the
	// limit; a gateway that took in whole bodies would spend hundreds.
	if allocated > requests*8*mib {
		t.Errorf("%.1f MiB allocated serving %d refused bodies; want under 8 MiB each", float64(allocated)/mib, requests)
	}
	// The peak also holds whatever else the process allocated meanwhile
	// (other tests' gateways winding down): the bound is one body, which a
	// server buffering the concurrent bodies would pass several times over.
	if growth > bodySize {
		t.Errorf("heap grew by %.1f MiB at its peak; want less than one %d MiB body", float64(growth)/mib, bodySize/mib)
	}
}

// TestGRPCPayloadLimit submits payloads just over the limit, which the
// service refuses with INVALID_ARGUMENT and PAYLOAD_TOO_LARGE, and over the
// largest message the server receives, which gRPC refuses with
// RESOURCE_EXHAUSTED. Neither stores a job.
func TestGRPCPayloadLimit(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "echo", URL: fnURL})
	jobs := sluicev1.NewJobServiceClient(g.GRPCConn(t))
	// The server's default MaxRecvMsgSize: the largest limit and 64 KiB.
	const maxMsg = mib + 64<<10

	for _, tc := range []struct {
		name       string
		size       int
		wantCode   codes.Code
		wantReason string
	}{
		{"exactly 1 MiB", mib, codes.OK, ""},
		{"1 MiB + 1", mib + 1, codes.InvalidArgument, gateway.ReasonPayloadTooLarge},
		{"a message just under the max", maxMsg - 64, codes.InvalidArgument, gateway.ReasonPayloadTooLarge},
		{"a message over the max", maxMsg + 1, codes.ResourceExhausted, ""},
		{"16 MiB", 16 * mib, codes.ResourceExhausted, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := jobsPublished(t, g)
			_, err := jobs.SubmitJob(t.Context(), &sluicev1.SubmitJobRequest{
				Function: "echo",
				Payload:  &httpbody.HttpBody{ContentType: "application/octet-stream", Data: make([]byte, tc.size)},
			})
			st := status.Convert(err)
			if st.Code() != tc.wantCode {
				t.Fatalf("SubmitJob with %d bytes: %v; want %v", tc.size, err, tc.wantCode)
			}
			var reason string
			for _, d := range st.Details() {
				if info, ok := d.(*errdetails.ErrorInfo); ok {
					reason = info.GetReason()
				}
			}
			if reason != tc.wantReason {
				t.Errorf("ErrorInfo reason %q; want %q (%v)", reason, tc.wantReason, err)
			}
			want := uint64(0)
			if tc.wantCode == codes.OK {
				want = 1
			}
			if n := jobsPublished(t, g) - before; n != want {
				t.Errorf("%d jobs stored; want %d", n, want)
			}
			t.Logf("%d bytes: %v", tc.size, st.Message())
		})
	}
}

// gRPC headers are bounded as REST's are (64 KiB), before anything reads
// them: a client cannot make the gateway hold megabytes of metadata per
// stream ahead of authentication.
func TestGRPCHeaderLimit(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "echo", URL: fnURL})
	jobs := sluicev1.NewJobServiceClient(g.GRPCConn(t))
	submit := func(header int) error {
		ctx := metadata.AppendToOutgoingContext(t.Context(), "x-padding", strings.Repeat("p", header))
		_, err := jobs.SubmitJob(ctx, &sluicev1.SubmitJobRequest{
			Function: "echo",
			Payload:  &httpbody.HttpBody{ContentType: "text/plain", Data: []byte("hi")},
		})
		return err
	}
	if err := submit(8 << 10); err != nil {
		t.Fatalf("a submit with 8 KiB of headers: %v", err)
	}
	before := jobsPublished(t, g)
	err := submit(1 << 20)
	if err == nil {
		t.Fatal("a submit with 1 MiB of headers was accepted; want it refused")
	}
	if n := jobsPublished(t, g) - before; n != 0 {
		t.Errorf("%d jobs stored from a submit with 1 MiB of headers", n)
	}
	t.Logf("1 MiB of headers: %v", err)
}

// TestHTTPServerLimits checks the REST server's timeouts and header limit
// as configured, and two of them at work: a client that trickles in its
// headers is cut off after ReadHeaderTimeout, and one whose headers exceed
// MaxHeaderBytes gets 431.
func TestHTTPServerLimits(t *testing.T) {
	const readHeaderTimeout = 300 * time.Millisecond
	p := servertest.Start(t, t.TempDir(), &config.Config{Functions: []config.FunctionConfig{{Name: "echo", URL: "http://127.0.0.1:1"}}},
		server.Options{ReadHeaderTimeout: readHeaderTimeout})
	base := "http://" + p.HTTPAddr.String()

	t.Run("configured", func(t *testing.T) {
		d := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "echo", URL: "http://127.0.0.1:1"}).HTTPServer()
		if d.ReadHeaderTimeout != server.DefaultReadHeaderTimeout || d.ReadTimeout <= 0 || d.IdleTimeout <= 0 || d.MaxHeaderBytes != 64<<10 {
			t.Errorf("by default ReadHeaderTimeout %v, ReadTimeout %v, IdleTimeout %v, MaxHeaderBytes %d; want %v, set, set, 64 KiB",
				d.ReadHeaderTimeout, d.ReadTimeout, d.IdleTimeout, d.MaxHeaderBytes, server.DefaultReadHeaderTimeout)
		}
		if p.HTTPServer().ReadHeaderTimeout != readHeaderTimeout {
			t.Errorf("ReadHeaderTimeout %v; want the option's %v", p.HTTPServer().ReadHeaderTimeout, readHeaderTimeout)
		}
	})

	t.Run("slow headers", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.HTTPAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		// A header line every 50ms: each arrives in time, but all of them
		// take 5s.
		stopTrickle := make(chan struct{})
		defer close(stopTrickle)
		go func() {
			if _, err := io.WriteString(conn, "GET /v1/functions HTTP/1.1\r\nHost: sluice\r\n"); err != nil {
				return
			}
			for i := range 100 {
				select {
				case <-stopTrickle:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := fmt.Fprintf(conn, "X-Slow-%d: x\r\n", i); err != nil {
					return
				}
			}
			io.WriteString(conn, "\r\n") //nolint:errcheck // the read below reports what happened
		}()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(make([]byte, 1024))
		elapsed := time.Since(start)
		var ne net.Error
		if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("after %v: read %d bytes, %v; want the server to close the connection without answering", elapsed, n, err)
		}
		if elapsed < readHeaderTimeout*8/10 || elapsed > 3*time.Second {
			t.Errorf("connection closed after %v; want about ReadHeaderTimeout, %v", elapsed, readHeaderTimeout)
		}
		t.Logf("headers trickled in every 50ms: connection closed after %v (%v)", elapsed.Round(time.Millisecond), err)
	})

	t.Run("prompt headers", func(t *testing.T) {
		resp, body := get(t, base+"/v1/functions")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /v1/functions: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("headers over MaxHeaderBytes", func(t *testing.T) {
		req, err := http.NewRequestWithContext(t.Context(), "GET", base+"/v1/functions", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Big", strings.Repeat("x", 80<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("80 KiB header: %d; want 431", resp.StatusCode)
		}
	})
}

// h2Conn is a raw HTTP/2 connection to a gRPC server, for sending what no
// gRPC client sends: pings at any pace.
type h2Conn struct {
	mu     sync.Mutex // serializes writes
	fr     *http2.Framer
	frames chan h2Frame // what the server sends, but SETTINGS; closed at EOF
}

// h2Frame is what a test needs of a frame the server sent.
type h2Frame struct {
	Type      http2.FrameType
	Ack       bool
	GoAwayErr http2.ErrCode
	Debug     string
}

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := &h2Conn{fr: http2.NewFramer(conn, conn), frames: make(chan h2Frame, 64)}
	if err := c.write(func(fr *http2.Framer) error { return fr.WriteSettings() }); err != nil {
		t.Fatal(err)
	}
	go func() { // owns reading, until the connection closes
		defer close(c.frames)
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				return
			}
			h := h2Frame{Type: f.Header().Type, Ack: f.Header().Flags.Has(http2.FlagPingAck)}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					c.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() }) //nolint:errcheck // a broken connection shows in the reads
				}
				continue
			case *http2.GoAwayFrame:
				h.GoAwayErr, h.Debug = f.ErrCode, string(f.DebugData())
			}
			c.frames <- h
		}
	}()
	return c
}

func (c *h2Conn) write(w func(*http2.Framer) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return w(c.fr)
}

func (c *h2Conn) ping(t *testing.T) {
	t.Helper()
	if err := c.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{'s', 'l', 'u', 'i', 'c', 'e'}) }); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

// next returns the next frame of type typ within d; ok is false if none
// came.
func (c *h2Conn) next(typ http2.FrameType, d time.Duration) (f h2Frame, ok bool) {
	timeout := time.After(d)
	for {
		select {
		case f, open := <-c.frames:
			if !open {
				return h2Frame{}, false
			}
			if f.Type == typ {
				return f, true
			}
		case <-timeout:
			return h2Frame{}, false
		}
	}
}

// noJobs is an Enqueuer for a gateway.Service that serves no job calls.
type noJobs struct{ gateway.Enqueuer }

// TestGRPCKeepalive checks the gRPC server's keepalive settings with pings
// no gRPC client would send: too frequent ones close the connection, ones at
// the permitted pace do not even without calls in progress, an idle
// connection is closed after MaxConnectionIdle, and the server pings a
// quiet client after KeepaliveTime.
func TestGRPCKeepalive(t *testing.T) {
	svc, err := gateway.NewService(gateway.Config{Jobs: noJobs{}, Functions: []gateway.Function{{Name: "echo"}}})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(t *testing.T, cfg gateway.GRPCConfig) string {
		srv, _ := gateway.NewGRPCServer(svc, cfg)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln) //nolint:errcheck // Stop ends it
		t.Cleanup(srv.Stop)
		return ln.Addr().String()
	}

	t.Run("pings too often, by default", func(t *testing.T) {
		t.Parallel()
		c := dialH2(t, serve(t, gateway.GRPCConfig{}))
		for range 6 {
			c.ping(t)
		}
		f, ok := c.next(http2.FrameGoAway, 5*time.Second)
		if !ok || f.GoAwayErr != http2.ErrCodeEnhanceYourCalm || f.Debug != "too_many_pings" {
			t.Errorf("six pings at once: GOAWAY %v (%v %q); want ENHANCE_YOUR_CALM too_many_pings", ok, f.GoAwayErr, f.Debug)
		}
	})

	t.Run("pings at the permitted pace without calls", func(t *testing.T) {
		t.Parallel()
		c := dialH2(t, serve(t, gateway.GRPCConfig{KeepaliveMinTime: 100 * time.Millisecond}))
		for i := range 6 {
			if i > 0 {
				time.Sleep(150 * time.Millisecond) // the pace under test, just above MinTime
			}
			c.ping(t)
			if f, ok := c.next(http2.FramePing, 5*time.Second); !ok || !f.Ack {
				t.Fatalf("ping %d at 150ms intervals (MinTime 100ms): no ACK; the connection closed", i+1)
			}
		}
		if f, ok := c.next(http2.FrameGoAway, 200*time.Millisecond); ok {
			t.Errorf("pings at the permitted pace: GOAWAY %v %q", f.GoAwayErr, f.Debug)
		}
	})

	t.Run("idle connection", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		c := dialH2(t, serve(t, gateway.GRPCConfig{MaxConnectionIdle: 200 * time.Millisecond}))
		f, ok := c.next(http2.FrameGoAway, 5*time.Second)
		if !ok || f.GoAwayErr != http2.ErrCodeNo || f.Debug != "max_idle" {
			t.Errorf("idle connection: GOAWAY %v (%v %q) after %v; want NO_ERROR max_idle after about 200ms", ok, f.GoAwayErr, f.Debug, time.Since(start))
		}
	})

	t.Run("server pings a quiet client", func(t *testing.T) {
		t.Parallel()
		c := dialH2(t, serve(t, gateway.GRPCConfig{KeepaliveTime: time.Second}))
		if f, ok := c.next(http2.FramePing, 5*time.Second); !ok || f.Ack {
			t.Errorf("no ping from the server within 5s with KeepaliveTime 1s")
		}
	})
}

// TestRESTRefusals covers refusals the fuzz test found wanting: each gets a
// 4xx JSON error and stores no job.
func TestRESTRefusals(t *testing.T) {
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "echo", URL: "http://127.0.0.1:1"})
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
		want               int
		wantMessage        string
	}{
		// grpc-gateway's default answers 501 (UNIMPLEMENTED).
		{"known path, wrong method", "POST", "/v1/functions/echo", nil, http.StatusMethodNotAllowed, "POST is not allowed on /v1/functions/echo"},
		// gRPC metadata carries printable ASCII only; grpc-gateway drops
		// anything else and the submit would run without it.
		{"unicode Idempotency-Key", "POST", "/v1/functions/echo/jobs", http.Header{"Idempotency-Key": {"ключ"}}, http.StatusBadRequest, "Idempotency-Key must be printable ASCII"},
		{"Idempotency-Key with a tab", "POST", "/v1/functions/echo/jobs", http.Header{"Idempotency-Key": {"a\tb"}}, http.StatusBadRequest, "Idempotency-Key must be printable ASCII"},
		{"unicode Sluice-Callback-Url", "POST", "/v1/functions/echo/jobs", http.Header{"Sluice-Callback-Url": {"https://exämple.com/cb"}}, http.StatusBadRequest, "Sluice-Callback-Url must be printable ASCII"},
		// Strings the gRPC services get must be UTF-8, or the call fails to
		// marshal: 500.
		{"function name not UTF-8", "POST", "/v1/functions/%C9/jobs", nil, http.StatusBadRequest, "the path is not valid UTF-8"},
		{"job id not UTF-8", "GET", "/v1/jobs/%FF", nil, http.StatusBadRequest, "the path is not valid UTF-8"},
		{"query not UTF-8", "POST", "/v1/functions/echo/jobs?idempotency_key=%FF", nil, http.StatusBadRequest, "the query string is not valid UTF-8"},
		{"Content-Type not UTF-8", "POST", "/v1/functions/echo/jobs", http.Header{"Content-Type": {"text/plain; x=\"\xff\""}}, http.StatusBadRequest, "Content-Type is not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := jobsPublished(t, g)
			req, err := http.NewRequestWithContext(t.Context(), tc.method, g.Base+tc.path, strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s: %d %s; want %d", tc.method, tc.path, resp.StatusCode, b, tc.want)
			}
			if msg := decodeRESTError(t, resp.Header.Get("Content-Type"), b); !strings.Contains(msg, tc.wantMessage) {
				t.Errorf("message %q; want it to contain %q", msg, tc.wantMessage)
			}
			if n := jobsPublished(t, g) - before; n != 0 {
				t.Errorf("%d jobs stored", n)
			}
		})
	}
}

// headerValue is s with the bytes no HTTP client may send in a header value
// (controls but tab) replaced by '?'.
func headerValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

var locationPattern = regexp.MustCompile(`^/v1/jobs/[A-Z2-7]{26}$`)

// maxFuzzBody caps the zeros FuzzSubmitREST pads a body with: one byte over
// the default limit. Large bodies come from a small size this way, so the
// corpus stays small and minimizing an input stays quick (it tries the
// input without each of its bytes in turn).
const maxFuzzBody = mib + 1

// FuzzSubmitREST submits whatever the fuzzer makes of a function name,
// payload (and its size), Content-Type, Idempotency-Key and query string to
// POST /v1/functions/{name}/jobs, with or without Content-Length, and
// checks that the gateway answers sensibly: never a 5xx but 503 (nor a
// dropped connection, which is how net/http shows a handler's panic); a 202
// names a job that GET then finds, and that the same submit with the same
// idempotency key returns again; a 4xx is a JSON error with a code and a
// message.
func FuzzSubmitREST(f *testing.F) {
	for _, seed := range []struct {
		function    string
		body        []byte
		size        uint32 // padded with zeros to this size, up to maxFuzzBody
		contentType string
		key         string
		query       string
		chunked     bool
	}{
		{"echo", []byte(`{"hello": "world"}`), 0, "application/json", "", "", false},
		{"echo", []byte{0, 1, 2, 0xff, 0xfe, '\n'}, 0, "application/octet-stream", "key-1", "", true},
		{"echo", nil, 0, "", "", "", false},
		{"echo", []byte("{not json"), 0, "application/json; charset=utf-8", "", "", false},
		{"echo", []byte("a=b&c=d"), 0, "application/x-www-form-urlencoded", "", "", false},
		{"echo", []byte("--x\r\n\r\n--x--"), 0, "multipart/form-data; boundary=x", "", "", true},
		{"echo", []byte("text"), 0, "text/plain; charset=ünïcödé", "ключ-идемпотентности", "", false},
		{"echo", []byte("x"), 0, ";;;=", "\x01\x02", "", false},
		{"echo", []byte("x"), 0, "", strings.Repeat("k", 256), "", false},
		{"echo", []byte("x"), 0, "", " padded key ", "", false},
		{"echo", []byte("x"), 0, "text/plain", "ключ", "", false},
		{"echo", []byte("x"), 0, "text/plain", "a\tb", "", false},
		{"echo", []byte("at the limit"), mib, "application/octet-stream", "", "", false},
		{"echo", []byte("over the limit"), mib + 1, "application/octet-stream", "", "", false},
		{"echo", []byte("over the limit, chunked"), mib + 1, "application/octet-stream", "", "", true},
		{"small", bytes.Repeat([]byte("s"), 65), 0, "text/plain", "", "", false},
		{"small", bytes.Repeat([]byte("c"), 65), 0, "text/plain", "", "", true},
		{"small", bytes.Repeat([]byte("s"), 64), 0, "text/plain", "", "", true},
		{"echo", []byte("x"), 0, "text/plain", "", "idempotency_key=from-query", false},
		{"echo", []byte("x"), 0, "text/plain", "", "callback_url=http://example.com/cb", false},
		{"echo", []byte("x"), 0, "text/plain", "", "payload.data=AAAA&function=small", false},
		{"echo", []byte("x"), 0, "text/plain", "", "%zz&a=b&a=c", false},
		{"../x", []byte("x"), 0, "text/plain", "", "", false},
		{"../../openapi.json", []byte("x"), 0, "text/plain", "", "", false},
		{"%00", []byte("x"), 0, "text/plain", "", "", false},
		{"%65cho", []byte("x"), 0, "text/plain", "", "", false},
		{"echo%2Fjobs", []byte("x"), 0, "text/plain", "", "", false},
		{"echo:invoke", []byte("x"), 0, "text/plain", "", "", false},
		{"ECHO", []byte("x"), 0, "text/plain", "", "", false},
		{"ключ", []byte("x"), 0, "text/plain", "", "", false},
		{"", []byte("x"), 0, "text/plain", "", "", false},
		{"a b", []byte("x"), 0, "text/plain", "", "", false},
		{"echo?x=1#frag", []byte("x"), 0, "text/plain", "", "", false},
		{strings.Repeat("e", 300), []byte("x"), 0, "text/plain", "", "", false},
	} {
		f.Add(seed.function, seed.body, seed.size, seed.contentType, seed.key, seed.query, seed.chunked)
	}

	sim := fnsim.New(fnsim.Config{})
	fn := httptest.NewServer(sim)
	f.Cleanup(fn.Close)
	g := servertest.StartConfig(f, f.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{
			{Name: "echo", URL: fn.URL},
			{Name: "small", URL: fn.URL, MaxPayload: 64},
		},
		// Fuzzing makes many jobs; no need to fsync each.
		Buffer: config.BufferConfig{Durability: "interval"},
	})
	client := &http.Client{
		Timeout: 30 * time.Second,
		// A path that cleans to another gets a redirect: that is the answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	f.Fuzz(func(t *testing.T, function string, body []byte, size uint32, contentType, key, query string, chunked bool) {
		if n := int(min(size, maxFuzzBody)); n > len(body) {
			padded := make([]byte, n)
			copy(padded, body)
			body = padded
		}
		target := g.Base + "/v1/functions/" + function + "/jobs"
		if query != "" {
			target += "?" + query
		}
		// net/http escapes a space in the path but sends the query as it
		// is: a space there would break the request line, which the HTTP
		// server refuses before Sluice sees it.
		if _, err := url.Parse(target); err != nil || strings.Contains(query, " ") {
			// Not a URL a client could send: send the same with the name
			// and query escaped.
			target = g.Base + "/v1/functions/" + url.PathEscape(function) + "/jobs"
			if query != "" {
				target += "?" + url.QueryEscape(query)
			}
		}
		contentType, key = headerValue(contentType), headerValue(key)
		submit := func() (*http.Response, []byte) {
			var r io.Reader = bytes.NewReader(body)
			if chunked {
				r = io.MultiReader(r) // of unknown length
			}
			req, err := http.NewRequestWithContext(t.Context(), "POST", target, r)
			if err != nil {
				t.Fatalf("request to %q: %v", target, err)
			}
			if chunked {
				req.ContentLength = -1
			}
			if contentType != "" {
				req.Header.Set("Content-Type", contentType)
			}
			if key != "" {
				req.Header.Set("Idempotency-Key", key)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("POST %q (Content-Type %q, Idempotency-Key %q, %d bytes, chunked %v): %v",
					target, contentType, key, len(body), chunked, err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("POST %q: reading the answer: %v", target, err)
			}
			return resp, b
		}

		resp, b := submit()
		switch code := resp.StatusCode; {
		case code == http.StatusAccepted:
			loc := resp.Header.Get("Location")
			if !locationPattern.MatchString(loc) {
				t.Fatalf("POST %q: 202 with Location %q", target, loc)
			}
			job := decodeJob(t, b)
			if "/v1/jobs/"+job.ID != loc || (job.Function != "echo" && job.Function != "small") {
				t.Fatalf("POST %q: 202 with Location %q and job %+v", target, loc, job)
			}
			got, gb := get(t, g.Base+loc)
			if got.StatusCode != http.StatusOK || decodeJob(t, gb).ID != job.ID {
				t.Fatalf("GET %s after 202: %d %s", loc, got.StatusCode, gb)
			}
			if strings.Trim(key, " \t") != "" {
				again, ab := submit()
				if again.StatusCode != http.StatusAccepted || again.Header.Get("Location") != loc || again.Header.Get("Idempotent-Replayed") != "true" {
					t.Fatalf("POST %q with Idempotency-Key %q again: %d, Location %q, Idempotent-Replayed %q, %s; want 202 replaying %s",
						target, key, again.StatusCode, again.Header.Get("Location"), again.Header.Get("Idempotent-Replayed"), ab, loc)
				}
			}
		case code == http.StatusMovedPermanently || code == http.StatusTemporaryRedirect || code == http.StatusPermanentRedirect:
			if resp.Header.Get("Location") == "" {
				t.Fatalf("POST %q: %d without Location", target, code)
			}
		case code >= 400 && code < 500:
			var e restError
			if err := json.Unmarshal(b, &e); err != nil || e.Code == nil || e.Message == nil {
				t.Fatalf("POST %q: %d with %q, not a JSON error with code and message", target, code, b)
			}
		case code == http.StatusServiceUnavailable:
		default:
			t.Fatalf("POST %q (Content-Type %q, Idempotency-Key %q, %d bytes, chunked %v): %d %s",
				target, contentType, key, len(body), chunked, code, b)
		}
	})
}
