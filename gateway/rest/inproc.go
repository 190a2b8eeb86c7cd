package rest

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/gateway"
)

// InProcessConn is a gRPC client connection to the Sluice services in this
// process, for REST (grpc-gateway) to call them through. A unary call runs
// the same interceptor and method a gRPC server would, with the caller's
// metadata as the incoming metadata, and no transport in between: no
// framing, no copying through buffers, no goroutines. Streaming calls,
// which grpc-gateway cannot make in process, go to Streams.
type InProcessConn struct {
	methods     map[string]inProcessMethod
	interceptor grpc.UnaryServerInterceptor
	streams     grpc.ClientConnInterface
}

type inProcessMethod struct {
	srv     any
	handler grpc.MethodHandler
}

var _ grpc.ClientConnInterface = (*InProcessConn)(nil)

// NewInProcessConn serves svc's unary methods in process, and sends
// streaming calls to streams (a real connection to a server of svc).
func NewInProcessConn(svc *gateway.Service, streams grpc.ClientConnInterface) *InProcessConn {
	c := &InProcessConn{methods: map[string]inProcessMethod{}, interceptor: svc.UnaryInterceptor(), streams: streams}
	for _, sd := range []*grpc.ServiceDesc{
		&sluicev1.JobService_ServiceDesc, &sluicev1.FunctionService_ServiceDesc, &sluicev1.DeadLetterService_ServiceDesc,
	} {
		for _, m := range sd.Methods {
			c.methods["/"+sd.ServiceName+"/"+m.MethodName] = inProcessMethod{srv: svc, handler: m.Handler}
		}
	}
	return c
}

// Invoke runs a unary method in process.
func (c *InProcessConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	m, ok := c.methods[method]
	if !ok {
		return c.streams.Invoke(ctx, method, args, reply, opts...)
	}
	in, ok1 := args.(proto.Message)
	out, ok2 := reply.(proto.Message)
	if !ok1 || !ok2 {
		return status.Errorf(codes.Internal, "in-process call %s: %T and %T are not protocol buffers", method, args, reply)
	}
	// What the client sends as outgoing metadata, a server receives.
	md, _ := metadata.FromOutgoingContext(ctx)
	ctx = metadata.NewIncomingContext(ctx, md)
	dec := func(v any) error {
		req, ok := v.(proto.Message)
		if !ok {
			return fmt.Errorf("in-process call %s: %T is not a protocol buffer", method, v)
		}
		proto.Merge(req, in)
		return nil
	}
	resp, err := m.handler(m.srv, ctx, dec, c.interceptor)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			if _, isStatus := status.FromError(err); !isStatus {
				return status.FromContextError(err).Err()
			}
		}
		return err
	}
	res, ok := resp.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "in-process call %s: reply %T is not a protocol buffer", method, resp)
	}
	proto.Merge(out, res)
	return nil
}

// NewStream opens a streaming call on the streams connection.
func (c *InProcessConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.streams.NewStream(ctx, desc, method, opts...)
}
