package buffer

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
)

// Lane is where a job waits within its function: its tenant's and
// priority's. The default lane (no tenant, normal priority) keeps the
// subject layout of old, sluice.jobs.<function>.<id>; any other lane's
// jobs are on sluice.jobs.<function>.<lane>.<id>, where <lane> is
// "<tenant>~<priority>" ("_" for no tenant). A function dispatched in one
// stream order reads both with one consumer (sluice.jobs.<function>.>); a
// fair one reads each lane with a consumer of its own.
type Lane struct {
	// Tenant is the jobs' tenant; "" for none.
	Tenant string
	// Priority is their priority; Unspecified counts as NORMAL.
	Priority sluicev1.Priority
}

// headerPriority carries a job's priority on its message: high or low (a
// normal one has none).
const headerPriority = "Sluice-Priority"

// LaneOf is the lane of a job.
func LaneOf(job *sluicev1.Job) Lane {
	return Lane{Tenant: job.GetTenant(), Priority: job.GetPriority()}
}

// Default reports whether l is the default lane.
func (l Lane) Default() bool {
	return l.Tenant == "" && normal(l.Priority) == sluicev1.Priority_NORMAL
}

func normal(p sluicev1.Priority) sluicev1.Priority {
	if p == sluicev1.Priority_PRIORITY_UNSPECIFIED {
		return sluicev1.Priority_NORMAL
	}
	return p
}

// PriorityName is a priority as the Sluice-Priority header spells it.
func PriorityName(p sluicev1.Priority) string { return strings.ToLower(normal(p).String()) }

// ParsePriority reads a Sluice-Priority header: high, normal or low
// (any case); "" is normal. ok is false for anything else.
func ParsePriority(s string) (p sluicev1.Priority, ok bool) {
	switch strings.ToLower(s) {
	case "", "normal":
		return sluicev1.Priority_NORMAL, true
	case "high":
		return sluicev1.Priority_HIGH, true
	case "low":
		return sluicev1.Priority_LOW, true
	}
	return sluicev1.Priority_PRIORITY_UNSPECIFIED, false
}

// token is the lane's subject token; "" for the default lane.
func (l Lane) token() string {
	if l.Default() {
		return ""
	}
	t := l.Tenant
	if t == "" {
		t = "_"
	}
	return t + "~" + PriorityName(l.Priority)
}

// parseLaneToken reads a lane's subject token (see token); ok is false
// for anything token does not make.
func parseLaneToken(tok string) (l Lane, ok bool) {
	tenant, priority, found := strings.Cut(tok, "~")
	p, known := ParsePriority(priority)
	if !found || !known {
		return Lane{}, false
	}
	if tenant == "_" {
		tenant = ""
	}
	return Lane{Tenant: tenant, Priority: p}, true
}

// jobSubject is the subject of the job's message in lane l.
func jobSubject(function string, l Lane, id string) string {
	if tok := l.token(); tok != "" {
		return SubjectPrefix + function + "." + tok + "." + id
	}
	return SubjectPrefix + function + "." + id
}

// LaneSubjects matches every job message in lane l of function (as
// published, for a watch of arrivals); for the default lane, those of no
// other lane.
func LaneSubjects(function string, l Lane) string { return laneSubjects(function, l) }

// laneSubjects matches every job message in one lane of function.
func laneSubjects(function string, l Lane) string {
	if tok := l.token(); tok != "" {
		return SubjectPrefix + function + "." + tok + ".*"
	}
	return SubjectPrefix + function + ".*"
}

// laneConsumerName is the durable consumer of one lane of a fair function;
// the default lane's is the function's own, [ConsumerName].
func laneConsumerName(function string, l Lane) string {
	tok := l.token()
	if tok == "" {
		return ConsumerName(function)
	}
	return ConsumerName(function) + "~" + tok // no function name holds a tilde
}

// FunctionConsumers counts the consumers of function on the stream: its own
// and its lanes', as the server has them now.
func (q *Queue) FunctionConsumers(ctx context.Context, function string) (int, error) {
	lanes, err := q.LaneConsumers(ctx, function)
	return len(lanes), err
}

// LaneConsumers returns the lanes of a fair function that have a consumer
// on the server now, by Key (the default lane's is the function's own),
// with one request that lists the stream's consumers' names.
func (q *Queue) LaneConsumers(ctx context.Context, function string) (map[string]bool, error) {
	own := ConsumerName(function)
	out := map[string]bool{}
	names := q.stream.ConsumerNames(ctx)
	for name := range names.Name() {
		switch {
		case name == own:
			out[Lane{}.Key()] = true
		case strings.HasPrefix(name, own+"~"):
			if l, ok := parseLaneToken(strings.TrimPrefix(name, own+"~")); ok {
				out[l.Key()] = true
			}
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("buffer: consumers of %s: %w", function, err)
	}
	return out, nil
}

// Key names a lane, its tenant's and priority's, the same for an
// unspecified priority as for normal.
func (l Lane) Key() string { return l.Tenant + "~" + PriorityName(l.Priority) }

// LanesHolding returns the lanes of function (but the default one) that
// hold a job message, by Key: waiting, in flight, or finished and not yet
// removed.
// It reads them with one request, whose answer grows with the messages
// held, not with the lanes configured: for a fair function's start, when
// most of its lanes hold nothing.
func (q *Queue) LanesHolding(ctx context.Context, function string) (map[string]bool, error) {
	info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(SubjectPrefix+function+".*.*"))
	if err != nil {
		return nil, fmt.Errorf("buffer: lanes of %s holding jobs: %w", function, err)
	}
	out := map[string]bool{}
	for subject := range info.State.Subjects {
		tok, id, ok := strings.Cut(strings.TrimPrefix(subject, SubjectPrefix+function+"."), ".")
		if l, known := parseLaneToken(tok); ok && known && !strings.Contains(id, ".") {
			out[l.Key()] = true
		}
	}
	return out, nil
}
