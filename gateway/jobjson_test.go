package gateway

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
)

// The fast path writes what protojson writes with the REST marshaler's
// options: the same fields with the same values (compared decoded, since
// protojson varies its whitespace on purpose), decoding back to the job.
func TestQueuedJobJSON(t *testing.T) {
	created := time.Date(2026, 11, 28, 0, 37, 13, 0, time.UTC)
	fresh := func(change func(*sluicev1.Job)) *sluicev1.Job {
		j := &sluicev1.Job{
			Id: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", Function: "resize", State: sluicev1.Job_QUEUED,
			CreateTime: timestamppb.New(created), ContentType: "application/json", PayloadSize: 1024,
			Priority: sluicev1.Priority_NORMAL,
		}
		if change != nil {
			change(j)
		}
		return j
	}
	fast := map[string]*sluicev1.Job{
		"a fresh submit":   fresh(nil),
		"all zero":         {},
		"tenant, callback": fresh(func(j *sluicev1.Job) { j.Tenant, j.CallbackUrl = "acme", "https://example.com/hook?a=1&b=<2>" }),
		"high priority":    fresh(func(j *sluicev1.Job) { j.Priority = sluicev1.Priority_HIGH }),
		"concurrency key":  fresh(func(j *sluicev1.Job) { j.ConcurrencyKey = "customer \"42\"" }),
		"unspecified":      fresh(func(j *sluicev1.Job) { j.Priority, j.State = 0, 0 }),
		"retrying":         fresh(func(j *sluicev1.Job) { j.Attempts, j.Throttles, j.Error = 2, 3, "function answered HTTP 500" }),
		"redriven":         fresh(func(j *sluicev1.Job) { j.Redrives = 4 }),
		"escapes": fresh(func(j *sluicev1.Job) {
			j.Error = "quote \" backslash \\ newline \n tab \t cr \r bell \a nul \x00 unit \x1f del \x7f é 日本 \u2028 \ufffd"
		}),
		"waiting": fresh(func(j *sluicev1.Job) {
			j.WaitingReason = "concurrency window full: 10 of 10 in flight"
			j.EstimatedStartTime = timestamppb.New(created.Add(1500 * time.Millisecond))
		}),
		"millis":   fresh(func(j *sluicev1.Job) { j.CreateTime = timestamppb.New(created.Add(123 * time.Millisecond)) }),
		"micros":   fresh(func(j *sluicev1.Job) { j.CreateTime = timestamppb.New(created.Add(123456 * time.Microsecond)) }),
		"nanos":    fresh(func(j *sluicev1.Job) { j.CreateTime = timestamppb.New(created.Add(123456789)) }),
		"one nano": fresh(func(j *sluicev1.Job) { j.CreateTime = timestamppb.New(created.Add(1)) }),
		"before 1970": fresh(func(j *sluicev1.Job) {
			j.CreateTime = timestamppb.New(time.Date(1969, 7, 20, 20, 17, 40, 5e8, time.UTC))
		}),
		"large payload": fresh(func(j *sluicev1.Job) { j.PayloadSize = 1 << 40 }),
	}
	for name, job := range fast {
		got, ok := appendQueuedJobJSON(nil, job)
		if !ok {
			t.Errorf("%s: not written by the fast path", name)
			continue
		}
		want, err := protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(job)
		if err != nil {
			t.Fatal(err)
		}
		var gotFields, wantFields map[string]any
		if err := json.Unmarshal(got, &gotFields); err != nil {
			t.Errorf("%s: %s is not JSON: %v", name, got, err)
			continue
		}
		if err := json.Unmarshal(want, &wantFields); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotFields, wantFields) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
		back := new(sluicev1.Job)
		if err := protojson.Unmarshal(got, back); err != nil || !proto.Equal(back, job) {
			t.Errorf("%s: %s decodes to %v (%v), want %v", name, got, back, err, job)
		}
	}

	// Everything else is left to protojson.
	slow := map[string]*sluicev1.Job{
		"nil":           nil,
		"started":       fresh(func(j *sluicev1.Job) { j.State, j.StartTime = sluicev1.Job_RUNNING, timestamppb.New(created) }),
		"finished":      fresh(func(j *sluicev1.Job) { j.FinishTime = timestamppb.New(created) }),
		"with a result": fresh(func(j *sluicev1.Job) { j.Result = &sluicev1.JobResult{HttpStatus: 200} }),
		"with history": fresh(func(j *sluicev1.Job) {
			j.History = []*sluicev1.Attempt{{Number: 1, Duration: durationpb.New(time.Second)}}
		}),
		"dead-lettered":  fresh(func(j *sluicev1.Job) { j.DeadLetterTime = timestamppb.New(created) }),
		"redrive time":   fresh(func(j *sluicev1.Job) { j.RedriveTime = timestamppb.New(created) }),
		"unknown state":  fresh(func(j *sluicev1.Job) { j.State = 42 }),
		"unknown prio":   fresh(func(j *sluicev1.Job) { j.Priority = 42 }),
		"invalid UTF-8":  fresh(func(j *sluicev1.Job) { j.Error = "\xff" }),
		"bad timestamp":  fresh(func(j *sluicev1.Job) { j.CreateTime = &timestamppb.Timestamp{Nanos: -1} }),
		"unknown fields": fresh(func(j *sluicev1.Job) { j.ProtoReflect().SetUnknown([]byte{0xf8, 0x07, 0x01}) }),
	}
	for name, job := range slow {
		if b, ok := appendQueuedJobJSON([]byte("prefix"), job); ok || string(b) != "prefix" {
			t.Errorf("%s: written by the fast path as %q", name, b)
		}
	}
}

// A field added to Job must be added to the fast path (or make it step
// aside) before this passes again.
func TestQueuedJobJSONKnowsEveryField(t *testing.T) {
	var names []string
	fields := (&sluicev1.Job{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		names = append(names, fields.Get(i).JSONName())
	}
	const known = "id function state attempts createTime startTime finishTime result error contentType payloadSize " +
		"throttles history deadLetterTime redrives callbackUrl redriveTime tenant estimatedStartTime waitingReason priority pending notice concurrencyKey"
	if got := strings.Join(names, " "); got != known {
		t.Errorf("Job's fields are now\n%s\nappendQueuedJobJSON knows\n%s", got, known)
	}
}
