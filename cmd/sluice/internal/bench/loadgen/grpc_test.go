package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/buffertest"
)

// echoService answers SubmitJob with a job whose ID is the payload's size
// and whose function is the request's: enough to tell each answer belongs
// to its call. A function named "fail:<code>" is refused with that code,
// "block" waits for the caller to give up, and the most calls running at
// once is counted.
type echoService struct {
	sluicev1.UnimplementedJobServiceServer
	running, most atomic.Int32
	key           atomic.Value // the last x-api-key metadata seen
}

func (s *echoService) SubmitJob(ctx context.Context, req *sluicev1.SubmitJobRequest) (*sluicev1.SubmitJobResponse, error) {
	n := s.running.Add(1)
	defer s.running.Add(-1)
	for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("x-api-key")) > 0 {
		s.key.Store(md.Get("x-api-key")[0])
	}
	switch f := req.GetFunction(); {
	case f == "block":
		<-ctx.Done()
		return nil, ctx.Err()
	case f == "slow":
		time.Sleep(20 * time.Millisecond) // the server's work
	case len(f) > 5 && f[:5] == "fail:":
		code, _ := strconv.Atoi(f[5:])
		return nil, status.Error(codes.Code(code), "refused: "+f)
	}
	return &sluicev1.SubmitJobResponse{Job: &sluicev1.Job{
		Id: strconv.Itoa(len(req.GetPayload().GetData())), Function: req.GetFunction(),
	}}, nil
}

// startEcho serves an echoService on loopback until the test ends.
func startEcho(t *testing.T, opts ...grpc.ServerOption) (*echoService, *grpc.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := &echoService{}
	srv := grpc.NewServer(opts...)
	sluicev1.RegisterJobServiceServer(srv, svc)
	go srv.Serve(ln) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	return svc, srv, ln.Addr().String()
}

func submit(ctx context.Context, c *GRPCConn, function string, size int) (*sluicev1.SubmitJobResponse, error) {
	var resp sluicev1.SubmitJobResponse
	err := c.Invoke(ctx, sluicev1.JobService_SubmitJob_FullMethodName, &sluicev1.SubmitJobRequest{
		Function: function,
		Payload:  &httpbody.HttpBody{ContentType: "application/octet-stream", Data: make([]byte, size)},
	}, &resp)
	return &resp, err
}

func dial(t *testing.T, addr string, md ...string) *GRPCConn {
	t.Helper()
	c, err := DialGRPC(t.Context(), addr, md...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestGRPCConnConcurrentCalls(t *testing.T) {
	svc, _, addr := startEcho(t)
	c := dial(t, addr, "x-api-key", "k1")
	const callers, calls = 200, 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for w := range callers {
		wg.Go(func() {
			for i := range calls {
				size := 1000 + w*calls + i // each call's own size
				fn := fmt.Sprintf("f%d", w)
				resp, err := submit(t.Context(), c, fn, size)
				if err != nil {
					errs <- err
					return
				}
				if resp.GetJob().GetId() != strconv.Itoa(size) || resp.GetJob().GetFunction() != fn {
					errs <- fmt.Errorf("call %d/%d got the answer %v", w, i, resp.GetJob())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := svc.key.Load(); got != "k1" {
		t.Errorf("metadata x-api-key reached the server as %v, want k1", got)
	}
}

// A request larger than HTTP/2's initial windows (64 KiB) and its frame
// size (16 KiB) is sent as the server's window updates allow.
func TestGRPCConnLargeRequests(t *testing.T) {
	_, _, addr := startEcho(t, grpc.MaxRecvMsgSize(8<<20))
	c := dial(t, addr)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			size := 3<<20 + i
			resp, err := submit(t.Context(), c, "big", size)
			if err != nil {
				t.Error(err)
				return
			}
			if resp.GetJob().GetId() != strconv.Itoa(size) {
				t.Errorf("got %s, want %d", resp.GetJob().GetId(), size)
			}
		})
	}
	wg.Wait()
}

func TestGRPCConnStatusErrors(t *testing.T) {
	_, _, addr := startEcho(t)
	c := dial(t, addr)
	for _, code := range []codes.Code{codes.InvalidArgument, codes.ResourceExhausted, codes.Unavailable} {
		_, err := submit(t.Context(), c, "fail:"+strconv.Itoa(int(code)), 10)
		if status.Code(err) != code || status.Convert(err).Message() != "refused: fail:"+strconv.Itoa(int(code)) {
			t.Errorf("got %v, want %v with the server's message", err, code)
		}
	}
	// An unknown method is grpc-go's Unimplemented, in a trailers-only answer.
	var resp sluicev1.SubmitJobResponse
	err := c.Invoke(t.Context(), "/sluice.v1.JobService/NoSuchMethod", &sluicev1.SubmitJobRequest{}, &resp)
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("unknown method: got %v, want Unimplemented", err)
	}
	// The connection still works.
	if _, err := submit(t.Context(), c, "ok", 10); err != nil {
		t.Fatal(err)
	}
}

// A call whose context ends is cancelled on the server, and the connection
// carries on.
func TestGRPCConnDeadline(t *testing.T) {
	_, _, addr := startEcho(t)
	c := dial(t, addr)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := submit(ctx, c, "block", 10)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if _, err := submit(t.Context(), c, "ok", 10); err != nil {
		t.Fatal(err)
	}
}

// Calls wait for a stream when the server's MAX_CONCURRENT_STREAMS is used
// up, and the server never sees more at once.
func TestGRPCConnMaxConcurrentStreams(t *testing.T) {
	svc, _, addr := startEcho(t, grpc.MaxConcurrentStreams(3))
	c := dial(t, addr)
	if _, err := submit(t.Context(), c, "ok", 1); err != nil { // the server's settings have arrived
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := submit(t.Context(), c, "slow", 10); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if m := svc.most.Load(); m > 3 {
		t.Errorf("the server ran %d calls at once, above its limit of 3", m)
	}
}

// When the server goes, the calls in flight and later ones fail with
// Unavailable, and none hangs.
func TestGRPCConnServerGone(t *testing.T) {
	svc, srv, addr := startEcho(t)
	c := dial(t, addr)
	errc := make(chan error, 1)
	go func() {
		_, err := submit(t.Context(), c, "block", 10)
		errc <- err
	}()
	buffertest.WaitFor(t, 5*time.Second, "the call in flight at the server", func() bool { return svc.running.Load() > 0 })
	srv.Stop()
	select {
	case err := <-errc:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("call in flight: got %v, want Unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call in flight did not end")
	}
	_, err := submit(t.Context(), c, "ok", 10)
	if status.Code(err) != codes.Unavailable {
		t.Errorf("later call: got %v, want Unavailable", err)
	}
	if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Errorf("close: %v", err)
	}
}
