// Package loadgen is the bench commands' load generator: clients of
// Sluice's gRPC and REST APIs that spend as little CPU as they can, so that
// on a machine the generator shares with the gateway and JetStream, the
// benchmark measures the gateway rather than its clients. They do only what
// a benchmark needs: unary gRPC calls over a cleartext HTTP/2 connection
// (GRPCConn), and HTTP/1.1 requests over a keep-alive connection (HTTPConn).
//
// grpc-go's client costs about 25 µs of CPU per unary call on the machines
// Sluice is benchmarked on: two goroutine hand-offs, a write syscall and
// allocations per call. GRPCConn writes each call's frames straight from the
// calling goroutine, coalescing the writes of calls made at the same time,
// and one goroutine reads every answer.
package loadgen

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The windows GRPCConn grants the server: large enough that answers never
// wait for a window update.
const (
	recvWindow       = 1 << 30
	recvWindowRefill = 1 << 29
)

// GRPCConn is one HTTP/2 connection carrying unary gRPC calls. It is safe
// for concurrent use.
type GRPCConn struct {
	conn      net.Conn
	authority string
	metadata  []hpack.HeaderField

	// waiting counts goroutines about to take wmu, so that the last of a
	// run of writers flushes for all of them.
	waiting atomic.Int32
	wmu     sync.Mutex // guards what follows, and writes on conn
	bw      *bufio.Writer
	fr      *http2.Framer
	henc    *hpack.Encoder
	hbuf    []byte
	nextID  uint32

	mu         sync.Mutex // guards what follows
	cond       *sync.Cond // signalled when a window grows or a stream ends
	calls      map[uint32]*call
	active     int    // streams open or about to be: at most maxStreams
	windowGen  uint64 // counts changes of the send windows
	connWindow int64  // what the server lets us send on the connection
	initWindow int64  // each new stream's send window
	maxFrame   int
	maxStreams int
	err        error // why the connection ended; nil while it works

	readDone chan struct{}
}

// call is one unary call in flight.
type call struct {
	window  int64 // send window of its stream; guarded by GRPCConn.mu
	data    []byte
	code    codes.Code
	message string
	gotCode bool
	err     error
	done    chan struct{}
}

// DialGRPC connects to a cleartext gRPC server at addr ("host:port"). md
// are metadata pairs (lower-case name, value) sent with every call.
func DialGRPC(ctx context.Context, addr string, md ...string) (*GRPCConn, error) {
	if len(md)%2 != 0 {
		return nil, errors.New("loadgen: metadata comes in name, value pairs")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &GRPCConn{
		conn:       conn,
		authority:  addr,
		bw:         bufio.NewWriterSize(conn, 64<<10),
		calls:      make(map[uint32]*call),
		connWindow: 65535,
		initWindow: 65535,
		maxFrame:   16384,
		maxStreams: 100, // until the server's settings say otherwise
		nextID:     1,
		readDone:   make(chan struct{}),
	}
	for i := 0; i < len(md); i += 2 {
		c.metadata = append(c.metadata, hpack.HeaderField{Name: md[i], Value: md[i+1]})
	}
	c.cond = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(conn, 64<<10))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.henc = hpack.NewEncoder(headerWriter{c})
	// The preface, our settings, and the connection's window opened wide.
	c.bw.WriteString(http2.ClientPreface) //nolint:errcheck // buffered: Flush reports
	err = c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: recvWindow},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	if err == nil {
		err = c.fr.WriteWindowUpdate(0, recvWindow-65535)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// headerWriter appends the encoder's output to the call's header block.
type headerWriter struct{ c *GRPCConn }

func (w headerWriter) Write(p []byte) (int, error) {
	w.c.hbuf = append(w.c.hbuf, p...)
	return len(p), nil
}

// Close closes the connection and fails the calls in flight.
func (c *GRPCConn) Close() error {
	err := c.conn.Close()
	<-c.readDone
	return err
}

// Invoke calls method ("/package.Service/Method") with req and decodes the
// answer into resp. A call the server refuses returns a status error, as
// grpc-go's client does.
func (c *GRPCConn) Invoke(ctx context.Context, method string, req, resp proto.Message) error {
	body, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 5, 5+proto.Size(req)), req)
	if err != nil {
		return err
	}
	body[0] = 0 // not compressed
	binary.BigEndian.PutUint32(body[1:5], uint32(len(body)-5))

	cl := &call{done: make(chan struct{})}
	id, err := c.send(ctx, method, cl, body)
	if err != nil {
		return err
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		c.cancel(id, cl)
		return status.FromContextError(ctx.Err()).Err()
	}
	if cl.err != nil {
		// The server ends a call at the deadline it was sent, which is
		// this one's or later: by then the caller's has passed.
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
		}
		return cl.err
	}
	if !cl.gotCode {
		return status.Error(codes.Internal, "loadgen: answer without grpc-status")
	}
	if cl.code != codes.OK {
		return status.Error(cl.code, cl.message)
	}
	if len(cl.data) < 5 || cl.data[0] != 0 || int(binary.BigEndian.Uint32(cl.data[1:5])) != len(cl.data)-5 {
		return status.Error(codes.Internal, "loadgen: answer is not one uncompressed message")
	}
	return proto.Unmarshal(cl.data[5:], resp)
}

