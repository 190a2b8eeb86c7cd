package target

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"
	"go.opentelemetry.io/otel/propagation"
)

// LambdaClient is the part of the AWS Lambda API a [Lambda] calls.
// *lambda.Client implements it.
type LambdaClient interface {
	Invoke(ctx context.Context, in *lambda.InvokeInput, optFns ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

var _ LambdaClient = (*lambda.Client)(nil)

// LambdaMaxPayload is the largest payload a synchronous Lambda invocation
// accepts: 6 MB (6,291,456 bytes).
const LambdaMaxPayload = 6 << 20

// LambdaWarmupEvent is the event of a keep-warm ping to a Lambda function.
// The ping's client context also carries Sluice-Warmup: 1.
var LambdaWarmupEvent = []byte(`{"sluice_warmup":true}`)

// Lambda invokes an AWS Lambda function synchronously
// (RequestResponse) through the Lambda Invoke API, one API call per attempt:
// it turns the SDK's own retries off, so that a throttle reaches the pacing
// window instead of being retried blindly, and a failure counts as one
// attempt.
//
// The payload is the function's event, verbatim; Lambda takes only JSON.
// The client context's "custom" map carries Sluice-Job-Id and
// Sluice-Attempt (Sluice-Warmup for a keep-warm ping) and the W3C
// traceparent, which a Go handler reads from lambdacontext.
//
// Lambda's answers map onto [Response] so:
//   - success: 200, the function's response as the body (application/json);
//     ColdStart is true when the log tail reports an Init Duration (or a
//     SnapStart Restore Duration), false when it reports neither;
//   - FunctionError (the handler failed, crashed or timed out): 502, as
//     Lambda's function URLs answer, the error payload kept as the body, and
//     Error naming the error type: a failed attempt, retried by the retry
//     policy;
//   - TooManyRequestsException and other throttling errors: 429 with
//     Lambda's Retry-After, a throttle;
//   - any other API error: its HTTP status (404 ResourceNotFoundException,
//     502 EC2ThrottledException, ...), with Error naming its code.
//
// Only when the API gave no answer (the network failed, ctx ended) does
// Invoke return an error. It is safe for concurrent use.
type Lambda struct {
	// Client calls the Lambda API. Required.
	Client LambdaClient
	// Function is the function's name, ARN or partial ARN. Required.
	Function string
	// Qualifier is a version or alias; empty means $LATEST or what the ARN
	// names.
	Qualifier string
	// MaxResponseBytes bounds the response kept as the job's result. Zero
	// means [DefaultMaxResponseBytes].
	MaxResponseBytes int64
}

// Invoke calls the function once with inv's payload and reads its answer.
func (l *Lambda) Invoke(ctx context.Context, inv *Invocation) (*Response, error) {
	custom := map[string]string{}
	propagation.TraceContext{}.Inject(ctx, propagation.MapCarrier(custom))
	payload := inv.Payload
	if inv.Warmup {
		custom[HeaderWarmup] = "1"
		payload = LambdaWarmupEvent
	} else {
		custom[HeaderJobID] = inv.JobID
		custom[HeaderAttempt] = strconv.Itoa(inv.Attempt)
	}
	clientContext, err := json.Marshal(map[string]any{"custom": custom})
	if err != nil {
		return nil, fmt.Errorf("target: lambda client context: %w", err)
	}
	in := &lambda.InvokeInput{
		FunctionName:   aws.String(l.Function),
		InvocationType: types.InvocationTypeRequestResponse,
		LogType:        types.LogTypeTail,
		ClientContext:  aws.String(base64.StdEncoding.EncodeToString(clientContext)),
	}
	if len(payload) > 0 {
		in.Payload = payload
	}
	if l.Qualifier != "" {
		in.Qualifier = aws.String(l.Qualifier)
	}
	out, err := l.Client.Invoke(ctx, in, func(o *lambda.Options) { o.Retryer = aws.NopRetryer{} })
	if err != nil {
		return lambdaRefusal(err)
	}
	if err := checkResponseSize(len(out.Payload), responseLimit(l.MaxResponseBytes)); err != nil {
		return nil, err
	}
	resp := &Response{
		Status:      int(out.StatusCode),
		ContentType: "application/json",
		Body:        out.Payload,
		ColdStart:   lambdaColdStart(aws.ToString(out.LogResult)),
	}
	if resp.Status == 0 {
		resp.Status = http.StatusOK
	}
	if fe := aws.ToString(out.FunctionError); fe != "" {
		resp.Status = http.StatusBadGateway
		resp.Error = "Lambda function error (" + printable(fe)
		if t := lambdaErrorType(out.Payload); t != "" {
			resp.Error += ": " + t
		}
		resp.Error += ")"
	}
	return resp, nil
}

// lambdaThrottles are the error codes with which AWS says "slow down".
var lambdaThrottles = map[string]bool{
	"TooManyRequestsException":  true,
	"ThrottlingException":       true,
	"Throttling":                true,
	"ThrottledException":        true,
	"RequestLimitExceeded":      true,
	"RequestThrottledException": true,
}

// lambdaRefusal maps an error of the Lambda API onto a Response when the
// API answered, and returns err itself when it did not.
func lambdaRefusal(err error) (*Response, error) {
	var tooMany *types.TooManyRequestsException
	if errors.As(err, &tooMany) {
		reason := "Lambda throttled the invocation"
		if tooMany.Reason != "" {
			reason += " (" + printable(string(tooMany.Reason)) + ")"
		}
		return &Response{Status: http.StatusTooManyRequests, RetryAfter: aws.ToString(tooMany.RetryAfterSeconds), Error: reason}, nil
	}
	var respErr *awshttp.ResponseError
	if !errors.As(err, &respErr) || respErr.HTTPStatusCode() == 0 {
		return nil, err // no answer
	}
	status, code := respErr.HTTPStatusCode(), ""
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code = printable(apiErr.ErrorCode())
	}
	if code == "" {
		code = "an error"
	}
	resp := &Response{
		Status:     status,
		RetryAfter: respErr.Response.Header.Get("Retry-After"),
		Error:      fmt.Sprintf("Lambda refused the invocation: %s (HTTP %d)", code, status),
	}
	if lambdaThrottles[code] {
		resp.Status = http.StatusTooManyRequests
		resp.Error = "Lambda throttled the invocation (" + code + ")"
	}
	return resp, nil
}

// lambdaColdStart reads the base64 log tail of an invocation: true when its
// REPORT line gives an Init Duration (a new environment) or a Restore
// Duration (a SnapStart restore), false when the tail has a REPORT line
// without either, and nil when there is no tail to judge by.
func lambdaColdStart(logResult string) *bool {
	if logResult == "" {
		return nil
	}
	tail, err := base64.StdEncoding.DecodeString(logResult)
	if err != nil {
		return nil
	}
	cold := bytes.Contains(tail, []byte("Init Duration:")) || bytes.Contains(tail, []byte("Restore Duration:"))
	if !cold && !bytes.Contains(tail, []byte("REPORT RequestId:")) {
		return nil // cut off before the report
	}
	return &cold
}

// lambdaErrorType is the errorType of a function error's payload
// ({"errorMessage": …, "errorType": …}), or "".
func lambdaErrorType(payload []byte) string {
	var fe struct {
		ErrorType string `json:"errorType"`
	}
	if json.Unmarshal(payload, &fe) != nil {
		return ""
	}
	return printable(fe.ErrorType)
}
