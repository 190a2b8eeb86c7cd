// Package deadletter keeps the dead letters: the jobs that FAILED or
// EXPIRED, each a message of its own in a stream of its own ([Store]), to
// be read, redriven or discarded. What a redrive or a discard does to the
// job's state is its caller's, which hands the Store a function for it.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/jobid"
	"github.com/sluicehq/sluice/buffer/provision"
	"github.com/sluicehq/sluice/buffer/store"
)

// Dead letters are kept in their own stream, one message per job: a
// sluicev1.DeadLetter holding the job as it ended and its payload, so that a
// redrive needs nothing else, even once the job's state entry has expired.
const (
	// Stream holds the jobs that FAILED or EXPIRED.
	Stream = "SLUICE_DEAD_LETTERS"
	// Prefix starts every dead letter's subject; the function's name, the
	// tenant's and the job's ID follow it (see [Subject]).
	Prefix = "sluice.dead."
)

// MaxResultBytes bounds the function's response kept in a dead letter;
// the job's state keeps all of it until its retention passes.
const MaxResultBytes = 64 << 10

// StreamConfig is the configuration of the dead-letter stream: l.MaxAge
// is how long a dead letter is kept. Discard new, as for jobs: when full,
// dead-lettering fails and the job stays in the work queue rather than an
// older dead letter being dropped.
func StreamConfig(l provision.StreamLimits) jetstream.StreamConfig {
	return l.Apply(jetstream.StreamConfig{
		Name:        Stream,
		Description: "Sluice: jobs that failed or expired, kept for inspection and redrive",
		Subjects:    []string{Prefix + ">"},
		Retention:   jetstream.LimitsPolicy,
	})
}

// Subject is the subject of a job's dead letter:
// sluice.dead.<function>.<tenant>.<id>, "_" standing for no tenant (no
// tenant's name can be "_"), so that one tenant's dead letters are read
// without reading another's.
func Subject(function, tenant, id string) string {
	return Prefix + function + "." + tenantToken(tenant) + "." + id
}

func tenantToken(tenant string) string {
	if tenant == "" {
		return "_"
	}
	return tenant
}

// tenantLetters matches the tenant's dead letters of function.
func tenantLetters(function, tenant string) string {
	return Prefix + function + "." + tenantToken(tenant) + ".*"
}

// functionLetters matches every dead letter of function, in either
// subject layout.
func functionLetters(function string) string { return Prefix + function + ".>" }

// Before, a dead letter's subject named no tenant:
// sluice.dead.<function>.<id>. buffer.Open moves such letters to their subjects
// of now ([Store.MoveLegacy]); until it has (a letter an older replica
// stored since, or one a full stream left where it was), they are read
// where they are.
func legacySubject(function, id string) string {
	return Prefix + function + "." + id
}

// legacyLetters matches function's dead letters stored without a tenant
// in their subject; "*" for every function's.
func legacyLetters(function string) string { return Prefix + function + ".*" }

// Store is the dead-letter stream.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	shares *store.Shares
}

// New is the Store over stream, the dead-letter stream ([StreamConfig]);
// gauge reads how full it is, for the shares of it.
func New(js jetstream.JetStream, stream jetstream.Stream, gauge *store.Gauge) *Store {
	return &Store{js: js, stream: stream, shares: store.NewShares(gauge, store.DeadLetters, stream, Prefix)}
}

// Put makes sure the finished job has its dead letter, holding payload.
// written says whether the caller has just written the job's terminal
// state (so the letter cannot exist yet); otherwise this is a redelivery
// after a crash or a lost ack, and the letter is published only if
// missing. When the job's tenant or function holds more than its share of
// the store, the letter is kept without the payload, and lean is called
// first, to say so in the job's state.
func (s *Store) Put(ctx context.Context, job *sluicev1.Job, payload []byte, written bool, lean func()) error {
	if !written {
		_, err := s.last(ctx, Subject(job.Function, job.Tenant, job.Id), legacySubject(job.Function, job.Id))
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("buffer: read dead letter %s: %w", job.Id, err)
		}
	}
	kept := proto.CloneOf(job)
	if r := kept.GetResult(); len(r.GetBody()) > MaxResultBytes {
		r.Body = r.Body[:MaxResultBytes]
	}
	if len(payload) > 0 && s.shares.Over(ctx, job.Tenant, job.Function) {
		payload = nil
		kept.Notice = LeanNotice
		lean()
	}
	b, err := proto.Marshal(&sluicev1.DeadLetter{
		Job:            kept,
		Reason:         job.Error,
		DeadLetterTime: job.DeadLetterTime,
		Payload:        payload,
	})
	if err != nil {
		return fmt.Errorf("buffer: encode dead letter: %w", err)
	}
	msg := nats.NewMsg(Subject(job.Function, job.Tenant, job.Id))
	msg.Data = b
	if job.Tenant != "" {
		msg.Header.Set(store.TenantHeader, job.Tenant) // for the share its tenant holds
	}
	msgID := job.Id + ".dead." + strconv.Itoa(int(job.Redrives))
	if _, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID)); err != nil {
		return store.MarkFull(store.DeadLetters, fmt.Errorf("buffer: dead-letter job %s: %w", job.Id, store.PublishError(err)))
	}
	s.shares.Add(job.Tenant, job.Function, len(b))
	return nil
}

