package gateway

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
)

// GRPCConfig holds the gRPC server's limits. The zero value is usable.
type GRPCConfig struct {
	// MaxRecvMsgSize bounds one request message. Zero means the largest
	// function payload limit plus 64 KiB for the envelope.
	MaxRecvMsgSize int
	// MaxConcurrentStreams bounds concurrent calls per connection. Zero
	// means 1000.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a call's headers (metadata), which the
	// server reads before authentication. Zero means DefaultMaxHeaderBytes,
	// as REST.
	MaxHeaderListSize uint32

	// KeepaliveMinTime is how often a client may ping at most, with or
	// without calls in progress; a client that pings more often has its
	// connection closed (GOAWAY ENHANCE_YOUR_CALM, "too_many_pings").
	// Zero means 5s, which lets grpc-go clients ping as often as they can
	// (every 10s) with room for jitter.
	KeepaliveMinTime time.Duration
	// MaxConnectionIdle closes, with a GOAWAY, a connection that has had
	// no call in progress for this long; clients reconnect when they next
	// call. Zero means 5 minutes.
	MaxConnectionIdle time.Duration
	// KeepaliveTime is how long a connection may go without any traffic
	// before the server pings the client to see it is still there, and
	// KeepaliveTimeout how long it waits for the answer before closing
	// the connection. Zero means 1 minute and 20 seconds.
	KeepaliveTime, KeepaliveTimeout time.Duration
}

// DefaultMaxHeaderBytes bounds a request's headers, over gRPC and REST.
const DefaultMaxHeaderBytes = 64 << 10

// NewGRPCServer returns a gRPC server with the Sluice services, the
// standard health service (reporting SERVING; set it NOT_SERVING with the
// returned health server when draining) and server reflection.
func NewGRPCServer(svc *Service, cfg GRPCConfig, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	if cfg.MaxRecvMsgSize == 0 {
		cfg.MaxRecvMsgSize = int(svc.MaxPayload("")) + 64<<10
	}
	if cfg.MaxHeaderListSize == 0 {
		cfg.MaxHeaderListSize = DefaultMaxHeaderBytes
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = 1000
	}
	orDefault := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	orDefault(&cfg.KeepaliveMinTime, 5*time.Second)
	orDefault(&cfg.MaxConnectionIdle, 5*time.Minute)
	orDefault(&cfg.KeepaliveTime, time.Minute)
	orDefault(&cfg.KeepaliveTimeout, 20*time.Second)
	opts = append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(svc.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(svc.StreamInterceptor()),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(cfg.MaxHeaderListSize),
		// Submits wait for a group commit, so many handlers are running at
		// once; reused workers keep the stacks they grew, where a goroutine
		// per call grows (copies) its stack on every call.
		grpc.NumStreamWorkers(256),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: cfg.MaxConnectionIdle,
			Time:              cfg.KeepaliveTime,
			Timeout:           cfg.KeepaliveTimeout,
		}),
	}, opts...)
	srv := grpc.NewServer(opts...)
	sluicev1.RegisterJobServiceServer(srv, svc)
	sluicev1.RegisterFunctionServiceServer(srv, svc)
	sluicev1.RegisterDeadLetterServiceServer(srv, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs
}
