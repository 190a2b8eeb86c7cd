package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/buffer"
)

// What JetStream could not answer for a moment is UNAVAILABLE with when to
// try again, on every path that reports through internal; the rest is
// INTERNAL and says nothing of Sluice's insides.
func TestInternalTellsUnavailableFromInternal(t *testing.T) {
	s := &Service{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"connection draining as the gateway stops", fmt.Errorf("buffer: read job X: %w", nats.ErrConnectionDraining), codes.Unavailable},
		{"connection closed", fmt.Errorf("buffer: read job X: %w", nats.ErrConnectionClosed), codes.Unavailable},
		{"no stream leader", &jetstream.APIError{Code: 503, ErrorCode: 10008}, codes.Unavailable},
		{"commit unanswered", buffer.ErrCommitUnknown, codes.Unavailable},
		{"a bug", errors.New("buffer: decode job X: unexpected EOF"), codes.Internal},
		{"a refusal", &jetstream.APIError{Code: 400, ErrorCode: 10071}, codes.Internal},
	} {
		st := status.Convert(s.internal(t.Context(), "read job", tc.err))
		if st.Code() != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, st.Code(), tc.want)
			continue
		}
		var retry *errdetails.RetryInfo
		for _, d := range st.Details() {
			if r, ok := d.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
		if (tc.want == codes.Unavailable) != (retry != nil) {
			t.Errorf("%s: retry info %v, want it exactly when UNAVAILABLE", tc.name, retry)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if got := status.Code(s.internal(ctx, "read job", errors.New("x"))); got != codes.Canceled {
		t.Errorf("a caller gone: %v, want Canceled", got)
	}
}