// send opens a stream for cl and writes its headers and body.
func (c *GRPCConn) send(ctx context.Context, method string, cl *call, body []byte) (uint32, error) {
	// Wait for a free stream before taking the writer: the read loop needs
	// the writer to answer pings and settings, and it is what frees streams.
	c.mu.Lock()
	for c.err == nil && c.active >= c.maxStreams && ctx.Err() == nil {
		c.cond.Wait()
	}
	if err := c.errLocked(ctx); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	c.active++
	c.mu.Unlock()

	c.lockWriter()
	defer c.wmu.Unlock()
	c.mu.Lock()
	id := c.nextID
	c.nextID += 2
	cl.window = c.initWindow
	c.calls[id] = cl
	maxFrame := c.maxFrame
	c.mu.Unlock()

	c.hbuf = c.hbuf[:0]
	for _, f := range [...]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: method}, {Name: ":authority", Value: c.authority},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	} {
		c.henc.WriteField(f) //nolint:errcheck // writes to memory
	}
	for _, f := range c.metadata {
		c.henc.WriteField(f) //nolint:errcheck // writes to memory
	}
	if dl, ok := ctx.Deadline(); ok {
		c.henc.WriteField(hpack.HeaderField{Name: "grpc-timeout", Value: grpcTimeout(dl)}) //nolint:errcheck // writes to memory
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf, EndHeaders: true}); err != nil {
		return 0, c.fail(err)
	}
	for rest := body; ; {
		n, err := c.reserve(ctx, cl, min(len(rest), maxFrame))
		if err != nil {
			// The stream is open: end it, so the server does not wait for the rest.
			c.fr.WriteRSTStream(id, http2.ErrCodeCancel) //nolint:errcheck // the connection may have gone
			c.forget(id)
			c.flushUnlessWaiting() //nolint:errcheck // likewise
			return 0, err
		}
		last := n == len(rest)
		if err := c.fr.WriteData(id, last, rest[:n]); err != nil {
			return 0, c.fail(err)
		}
		if last {
			break
		}
		rest = rest[n:]
	}
	if err := c.flushUnlessWaiting(); err != nil {
		return 0, c.fail(err)
	}
	return id, nil
}

// lockWriter takes c.wmu, counting itself among the writers waiting for it
// meanwhile.
func (c *GRPCConn) lockWriter() {
	c.waiting.Add(1)
	c.wmu.Lock()
	c.waiting.Add(-1)
}

// reserve takes up to want bytes of the connection's and the stream's send
// windows, at least one unless want is 0. While they are shut it flushes
// and lets go of the writer (c.wmu, held by the caller): the read loop,
// which opens them, may need it.
func (c *GRPCConn) reserve(ctx context.Context, cl *call, want int) (int, error) {
	for {
		c.mu.Lock()
		if err := c.errLocked(ctx); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		if want == 0 || (c.connWindow > 0 && cl.window > 0) {
			n := int(min(int64(want), c.connWindow, cl.window))
			c.connWindow -= int64(n)
			cl.window -= int64(n)
			c.mu.Unlock()
			return n, nil
		}
		gen := c.windowGen
		c.mu.Unlock()

		err := c.bw.Flush() // the server grants windows for data it has seen
		c.wmu.Unlock()
		c.mu.Lock()
		for err == nil && c.windowGen == gen && c.err == nil && ctx.Err() == nil {
			c.cond.Wait()
		}
		c.mu.Unlock()
		c.lockWriter()
		if err != nil {
			return 0, c.fail(err)
		}
	}
}

// errLocked is why no call can proceed now: the connection's end or ctx's.
func (c *GRPCConn) errLocked(ctx context.Context) error {
	if c.err != nil {
		return status.Error(codes.Unavailable, c.err.Error())
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return nil
}

// flushUnlessWaiting flushes the writer unless another goroutine is about
// to write: the last of them flushes for all, one syscall for many calls.
// c.wmu is held.
func (c *GRPCConn) flushUnlessWaiting() error {
	if c.waiting.Load() > 0 {
		return nil
	}
	return c.bw.Flush()
}

// fail ends the connection after a write error.
func (c *GRPCConn) fail(err error) error {
	c.conn.Close()
	return status.Error(codes.Unavailable, err.Error())
}

// cancel resets a call's stream after its caller gave up on it.
func (c *GRPCConn) cancel(id uint32, cl *call) {
	if !c.forget(id) {
		return // it ended meanwhile
	}
	c.lockWriter()
	c.fr.WriteRSTStream(id, http2.ErrCodeCancel) //nolint:errcheck // the connection may have gone
	c.flushUnlessWaiting()                       //nolint:errcheck // likewise
	c.wmu.Unlock()
}

// forget removes a call from those in flight; false if it was not.
func (c *GRPCConn) forget(id uint32) bool { return c.take(id) != nil }

// finish ends a call: it is answered, or err says why not.
func (c *GRPCConn) finish(id uint32, err error) {
	if cl := c.take(id); cl != nil {
		cl.err = err
		close(cl.done)
	}
}

// take removes the call on a stream from those in flight, freeing its
// stream, and returns it; nil if there was none.
func (c *GRPCConn) take(id uint32) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.calls[id]
	if !ok {
		return nil
	}
	delete(c.calls, id)
	c.active--
	c.cond.Broadcast()
	return cl
}

