package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/loadgen"
)

// Submitters submit jobs of one payload to BenchFunction, for a
// benchmark's workers, through the load generator's clients (package
// loadgen): grpc-go's client costs ~25 µs of CPU per call and net/http's
// ~37 µs per request on the benchmark machine, ~14 and ~16 µs with
// loadgen's, and the generator shares the machine with what it measures.
type Submitters struct {
	stack   *Stack
	payload []byte
	grpc    []*loadgen.GRPCConn // workers share them
	http    []*loadgen.HTTPConn // one per worker, dialled on first use
}

// Submitters connects the load generator's gRPC connections to the
// gateway; REST connections are dialled as workers first use them.
func (s *Stack) Submitters(ctx context.Context, grpcConns, workers int, payload []byte) (*Submitters, error) {
	sub := &Submitters{stack: s, payload: payload, http: make([]*loadgen.HTTPConn, workers)}
	for range grpcConns {
		c, err := loadgen.DialGRPC(ctx, s.GRPCAddr)
		if err != nil {
			sub.Close()
			return nil, err
		}
		sub.grpc = append(sub.grpc, c)
	}
	return sub, nil
}

// GRPC submits one job over gRPC as worker w.
func (sub *Submitters) GRPC(ctx context.Context, w int) (*sluicev1.Job, error) {
	var resp sluicev1.SubmitJobResponse
	err := sub.grpc[w%len(sub.grpc)].Invoke(ctx, sluicev1.JobService_SubmitJob_FullMethodName, &sluicev1.SubmitJobRequest{
		Function: BenchFunction,
		Payload:  &httpbody.HttpBody{ContentType: "application/octet-stream", Data: sub.payload},
	}, &resp)
	return resp.GetJob(), err
}

// REST submits one job over REST as worker w, and wants 202.
func (sub *Submitters) REST(ctx context.Context, w int) error {
	if sub.http[w] == nil {
		c, err := loadgen.DialHTTP(ctx, strings.TrimPrefix(sub.stack.HTTP, "http://"))
		if err != nil {
			return err
		}
		sub.http[w] = c
	}
	code, body, err := sub.http[w].Post(ctx, "/v1/functions/"+BenchFunction+"/jobs", "application/octet-stream", sub.payload)
	if err != nil {
		return err
	}
	if code != http.StatusAccepted {
		return fmt.Errorf("REST submit: %d %s, want 202", code, bytes.TrimSpace(body))
	}
	return nil
}

// Close closes every connection.
func (sub *Submitters) Close() {
	for _, c := range sub.grpc {
		c.Close()
	}
	for _, c := range sub.http {
		if c != nil {
			c.Close()
		}
	}
}

// SubmitREST submits one job to function over REST at gateway (its base
// URL), waiting out 429 and 503, and returns its ID.
func SubmitREST(ctx context.Context, client *http.Client, gateway, function string, payload []byte) (string, error) {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, gateway+"/v1/functions/"+function+"/jobs", bytes.NewReader(payload))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the headers matter
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			return strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/"), nil
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			sleep := time.Duration(max(secs, 1)) * time.Second
			select {
			case <-time.After(sleep):
			case <-ctx.Done():
				return "", ctx.Err()
			}
		default:
			return "", fmt.Errorf("submit: %s", resp.Status)
		}
	}
}

// SubmitGRPC submits one job to function over gRPC, waiting out
// RESOURCE_EXHAUSTED and UNAVAILABLE, and returns its ID.
func SubmitGRPC(ctx context.Context, client sluicev1.JobServiceClient, function string, payload []byte) (string, error) {
	for {
		resp, err := client.SubmitJob(ctx, &sluicev1.SubmitJobRequest{
			Function: function,
			Payload:  &httpbody.HttpBody{ContentType: "application/octet-stream", Data: payload},
		})
		switch status.Code(err) {
		case codes.OK:
			return resp.GetJob().GetId(), nil
		case codes.ResourceExhausted, codes.Unavailable:
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return "", ctx.Err()
			}
		default:
			return "", err
		}
	}
}

// BenchFunction is the function that a Stack's benchmarks configure and
// Submitters submit to.
const BenchFunction = "bench"
