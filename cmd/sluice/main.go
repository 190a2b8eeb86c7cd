// Command sluice is the Sluice gateway: it buffers jobs for serverless
// functions in NATS JetStream and dispatches them at a pace the functions
// can take. Run "sluice help" for its commands.
//
// This package only wires: each command's work is in a package of its own
// under internal/ (config, server, client, bench, cli).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/cmd/sluice/internal/bench"
	"github.com/sluicehq/sluice/cmd/sluice/internal/bench/harness"
	"github.com/sluicehq/sluice/cmd/sluice/internal/client"
)

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

// stdio is a command's standard streams.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// command is one sluice command, as usage lists it and as run finds it.
type command struct {
	name     string // the words after "sluice", e.g. "bench burst"
	synopsis string // what follows the name in usage
	summary  string
	run      func(ctx context.Context, args []string, std stdio) error
}

// commands are sluice's commands, in the order usage lists them.
func commands() []command {
	cmds := []command{
		{"serve", "--config FILE [flags]", "run the gateway",
			func(ctx context.Context, args []string, std stdio) error { return runServe(ctx, args, std.err) }},
		{"dev", "[flags]", `run the gateway with a demo function "echo"; no setup needed`,
			func(ctx context.Context, args []string, std stdio) error { return runDev(ctx, args, std.out, std.err) }},
		{"fnsim", "[flags]", "run the simulated serverless platform on its own",
			func(ctx context.Context, args []string, std stdio) error { return harness.RunFnsim(ctx, args, std.err) }},
	}
	for _, b := range bench.Commands() {
		cmds = append(cmds, command{"bench " + b.Name, "[flags]", b.Summary,
			func(ctx context.Context, args []string, std stdio) error { return b.Run(ctx, args, std.out, std.err) }})
	}
	for _, c := range []struct{ name, synopsis, summary string }{
		{"submit", "FUNCTION [--data TEXT|@FILE|-] [--wait 10s] [--idempotency-key K] [--count N]", "submit a job (or N), and wait for it if asked"},
		{"get", "JOB_ID", "print a job"},
		{"wait", "JOB_ID", "wait for a job to finish, and print it"},
		{"cancel", "JOB_ID", "cancel a job"},
		{"dlq", "list FUNCTION | redrive FUNCTION [JOB_ID ...]", "list or redrive a function's dead letters"},
		{"functions", "", "the functions with live stats"},
	} {
		cmds = append(cmds, command{c.name, c.synopsis, c.summary,
			func(ctx context.Context, args []string, std stdio) error {
				return client.Run(ctx, c.name, args, std.in, std.out, std.err)
			}})
	}
	return append(cmds,
		command{"hash-key", "[KEY]", "print the digest of an API key, for a tenant's api_keys (KEY from stdin if not given)",
			func(_ context.Context, args []string, std stdio) error { return runHashKey(args, std.in, std.out) }},
		command{"callback-secret", "--config FILE --tenant NAME", "print the secrets that sign the tenant's callbacks, for its receivers",
			func(_ context.Context, args []string, std stdio) error {
				return runCallbackSecret(args, std.out, std.err)
			}},
	)
}

// usage is sluice's usage text, made from its commands.
func usage() string {
	var b strings.Builder
	b.WriteString("Sluice buffers requests for serverless functions and dispatches them at a pace the functions can take.\n\nUsage:\n")
	for _, c := range commands() {
		line := strings.TrimSpace("sluice " + c.name + " " + c.synopsis)
		if len(line) > 37 {
			fmt.Fprintf(&b, "  %s\n  %-37s%s\n", line, "", c.summary)
			continue
		}
		fmt.Fprintf(&b, "  %-37s%s\n", line, c.summary)
	}
	b.WriteString("  sluice help                          this text\n\n" +
		"The client commands (submit to functions) take --server, --api-key or SLUICE_API_KEY, --tls* and --json.\n" +
		"Run \"sluice COMMAND -h\" for a command's flags.\n")
	return b.String()
}

// run executes one sluice command until it finishes or ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return errors.New("no command given")
	}
	std := stdio{in: os.Stdin, out: stdout, err: stderr}
	for _, c := range commands() {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			return c.run(ctx, args[len(words):], std)
		}
	}
	switch args[0] {
	case "bench":
		// Not a benchmark usage lists: bench's own child processes (bench
		// jetstream), or a name it does not know, which it reports.
		return bench.Run(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage())
		return nil
	}
	fmt.Fprint(stderr, usage())
	return fmt.Errorf("unknown command %q", args[0])
}
