package gateway

// Errors are made and translated here, once: buffer's errors become gRPC
// statuses with a short message a caller can act on (never internal text).
// Package rest turns those statuses into HTTP statuses: grpc-gateway's
// default mapping (RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, NOT_FOUND 404,
// UNAUTHENTICATED 401, INVALID_ARGUMENT 400, ...) holds, except where an
// ErrorInfo reason below says more.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
)

// Error reasons carried in google.rpc.ErrorInfo details, for callers (and
// the REST layer) that need more than the status code.
const (
	errorDomain = "sluice.dev"
	// ReasonPayloadTooLarge: the payload exceeds the function's limit (413).
	ReasonPayloadTooLarge = "PAYLOAD_TOO_LARGE"
	// ReasonPayloadNotJSON: the function takes only JSON payloads (400).
	ReasonPayloadNotJSON = "PAYLOAD_NOT_JSON"
	// ReasonJobNotSucceeded: a result was asked of a job that ended
	// without one (409).
	ReasonJobNotSucceeded = "JOB_NOT_SUCCEEDED"
	// ReasonJobFinished: a finished job was asked to change (409).
	ReasonJobFinished = "JOB_FINISHED"
)

// notSucceeded is the error for a job that ended without a result to give.
func (s *Service) notSucceeded(job *sluicev1.Job) error {
	msg := fmt.Sprintf("job %s ended %s without a result", job.Id, job.State)
	if job.Error != "" {
		msg += ": " + job.Error
	}
	return withDetails(codes.FailedPrecondition, msg+"; GET /v1/jobs/"+job.Id+" has its details",
		&errdetails.ErrorInfo{Domain: errorDomain, Reason: ReasonJobNotSucceeded})
}

// jobError translates buffer's errors about one job.
func (s *Service) jobError(ctx context.Context, id string, err error) error {
	switch {
	case errors.Is(err, buffer.ErrInvalidID):
		return status.Errorf(codes.InvalidArgument, "job id %q is malformed: a job id is 26 characters from A-Z and 2-7, as SubmitJob returns it", truncate(id, 64))
	case errors.Is(err, buffer.ErrNotFound):
		return status.Errorf(codes.NotFound, "job %s not found", id)
	}
	return s.internal(ctx, "job "+id, err)
}

// internal logs err and returns an error that tells the caller nothing
// about Sluice's insides: UNAVAILABLE with when to try again when JetStream
// could not answer for a moment (a leader election, a lost connection, this
// gateway draining its connection as it stops), INTERNAL otherwise.
func (s *Service) internal(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if buffer.Unavailable(err) {
		s.log.WarnContext(ctx, op+": JetStream unavailable", "err", err)
		return unavailable()
	}
	s.log.ErrorContext(ctx, op, "err", err)
	return status.Error(codes.Internal, "internal error; the gateway's log has the details")
}

// unavailable is the error for a request JetStream could not answer for a
// moment: UNAVAILABLE (503 over REST), to be retried after minRetryAfter.
func unavailable() error {
	return withDetails(codes.Unavailable, "the job buffer is unavailable for a moment; retry later",
		&errdetails.RetryInfo{RetryDelay: durationpb.New(minRetryAfter)})
}

// withDetails is a status error carrying google.rpc details.
func withDetails(code codes.Code, msg string, details ...protoadapt.MessageV1) error {
	st, err := status.New(code, msg).WithDetails(details...)
	if err != nil {
		panic(fmt.Sprintf("gateway: status details: %v", err)) // only for a non-proto detail
	}
	return st.Err()
}

// overLimit is the error for a submit refused by a limit: 429 with
// Retry-After over REST, RESOURCE_EXHAUSTED with RetryInfo over gRPC.
func overLimit(retryAfter time.Duration, format string, args ...any) error {
	retryAfter = min(max(retryAfter, minRetryAfter), maxRetryAfter)
	return withDetails(codes.ResourceExhausted, fmt.Sprintf(format, args...)+fmt.Sprintf("; retry after %s", retryAfter.Round(time.Second)),
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
}