// ErrPayloadNotKept: the dead letter was kept without its payload (see
// LeanNotice), so its job cannot be redriven.
var ErrPayloadNotKept = errors.New("buffer: the dead letter was kept without its payload and cannot be redriven")

// lean says whether a dead letter was kept without its payload.
func lean(dl *sluicev1.DeadLetter) bool { return dl.GetJob().GetNotice() == LeanNotice }

// LeanNotice is what a dead letter kept without its payload says, and its
// job's state with it.
const LeanNotice = "the payload was not kept in the dead letter: its tenant or function holds more than its share of the dead-letter store; it cannot be redriven"

func decode(msg *jetstream.RawStreamMsg) (*sluicev1.DeadLetter, error) {
	dl := new(sluicev1.DeadLetter)
	if err := proto.Unmarshal(msg.Data, dl); err != nil {
		return nil, fmt.Errorf("buffer: decode dead letter %s: %w", msg.Subject, err)
	}
	if dl.Job == nil {
		return nil, fmt.Errorf("buffer: dead letter %s holds no job", msg.Subject)
	}
	return dl, nil
}

// last reads the last message on subject, or if there is none on legacy
// (the subject in the layout of before): jetstream.ErrMsgNotFound when
// neither has one.
func (s *Store) last(ctx context.Context, subject, legacy string) (*jetstream.RawStreamMsg, error) {
	msg, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		msg, err = s.stream.GetLastMsgForSubject(ctx, legacy)
	}
	return msg, err
}

// MoveLegacy moves the dead letters stored in the subject layout of before
// to their subjects of now: each is published there (unless it is there
// already) and then removed. A moved letter goes to the end of the stream,
// and its retention counts from the move. A full stream stops the move
// without an error: the letters left are read where they are.
func (s *Store) MoveLegacy(ctx context.Context) error {
	for seq := uint64(1); ; {
		msg, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(legacyLetters("*")))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("buffer: read dead letters: %w", err)
		}
		seq = msg.Sequence + 1
		dl, err := decode(msg)
		if err != nil {
			return err
		}
		job := dl.Job
		to := Subject(job.Function, job.Tenant, job.Id)
		switch _, err := s.stream.GetLastMsgForSubject(ctx, to); {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			m := nats.NewMsg(to)
			m.Header = provision.CopyHeader(msg.Header) // the letter's own headers
			m.Data = msg.Data
			msgID := job.Id + ".dead." + strconv.Itoa(int(job.Redrives)) + ".moved"
			if _, err := s.js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID)); err != nil {
				if err := store.PublishError(err); errors.Is(err, store.ErrFull) {
					return nil
				}
				return fmt.Errorf("buffer: move dead letter %s: %w", job.Id, err)
			}
		case err != nil:
			return fmt.Errorf("buffer: read dead letter %s: %w", job.Id, err)
		}
		if err := s.stream.DeleteMsg(ctx, msg.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("buffer: remove moved dead letter %s: %w", job.Id, err)
		}
	}
}

// Job is the job as its dead letter keeps it, for a job whose state entry
// has expired: [jobid.ErrNotFound] if there is none.
func (s *Store) Job(ctx context.Context, id string) (*sluicev1.Job, error) {
	msg, err := s.last(ctx, Subject("*", "*", id), legacySubject("*", id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, jobid.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("buffer: read dead letter %s: %w", id, err)
	}
	dl, err := decode(msg)
	if err != nil {
		return nil, err
	}
	return dl.Job, nil
}
