package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// HTTPConn is one keep-alive HTTP/1.1 connection that sends one request at
// a time. It is not safe for concurrent use: a benchmark gives each of its
// clients a connection of its own. net/http's client spends two goroutines
// and their hand-offs per connection; HTTPConn writes and reads from the
// calling goroutine.
type HTTPConn struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
	req  []byte // the request being written
}

// DialHTTP connects to an HTTP server at addr ("host:port").
func DialHTTP(ctx context.Context, addr string) (*HTTPConn, error) {
	c := &HTTPConn{addr: addr}
	if err := c.dial(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *HTTPConn) dial(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	c.conn, c.br = conn, bufio.NewReaderSize(conn, 16<<10)
	return nil
}

// Close closes the connection.
func (c *HTTPConn) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// Post sends body to path with the given content type and header pairs
// (name, value), and returns the answer's status code and body. After an
// error the connection is closed, and the next Post dials a new one.
func (c *HTTPConn) Post(ctx context.Context, path, contentType string, body []byte, header ...string) (int, []byte, error) {
	if len(header)%2 != 0 {
		return 0, nil, errors.New("loadgen: header comes in name, value pairs")
	}
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			return 0, nil, err
		}
	}
	conn := c.conn
	dl, _ := ctx.Deadline() // zero: none
	conn.SetDeadline(dl)    //nolint:errcheck // a closed connection fails the write below
	// ctx's end interrupts the request by putting the deadline in the past.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) }) //nolint:errcheck // likewise
	defer func() {
		// If ctx ended, that deadline may land at any moment, even on the
		// next request: the connection is spent.
		if !stop() && c.conn == conn {
			c.drop()
		}
	}()

	c.req = append(c.req[:0], "POST "...)
	c.req = append(c.req, path...)
	c.req = append(c.req, " HTTP/1.1\r\nHost: "...)
	c.req = append(c.req, c.addr...)
	c.req = append(c.req, "\r\nContent-Type: "...)
	c.req = append(c.req, contentType...)
	c.req = append(c.req, "\r\nContent-Length: "...)
	c.req = strconv.AppendInt(c.req, int64(len(body)), 10)
	for i := 0; i < len(header); i += 2 {
		c.req = append(c.req, "\r\n"...)
		c.req = append(c.req, header[i]...)
		c.req = append(c.req, ": "...)
		c.req = append(c.req, header[i+1]...)
	}
	c.req = append(c.req, "\r\n\r\n"...)
	c.req = append(c.req, body...)
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, nil, c.fail(ctx, err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, nil, c.fail(ctx, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, nil, c.fail(ctx, err)
	}
	if resp.Close {
		c.drop()
	}
	return resp.StatusCode, b, nil
}

// drop forgets a connection that cannot carry another request; the next
// Post dials again.
func (c *HTTPConn) drop() {
	c.conn.Close()
	c.conn = nil
}

// fail drops the connection after an I/O error and says why the request
// failed, preferring ctx's error to the I/O error its end caused: the
// connection's deadline is ctx's, and may fire a moment before ctx's own
// timer.
func (c *HTTPConn) fail(ctx context.Context, err error) error {
	c.drop()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return fmt.Errorf("loadgen: %s: %w", c.addr, err)
}
