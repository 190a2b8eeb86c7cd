package gateway

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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
}

// NewGRPCServer returns a gRPC server with the Sluice services, the
// standard health service (reporting SERVING; set it NOT_SERVING with the
// returned health server when draining) and server reflection.
func NewGRPCServer(svc *Service, cfg GRPCConfig, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	if cfg.MaxRecvMsgSize == 0 {
		cfg.MaxRecvMsgSize = int(svc.MaxPayload("")) + 64<<10
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = 1000
	}
	opts = append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(svc.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(svc.StreamInterceptor()),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
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
