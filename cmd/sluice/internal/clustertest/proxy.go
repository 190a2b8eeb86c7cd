package clustertest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// CutProxy forwards TCP connections to a target until cut: then it drops
// every connection it holds and refuses new ones (dropMode), or keeps them
// open and forwards nothing (blackhole mode), until restored.
type CutProxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	cut       bool
	blackhole bool
	conns     map[net.Conn]bool
}

// StartCutProxy starts a proxy to target (host:port) on a fresh loopback
// port; it stops when the test ends.
func StartCutProxy(tb testing.TB, target string) *CutProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &CutProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	tb.Cleanup(func() { ln.Close(); p.closeAll() })
	go p.serve()
	return p
}

// URL is the proxy's address as a NATS URL.
func (p *CutProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *CutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies from src to dst, holding bytes back while blackholed.
func (p *CutProxy) pipe(dst, src net.Conn) {
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for {
				p.mu.Lock()
				hold := p.cut && p.blackhole
				p.mu.Unlock()
				if !hold {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			// Whatever arrived during a blackhole is held back and
			// delivered after it, as TCP retransmits across a short
			// partition.
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Cut drops the connections (or, with blackhole, silences them).
func (p *CutProxy) Cut(blackhole bool) {
	p.mu.Lock()
	p.cut, p.blackhole = true, blackhole
	p.mu.Unlock()
	if !blackhole {
		p.closeAll()
	}
}

// Restore forwards again.
func (p *CutProxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

func (p *CutProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}
