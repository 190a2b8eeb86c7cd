// Command testfn is a small AWS Lambda function, built with aws-lambda-go,
// that the Lambda target's tests run under the Runtime Interface Emulator.
//
// Its event is JSON. It answers {"echo": <the event>, "job_id", "attempt",
// "warmup", "invocations"}, where job_id, attempt and warmup come from the
// invocation's client context (Sluice-Job-Id, Sluice-Attempt,
// Sluice-Warmup) and invocations counts this environment's invocations.
// An event with "fail": "message" makes the handler return that error, a
// function error; "sleep_ms": n makes it take n milliseconds first.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

var invocations atomic.Int64

type event struct {
	Fail    string `json:"fail"`
	SleepMS int    `json:"sleep_ms"`
}

type answer struct {
	Echo        json.RawMessage `json:"echo"`
	JobID       string          `json:"job_id"`
	Attempt     string          `json:"attempt"`
	Warmup      string          `json:"warmup"`
	Invocations int64           `json:"invocations"`
}

func handle(ctx context.Context, raw json.RawMessage) (*answer, error) {
	n := invocations.Add(1)
	var ev event
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &ev); err != nil {
			ev = event{} // not an object: echo it all the same
		}
	}
	if ev.SleepMS > 0 {
		time.Sleep(time.Duration(ev.SleepMS) * time.Millisecond)
	}
	if ev.Fail != "" {
		return nil, errors.New(ev.Fail)
	}
	out := &answer{Echo: raw, Invocations: n}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		out.JobID = lc.ClientContext.Custom["Sluice-Job-Id"]
		out.Attempt = lc.ClientContext.Custom["Sluice-Attempt"]
		out.Warmup = lc.ClientContext.Custom["Sluice-Warmup"]
	}
	return out, nil
}

func main() { lambda.Start(handle) }
