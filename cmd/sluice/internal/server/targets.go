package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/target"
)

// lambdaLookupTimeout bounds the start-up read of a Lambda function's
// reserved concurrency.
const lambdaLookupTimeout = 5 * time.Second

// setUpTargets makes each function's invoker, in the order of functions.
// For a Lambda target without a configured concurrency it asks Lambda for
// the function's reserved concurrency and, if there is one, sets it as
// the function's concurrency in functions; it logs where each Lambda
// function's limit came from. NATS targets share nc, which must reach a
// NATS server that services can connect to (external).
func setUpTargets(ctx context.Context, functions []config.FunctionConfig, nc *nats.Conn, external bool, log *slog.Logger) ([]dispatch.Invoker, error) {
	invokers := make([]dispatch.Invoker, len(functions))
	for i := range functions {
		f := &functions[i]
		switch t := f.Target; {
		case t == nil || t.HTTP != nil:
			invokers[i] = config.HTTPInvoker(*f)
		case t.Lambda != nil:
			client, err := newLambdaClient(ctx, t.Lambda)
			if err != nil {
				return nil, fmt.Errorf("functions (%s).target.lambda: %w", f.Name, err)
			}
			lambdaConcurrency(ctx, f, client, log)
			invokers[i] = &target.Lambda{Client: client, Function: t.Lambda.Function, Qualifier: t.Lambda.Qualifier, MaxResponseBytes: int64(f.MaxResult)}
		case t.NATS != nil:
			if !external {
				return nil, fmt.Errorf("functions (%s).target.nats: needs --nats-url: the embedded NATS server takes no outside connections, so no service could answer on %q", f.Name, t.NATS.Subject)
			}
			invokers[i] = &target.NATS{Conn: nc, Subject: t.NATS.Subject, MaxResponseBytes: int64(f.MaxResult)}
			log.Info("NATS target", "function", f.Name, "subject", t.NATS.Subject, "timeout", time.Duration(f.Timeout))
		}
	}
	return invokers, nil
}

// newLambdaClient makes a Lambda API client from the AWS SDK's default
// configuration chain, in the target's region (or its ARN's) and with its
// endpoint, if it names them.
func newLambdaClient(ctx context.Context, l *config.LambdaTargetConfig) (*lambda.Client, error) {
	region := l.Region
	if region == "" {
		if a, err := arn.Parse(l.Function); err == nil {
			region = a.Region
		}
	}
	var opts []func(*awsconfig.LoadOptions) error
	if region != "" {
		opts = append(opts, awsconfig.WithRegion(region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("region: missing, and neither the function's ARN nor the AWS configuration (AWS_REGION, the shared config file) names one")
	}
	return lambda.NewFromConfig(cfg, func(o *lambda.Options) {
		if l.Endpoint != "" {
			o.BaseEndpoint = aws.String(l.Endpoint)
		}
		o.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			// Every Lambda function of a region shares its endpoint.
			t.MaxIdleConnsPerHost = target.MaxIdleConnsPerHost
			t.IdleConnTimeout = target.IdleConnTimeout
		})
	}), nil
}

// lambdaConcurrency sets f's concurrency to the Lambda function's reserved
// concurrency when none is configured and the function has one, and logs
// where the limit came from. A failed lookup (no permission, an emulator)
// leaves the default.
func lambdaConcurrency(ctx context.Context, f *config.FunctionConfig, client *lambda.Client, log *slog.Logger) {
	l := f.Target.Lambda
	log = log.With("function", f.Name, "lambda_function", l.Function, "qualifier", l.Qualifier, "region", client.Options().Region)
	if f.ConcurrencyGiven() {
		log.Info("Lambda target", "concurrency", int(f.Concurrency), "concurrency_from", "config")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, lambdaLookupTimeout)
	defer cancel()
	name := l.Function
	if a, err := arn.Parse(l.Function); err == nil {
		// A qualified ARN names a version or alias; reserved concurrency
		// belongs to the function.
		fn, _, _ := strings.Cut(strings.TrimPrefix(a.Resource, "function:"), ":")
		a.Resource = "function:" + fn
		name = a.String()
	}
	out, err := client.GetFunctionConcurrency(ctx, &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String(name)},
		func(o *lambda.Options) { o.Retryer = aws.NopRetryer{} })
	switch {
	case err != nil:
		log.Warn("Lambda target: could not read the function's reserved concurrency (GetFunctionConcurrency); using the default",
			"concurrency", int(f.Concurrency), "concurrency_from", "default", "err", err)
	case out.ReservedConcurrentExecutions == nil:
		log.Info("Lambda target", "concurrency", int(f.Concurrency), "concurrency_from", "default: the function has no reserved concurrency")
	case *out.ReservedConcurrentExecutions < 1:
		log.Warn("Lambda target: the function's reserved concurrency is 0, so Lambda throttles every invocation; using the default",
			"concurrency", int(f.Concurrency), "concurrency_from", "default")
	default:
		f.SetConcurrency(config.Count(min(int(*out.ReservedConcurrentExecutions), config.MaxConcurrency)))
		log.Info("Lambda target", "concurrency", int(f.Concurrency), "concurrency_from", "the function's reserved concurrency (GetFunctionConcurrency)")
	}
}
