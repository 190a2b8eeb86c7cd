package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Tenant is a client of the gateway, known by its API keys. Every job
// belongs to the tenant that submitted it, and only that tenant sees it.
type Tenant struct {
	// Name names the tenant. Required, unique.
	Name string
	// KeyHashes are the SHA-256 digests of its API keys (see [HashKey]); a
	// key itself is never stored.
	KeyHashes [][sha256.Size]byte
	// Functions are the functions it may use; nil for all.
	Functions []string
	// Ingress limits its submits.
	Ingress Ingress
}

// KeyHashPrefix starts the stored form of an API key's digest.
const KeyHashPrefix = "sha256:"

// HashKey returns the form an API key is configured in: "sha256:" and the
// hex SHA-256 digest of the key.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return KeyHashPrefix + hex.EncodeToString(sum[:])
}

// ParseKeyHash parses what HashKey returns.
func ParseKeyHash(s string) ([sha256.Size]byte, error) {
	var out [sha256.Size]byte
	h, ok := strings.CutPrefix(s, KeyHashPrefix)
	if !ok {
		return out, fmt.Errorf("%q is not sha256:<64 hex digits>, as `sluice hash-key` prints it", truncate(s, 16))
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return out, fmt.Errorf("%q is not sha256:<64 hex digits>, as `sluice hash-key` prints it", truncate(s, 16))
	}
	copy(out[:], b)
	return out, nil
}

// tenantKey is the context key of the authenticated tenant.
type tenantKey struct{}

// tenantOf is the tenant the request authenticated as; nil when the gateway
// runs without tenants.
func tenantOf(ctx context.Context) *Tenant {
	t, _ := ctx.Value(tenantKey{}).(*Tenant)
	return t
}

// tenantName is the name of the request's tenant; "" without tenants, which
// is also the tenant of every job then.
func tenantName(ctx context.Context) string {
	if t := tenantOf(ctx); t != nil {
		return t.Name
	}
	return ""
}

// mayUse reports whether the request's tenant may use the function.
func mayUse(ctx context.Context, function string) bool {
	t := tenantOf(ctx)
	return t == nil || t.Functions == nil || slices.Contains(t.Functions, function)
}

// unauthenticatedMethods need no API key: health probes, and reflection,
// which tells only what the public protos say.
func unauthenticated(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") || strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

// authenticate finds the tenant of the request's API key, sent as
// "authorization: Bearer <key>" metadata (over REST, the Authorization
// header, which grpc-gateway passes on). The tenant comes from the key
// alone: nothing else a client sends names it.
func (s *Service) authenticate(ctx context.Context, fullMethod string) (context.Context, error) {
	if len(s.tenantsByKey) == 0 || unauthenticated(fullMethod) {
		return ctx, nil
	}
	values := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(values) == 0 {
		return nil, status.Error(codes.Unauthenticated, "missing API key: send Authorization: Bearer <key>")
	}
	scheme, key, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return nil, status.Error(codes.Unauthenticated, "malformed Authorization: send Authorization: Bearer <key>")
	}
	t, ok := s.tenantsByKey[sha256.Sum256([]byte(strings.TrimSpace(key)))]
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "API key not recognised")
	}
	return context.WithValue(ctx, tenantKey{}, t), nil
}

// UnaryInterceptor authenticates unary calls. [NewGRPCServer] installs it;
// REST calls pass through it too, as REST reaches the services over gRPC.
func (s *Service) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := s.authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor authenticates streaming calls, and holds those that
// need no API key (health Watch, reflection) to their [StreamLimits].
func (s *Service) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if unauthenticated(info.FullMethod) {
			release, err := s.openUnauthenticated(ss.Context())
			if err != nil {
				return err
			}
			defer release()
		}
		ctx, err := s.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &authedStream{ServerStream: ss, ctx: ctx})
	}
}

// authedStream is a server stream whose context carries the tenant.
type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authedStream) Context() context.Context { return a.ctx }
