// Command sluice is the Sluice gateway: it buffers jobs for serverless
// functions in NATS JetStream and dispatches them at a pace the functions
// can take.
//
//	sluice serve --config sluice.yaml   run the gateway
//	sluice dev                          run it with a demo function, no setup
//	sluice fnsim                        run the simulated function alone
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/gateway"
)

var usage = `Sluice buffers requests for serverless functions and dispatches them at a pace the functions can take.

Usage:
  sluice serve --config FILE [flags]   run the gateway
  sluice dev [flags]                   run the gateway with a demo function "echo"; no setup needed
  sluice fnsim [flags]                 run the simulated serverless platform on its own
` + benchUsage() + `  sluice submit FUNCTION [--data TEXT|@FILE|-] [--wait 10s] [--idempotency-key K] [--count N]
  sluice get JOB_ID | wait JOB_ID | cancel JOB_ID
  sluice dlq list FUNCTION | dlq redrive FUNCTION [JOB_ID ...]
  sluice functions                     the functions with live stats
                                       (client commands: --server, --api-key or SLUICE_API_KEY, --tls*, --json)
  sluice hash-key [KEY]                print the digest of an API key, for a tenant's api_keys (KEY from stdin if not given)
  sluice callback-secret --config FILE --tenant NAME
                                       print the secrets that sign the tenant's callbacks, for its receivers

Run "sluice COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sluice:", err)
		}
		os.Exit(2)
	}
}

// run executes one sluice command until it finishes or ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return runServe(ctx, rest, stderr)
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "fnsim":
		return runFnsim(ctx, rest, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "hash-key":
		return runHashKey(rest, os.Stdin, stdout)
	case "callback-secret":
		return runCallbackSecret(rest, stdout, stderr)
	case "submit", "get", "wait", "cancel", "dlq", "functions":
		return runClient(ctx, cmd, rest, os.Stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// logFlags are the logging flags every command takes.
type logFlags struct {
	format string
	level  slog.Level
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
	fs.TextVar(&l.level, "log-level", slog.LevelInfo, "least severe level logged: debug, info, warn or error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: l.level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is neither text nor json", l.format)
}

// parseFlags parses args, rejecting stray positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// runHashKey prints the digest of an API key, the form a tenant's api_keys
// take. Reading the key from stdin keeps it out of shell history.
func runHashKey(args []string, stdin io.Reader, stdout io.Writer) error {
	var key string
	switch len(args) {
	case 0:
		line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("hash-key: read the key from stdin: %w", err)
		}
		key = strings.TrimRight(line, "\r\n")
	case 1:
		key = args[0]
	default:
		return errors.New("hash-key: give one key, or none to read it from stdin")
	}
	if len(key) < 16 {
		return errors.New("hash-key: a key must be at least 16 characters; use a random one, e.g. `openssl rand -base64 32`")
	}
	fmt.Fprintln(stdout, gateway.HashKey(key))
	return nil
}

// runCallbackSecret prints the secrets that sign a tenant's callbacks, one
// a line in signing order: what the tenant's receivers check signatures
// with. They are its callback_secrets, or else derived from the gateway's
// callbacks.secrets, so they follow the gateway's rotation.
func runCallbackSecret(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("callback-secret", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "the gateway's configuration file (required)")
	tenant := fs.String("tenant", "", "the tenant's name, as in tenants[].name (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" || *tenant == "" {
		return errors.New("callback-secret: give --config and --tenant")
	}
	cfg, err := config.LoadConfig(*path)
	if err != nil {
		return err
	}
	if len(cfg.Callbacks.Secrets) == 0 {
		return errors.New("callback-secret: the config has no callbacks.secrets, so callbacks are off")
	}
	if !slices.ContainsFunc(cfg.Tenants, func(t config.TenantConfig) bool { return t.Name == *tenant }) {
		return fmt.Errorf("callback-secret: %q is not a tenant in %s", *tenant, *path)
	}
	keys, err := cfg.CallbackKeys()
	if err != nil {
		return err
	}
	for _, s := range keys.Secrets(*tenant) {
		fmt.Fprintln(stdout, s)
	}
	return nil
}
