package gateway

import (
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// StreamLimits bound the long-lived calls one gateway process holds open,
// so that no tenant, connection or anonymous caller can take them all. A
// call over a limit is refused at once with RESOURCE_EXHAUSTED and
// RetryInfo (429 and Retry-After over REST). The zero value takes the
// defaults.
type StreamLimits struct {
	// Watches is the most job watches (WatchJob; REST :watch) open at
	// once, of all tenants. Zero means [DefaultWatches].
	Watches int
	// WatchesPerTenant is the most one tenant may have open. Without
	// tenants it does not apply (Watches and WatchesPerConnection do).
	// Zero means [DefaultWatchesPerTenant].
	WatchesPerTenant int
	// WatchesPerConnection is the most one client connection may have
	// open: a gRPC connection, or for REST the HTTP connection (which over
	// HTTP/1.1 carries one at a time). Zero means
	// [DefaultWatchesPerConnection].
	WatchesPerConnection int
	// Unauthenticated is the most streams open at once of the methods
	// that need no API key: the health service's Watch and server
	// reflection. Zero means [DefaultUnauthenticatedStreams].
	Unauthenticated int
	// UnauthenticatedPerConnection is the most of those one gRPC
	// connection may have open. Zero means
	// [DefaultUnauthenticatedStreamsPerConnection].
	UnauthenticatedPerConnection int
}

// Defaults of [StreamLimits].
const (
	DefaultWatches              = 10_000
	DefaultWatchesPerTenant     = 1_000
	DefaultWatchesPerConnection = 100
	// A client checking health opens one Watch per connection, and
	// grpcurl one reflection stream per command.
	DefaultUnauthenticatedStreams              = 1_000
	DefaultUnauthenticatedStreamsPerConnection = 4
)

func (l *StreamLimits) setDefaults() {
	orDefault := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	orDefault(&l.Watches, DefaultWatches)
	orDefault(&l.WatchesPerTenant, DefaultWatchesPerTenant)
	orDefault(&l.WatchesPerConnection, DefaultWatchesPerConnection)
	orDefault(&l.Unauthenticated, DefaultUnauthenticatedStreams)
	orDefault(&l.UnauthenticatedPerConnection, DefaultUnauthenticatedStreamsPerConnection)
}

// streamRetryAfter is the Retry-After of a stream refused for a limit:
// streams end when their jobs do, or their callers leave, at no rate one
// could predict.
const streamRetryAfter = 5 * time.Second

// streamCounts counts open streams: in all, by tenant and by connection.
// It is safe for concurrent use.
type streamCounts struct {
	what     string // "job watches", for refusals
	mu       sync.Mutex
	total    int
	byTenant map[string]int
	byConn   map[string]int
}

// streamLimit is one limit a stream is held to.
type streamLimit struct {
	tenant  string // "" for none
	perTen  int
	conn    string
	perConn int
	total   int
}

// open takes a place for a stream, and returns the function that gives it
// back; or, over a limit, the refusal.
func (c *streamCounts) open(l streamLimit) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byTenant == nil {
		c.byTenant, c.byConn = make(map[string]int), make(map[string]int)
	}
	// The caller's own limits first: they say what it can change.
	switch {
	case c.byConn[l.conn] >= l.perConn:
		return nil, overLimit(streamRetryAfter, "this connection has %d %s open, its limit", c.byConn[l.conn], c.what)
	case l.tenant != "" && c.byTenant[l.tenant] >= l.perTen:
		return nil, overLimit(streamRetryAfter, "tenant %q has %d %s open, its limit", l.tenant, c.byTenant[l.tenant], c.what)
	case c.total >= l.total:
		// No count: it would tell of other tenants' calls.
		return nil, overLimit(streamRetryAfter, "this gateway has as many %s open as it allows", c.what)
	}
	c.total++
	c.byConn[l.conn]++
	if l.tenant != "" {
		c.byTenant[l.tenant]++
	}
	var once sync.Once
	return func() { once.Do(func() { c.close(l) }) }, nil
}

func (c *streamCounts) close(l streamLimit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.byConn[l.conn]--; c.byConn[l.conn] == 0 {
		delete(c.byConn, l.conn)
	}
	if l.tenant != "" {
		if c.byTenant[l.tenant]--; c.byTenant[l.tenant] == 0 {
			delete(c.byTenant, l.tenant)
		}
	}
}

// openWatch takes a place for a job watch of the request's tenant on its
// connection.
func (s *Service) openWatch(ctx context.Context) (release func(), err error) {
	l := streamLimit{conn: s.connectionOf(ctx), perConn: s.streams.WatchesPerConnection, total: s.streams.Watches}
	if t := tenantOf(ctx); t != nil {
		l.tenant, l.perTen = t.Name, s.streams.WatchesPerTenant
	}
	return s.watches.open(l)
}

// openUnauthenticated takes a place for a stream of a method that needs no
// API key.
func (s *Service) openUnauthenticated(ctx context.Context) (release func(), err error) {
	return s.anonymous.open(streamLimit{
		conn: s.connectionOf(ctx), perConn: s.streams.UnauthenticatedPerConnection, total: s.streams.Unauthenticated,
	})
}

// metadataRESTConnection carries, on a stream REST opens, the HTTP
// connection it came on: the bridge token, a space and the client's
// address. Without the token (which only this process knows) it is not
// believed.
const metadataRESTConnection = "sluice-rest-connection"

// RESTConnectionMetadata is the metadata with which the REST handler
// (package rest) opens a stream for a request that came on the HTTP
// connection from remoteAddr. Every REST stream reaches the services over
// one in-memory gRPC connection; this names the HTTP connection instead,
// for [StreamLimits.WatchesPerConnection]. It carries a token only this
// Service knows: the same metadata from any other caller is not believed.
func (s *Service) RESTConnectionMetadata(remoteAddr string) metadata.MD {
	return metadata.Pairs(metadataRESTConnection, s.bridgeToken+" "+remoteAddr)
}

// connectionOf names the client connection of a call: for one REST made,
// the HTTP connection it came on; otherwise the gRPC connection's two
// ends.
func (s *Service) connectionOf(ctx context.Context) string {
	for _, v := range metadata.ValueFromIncomingContext(ctx, metadataRESTConnection) {
		if addr, ok := strings.CutPrefix(v, s.bridgeToken+" "); ok {
			return "rest " + addr
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		local := ""
		if p.LocalAddr != nil {
			local = p.LocalAddr.String()
		}
		return "grpc " + p.Addr.String() + " " + local
	}
	return "grpc"
}

// newBridgeToken is a secret for REST's streams to name their HTTP
// connection with.
func newBridgeToken() string {
	return rand.Text()
}