// lookup is the call on a stream, nil if none.
func (c *GRPCConn) lookup(id uint32) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

// readLoop reads every frame the server sends until the connection ends,
// then fails the calls still in flight.
func (c *GRPCConn) readLoop() {
	defer close(c.readDone)
	err := c.read()
	c.conn.Close()
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	calls := c.calls
	c.calls = map[uint32]*call{}
	c.active -= len(calls)
	c.cond.Broadcast()
	c.mu.Unlock()
	for _, cl := range calls {
		cl.err = status.Error(codes.Unavailable, err.Error())
		close(cl.done)
	}
}

func (c *GRPCConn) read() error {
	var unacked int64 // connection-level bytes received since the last window update
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return fmt.Errorf("loadgen: read: %w", err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if cl := c.lookup(f.StreamID); cl != nil {
				if s := f.PseudoValue("status"); s != "" && s != "200" {
					c.finish(f.StreamID, status.Errorf(codes.Unavailable, "loadgen: HTTP status %s", s))
					continue
				}
				for _, hf := range f.Fields {
					switch hf.Name {
					case "grpc-status":
						n, _ := strconv.Atoi(hf.Value)
						cl.code, cl.gotCode = codes.Code(n), true
					case "grpc-message":
						cl.message = hf.Value
					}
				}
				if f.StreamEnded() {
					c.finish(f.StreamID, nil)
				}
			}
		case *http2.DataFrame:
			unacked += int64(f.Length)
			if cl := c.lookup(f.StreamID); cl != nil {
				cl.data = append(cl.data, f.Data()...)
				if f.StreamEnded() {
					c.finish(f.StreamID, nil)
				}
			}
			if unacked >= recvWindowRefill {
				if err := c.control(func() error { return c.fr.WriteWindowUpdate(0, uint32(unacked)) }); err != nil {
					return err
				}
				unacked = 0
			}
		case *http2.RSTStreamFrame:
			c.finish(f.StreamID, status.Errorf(codes.Unavailable, "loadgen: stream reset: %v", f.ErrCode))
		case *http2.WindowUpdateFrame:
			c.mu.Lock()
			if f.StreamID == 0 {
				c.connWindow += int64(f.Increment)
			} else if cl := c.calls[f.StreamID]; cl != nil {
				cl.window += int64(f.Increment)
			}
			c.windowGen++
			c.cond.Broadcast()
			c.mu.Unlock()
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			c.mu.Lock()
			f.ForeachSetting(func(s http2.Setting) error { //nolint:errcheck // never fails
				switch s.ID {
				case http2.SettingMaxConcurrentStreams:
					c.maxStreams = int(s.Val)
				case http2.SettingInitialWindowSize:
					delta := int64(s.Val) - c.initWindow
					c.initWindow = int64(s.Val)
					for _, cl := range c.calls {
						cl.window += delta
					}
					c.windowGen++
				case http2.SettingMaxFrameSize:
					c.maxFrame = int(s.Val)
				}
				return nil
			})
			c.cond.Broadcast()
			c.mu.Unlock()
			if err := c.control(c.fr.WriteSettingsAck); err != nil {
				return err
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := c.control(func() error { return c.fr.WritePing(true, f.Data) }); err != nil {
					return err
				}
			}
		case *http2.GoAwayFrame:
			c.mu.Lock()
			c.err = fmt.Errorf("loadgen: server sent GOAWAY (%v)", f.ErrCode)
			c.cond.Broadcast()
			c.mu.Unlock()
		}
	}
}

// control writes a connection-level frame from the read loop.
func (c *GRPCConn) control(write func() error) error {
	c.lockWriter()
	defer c.wmu.Unlock()
	if err := write(); err != nil {
		return err
	}
	return c.flushUnlessWaiting()
}

// grpcTimeout is the grpc-timeout header for a deadline.
func grpcTimeout(dl time.Time) string {
	d := time.Until(dl)
	if d <= 0 {
		return "1n"
	}
	return strconv.FormatInt(d.Milliseconds()+1, 10) + "m"
}
