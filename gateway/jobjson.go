package gateway

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
)

// jobJSONOptions are the REST API's JSON options: every field, zero or not,
// so that a job's JSON has the same fields whatever its state. The REST
// marshaler (package rest) writes every other message with the same.
var jobJSONOptions = protojson.MarshalOptions{EmitDefaultValues: true}

// JobJSON is the job as the REST API writes it: protojson with
// EmitDefaultValues, every field present whatever the job's state. A queued
// job, the answer to a REST submit, is written without reflection, byte
// for byte as protojson would write it.
func JobJSON(job *sluicev1.Job) ([]byte, error) {
	if b, ok := appendQueuedJobJSON(make([]byte, 0, 512), job); ok {
		return b, nil
	}
	return jobJSONOptions.Marshal(job)
}

// appendQueuedJobJSON appends j as JSON exactly as protojson writes it with
// EmitDefaultValues (the REST marshaler's options), for the jobs a REST
// submit answers with: not yet started, no result, no history. It reports
// false, having appended nothing, for any other job, which protojson then
// writes. protojson walks a message by reflection: on a REST submit that
// was a tenth of the gateway's CPU (sluice bench ingress, REST path).
// TestQueuedJobJSON holds it to protojson's output field by field.
func appendQueuedJobJSON(b []byte, j *sluicev1.Job) ([]byte, bool) {
	state, stateKnown := sluicev1.Job_State_name[int32(j.GetState())]
	priority, priorityKnown := sluicev1.Priority_name[int32(j.GetPriority())]
	switch {
	case j == nil, !stateKnown, !priorityKnown,
		j.Result != nil, len(j.History) > 0, j.StartTime != nil, j.FinishTime != nil,
		j.DeadLetterTime != nil, j.RedriveTime != nil, len(j.ProtoReflect().GetUnknown()) > 0,
		!utf8.ValidString(j.Id + j.Function + j.Error + j.ContentType + j.CallbackUrl + j.Tenant + j.WaitingReason + j.Pending + j.Notice + j.ConcurrencyKey):
		return b, false
	}
	created, ok := timestampJSON(j.CreateTime)
	if !ok {
		return b, false
	}
	estimated, ok := timestampJSON(j.EstimatedStartTime)
	if !ok {
		return b, false
	}
	b = append(b, `{"id":`...)
	b = appendJSONString(b, j.Id)
	b = append(b, `,"function":`...)
	b = appendJSONString(b, j.Function)
	b = append(b, `,"state":"`...)
	b = append(b, state...)
	b = append(b, `","attempts":`...)
	b = strconv.AppendInt(b, int64(j.Attempts), 10)
	b = appendTimestampField(b, "createTime", created)
	b = append(b, `,"error":`...)
	b = appendJSONString(b, j.Error)
	b = append(b, `,"contentType":`...)
	b = appendJSONString(b, j.ContentType)
	b = append(b, `,"payloadSize":"`...) // int64 is a string in protojson
	b = strconv.AppendInt(b, j.PayloadSize, 10)
	b = append(b, `","throttles":`...)
	b = strconv.AppendInt(b, int64(j.Throttles), 10)
	b = append(b, `,"history":[],"redrives":`...)
	b = strconv.AppendInt(b, int64(j.Redrives), 10)
	b = append(b, `,"callbackUrl":`...)
	b = appendJSONString(b, j.CallbackUrl)
	b = append(b, `,"tenant":`...)
	b = appendJSONString(b, j.Tenant)
	b = appendTimestampField(b, "estimatedStartTime", estimated)
	b = append(b, `,"waitingReason":`...)
	b = appendJSONString(b, j.WaitingReason)
	b = append(b, `,"priority":"`...)
	b = append(b, priority...)
	b = append(b, `","pending":`...)
	b = appendJSONString(b, j.Pending)
	b = append(b, `,"notice":`...)
	b = appendJSONString(b, j.Notice)
	b = append(b, `,"concurrencyKey":`...)
	b = appendJSONString(b, j.ConcurrencyKey)
	return append(b, '}'), true
}

// appendTimestampField appends `,"name":"ts"`, or nothing for an unset
// timestamp (ts ""), which protojson leaves out.
func appendTimestampField(b []byte, name, ts string) []byte {
	if ts == "" {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":"`...)
	b = append(b, ts...)
	return append(b, '"')
}

// timestampJSON is t as protojson writes a Timestamp: RFC 3339 in UTC with
// 0, 3, 6 or 9 fractional digits; "" for nil, false where protojson would
// refuse it (out of its range).
func timestampJSON(t *timestamppb.Timestamp) (string, bool) {
	if t == nil {
		return "", true
	}
	if t.CheckValid() != nil {
		return "", false
	}
	s := time.Unix(t.Seconds, int64(t.Nanos)).UTC().Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s, "000"), "000"), ".000")
	return s + "Z", true
}

// appendJSONString appends s, valid UTF-8, as a JSON string: quotes,
// backslashes and control characters escaped, as protojson does.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
