package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/deadletter"
)

// Dead-letter page sizes.
const (
	defaultDeadLetterPage = 50
	maxDeadLetterPage     = 500
	// maxRedriveIDs bounds the IDs one redrive may name, and
	// redriveAllPage the jobs one call of a redrive of all requeues: each
	// response lists its jobs, and each call is one letter at a time.
	maxRedriveIDs  = 1000
	redriveAllPage = 1000
)

// ListDeadLetters returns a page of a function's dead letters.
func (s *Service) ListDeadLetters(ctx context.Context, req *sluicev1.ListDeadLettersRequest) (*sluicev1.ListDeadLettersResponse, error) {
	f, err := s.deadLetterFunction(ctx, req.GetFunction())
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxDeadLetterPage:
		return nil, status.Errorf(codes.InvalidArgument, "page size %d is out of range: 1 to %d, or 0 for %d", size, maxDeadLetterPage, defaultDeadLetterPage)
	case size == 0:
		size = defaultDeadLetterPage
	}
	from, err := decodePageToken(f.Name, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	page, err := s.dead.DeadLetters(ctx, f.Name, tenantName(ctx), from, size, req.GetIncludePayload())
	if err != nil {
		return nil, s.internal(ctx, "list dead letters", err)
	}
	out := &sluicev1.ListDeadLettersResponse{DeadLetters: page.Letters}
	if tenantOf(ctx) == nil {
		// The count is of all tenants': only an open gateway may tell it.
		if out.Total, err = s.dead.DeadLetterCount(ctx, f.Name); err != nil {
			return nil, s.internal(ctx, "count dead letters", err)
		}
	}
	if page.Next != 0 {
		out.NextPageToken = encodePageToken(f.Name, page.Next)
	}
	return out, nil
}

// RedriveDeadLetters queues dead-lettered jobs again.
func (s *Service) RedriveDeadLetters(ctx context.Context, req *sluicev1.RedriveDeadLettersRequest) (*sluicev1.RedriveDeadLettersResponse, error) {
	f, err := s.deadLetterFunction(ctx, req.GetFunction())
	if err != nil {
		return nil, err
	}
	if n := len(req.GetIds()); n > maxRedriveIDs {
		return nil, status.Errorf(codes.InvalidArgument, "%d IDs given; a redrive takes at most %d (or none, for all)", n, maxRedriveIDs)
	}
	if len(req.GetIds()) == 0 {
		return s.redriveAll(ctx, f, req.GetPageToken())
	}
	if req.GetPageToken() != "" {
		return nil, status.Error(codes.InvalidArgument, "a page token goes on with a redrive of all: give no IDs with it")
	}
	for _, id := range req.GetIds() {
		if !buffer.ValidJobID(id) {
			return nil, s.jobError(ctx, id, buffer.ErrInvalidID)
		}
	}
	jobs, notFound, err := s.dead.Redrive(ctx, f.Name, tenantName(ctx), req.GetIds())
	if errors.Is(err, deadletter.ErrPayloadNotKept) {
		return nil, status.Error(codes.FailedPrecondition, strings.TrimPrefix(err.Error(), "buffer: "))
	}
	if err != nil {
		return nil, s.internal(ctx, "redrive dead letters", err)
	}
	s.log.InfoContext(ctx, "dead letters redriven", "function", f.Name, "redriven", len(jobs), "not_found", len(notFound))
	return &sluicev1.RedriveDeadLettersResponse{Jobs: jobs, NotFoundIds: notFound}, nil
}

// redriveAll requeues the next redriveAllPage of the tenant's dead letters,
// of those there were when the redrive started.
func (s *Service) redriveAll(ctx context.Context, f Function, token string) (*sluicev1.RedriveDeadLettersResponse, error) {
	from, until, err := decodeRedriveToken(f.Name, token)
	if err != nil {
		return nil, err
	}
	page, err := s.dead.RedriveAll(ctx, f.Name, tenantName(ctx), from, until, redriveAllPage)
	if err != nil {
		return nil, s.internal(ctx, "redrive dead letters", err)
	}
	s.log.InfoContext(ctx, "dead letters redriven", "function", f.Name, "redriven", len(page.Jobs), "more", page.Next != 0)
	out := &sluicev1.RedriveDeadLettersResponse{Jobs: page.Jobs}
	if page.Next != 0 {
		out.NextPageToken = encodeRedriveToken(f.Name, page.Next, page.Until)
	}
	return out, nil
}

// DeleteDeadLetter discards one dead letter.
func (s *Service) DeleteDeadLetter(ctx context.Context, req *sluicev1.DeleteDeadLetterRequest) (*sluicev1.DeleteDeadLetterResponse, error) {
	f, err := s.deadLetterFunction(ctx, req.GetFunction())
	if err != nil {
		return nil, err
	}
	switch err := s.dead.DeleteDeadLetter(ctx, f.Name, tenantName(ctx), req.GetId()); {
	case errors.Is(err, buffer.ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "function %q has no dead letter %s", f.Name, req.GetId())
	case err != nil:
		return nil, s.jobError(ctx, req.GetId(), err)
	}
	s.log.InfoContext(ctx, "dead letter discarded", "function", f.Name, "job_id", req.GetId())
	return &sluicev1.DeleteDeadLetterResponse{}, nil
}

func (s *Service) deadLetterFunction(ctx context.Context, name string) (Function, error) {
	if s.dead == nil {
		return Function{}, status.Error(codes.Unimplemented, "this gateway keeps no dead letters")
	}
	return s.functionFor(ctx, name)
}

// A page token is the stream position the page starts at, tied to its
// function so that it cannot be replayed against another.
func encodePageToken(function string, seq uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(function + ":" + strconv.FormatUint(seq, 10)))
}

func decodePageToken(function, token string) (uint64, error) {
	if token == "" {
		return 0, nil
	}
	bad := status.Error(codes.InvalidArgument, "page token is not one this function's listing gave")
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return 0, bad
	}
	fn, seq, ok := strings.Cut(string(b), ":")
	if !ok || fn != function {
		return 0, bad
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n == 0 {
		return 0, bad
	}
	return n, nil
}

// A redrive's page token is where it goes on and the last position it
// covers, tied to its function as a listing's is; it is no listing's.
func encodeRedriveToken(function string, from, until uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(function + ":" + strconv.FormatUint(from, 10) + ":" + strconv.FormatUint(until, 10)))
}

func decodeRedriveToken(function, token string) (from, until uint64, err error) {
	if token == "" {
		return 0, 0, nil
	}
	bad := status.Error(codes.InvalidArgument, "page token is not one this function's redrive gave")
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return 0, 0, bad
	}
	parts := strings.Split(string(b), ":")
	if len(parts) != 3 || parts[0] != function {
		return 0, 0, bad
	}
	from, err1 := strconv.ParseUint(parts[1], 10, 64)
	until, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil || from == 0 || until < from {
		return 0, 0, bad
	}
	return from, until, nil
}
