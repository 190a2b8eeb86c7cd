package rest

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/gateway"
)

// A job the marshaler writes (gateway.JobJSON) has the fields, and the
// values, that the marshaler's options give every other message: jobs
// inside other messages (a list of jobs, a dead letter) read the same as a
// job on its own.
func TestMarshalerWritesJobsAsJobJSON(t *testing.T) {
	created := timestamppb.New(time.Date(2026, 11, 28, 0, 37, 13, 0, time.UTC))
	m := newPayloadMarshaler()
	for name, job := range map[string]*sluicev1.Job{
		"queued": {Id: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", Function: "resize", State: sluicev1.Job_QUEUED, CreateTime: created},
		"finished": {
			Id: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", Function: "resize", State: sluicev1.Job_SUCCEEDED, CreateTime: created,
			FinishTime: created, Result: &sluicev1.JobResult{HttpStatus: 200},
			History: []*sluicev1.Attempt{{Number: 1, Duration: durationpb.New(time.Second)}},
		},
	} {
		got, err := m.Marshal(job)
		if err != nil {
			t.Fatal(err)
		}
		want, err := m.JSONPb.Marshal(job)
		if err != nil {
			t.Fatal(err)
		}
		var gotFields, wantFields map[string]any
		if err := json.Unmarshal(got, &gotFields); err != nil {
			t.Fatalf("%s: %s is not JSON: %v", name, got, err)
		}
		if err := json.Unmarshal(want, &wantFields); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotFields, wantFields) {
			t.Errorf("%s: the marshaler writes\n%s\nand with its options for other messages\n%s", name, got, want)
		}
		if direct, err := gateway.JobJSON(job); err != nil || string(direct) != string(got) {
			t.Errorf("%s: gateway.JobJSON writes %s (%v), the marshaler %s", name, direct, err, got)
		}
	}
}
