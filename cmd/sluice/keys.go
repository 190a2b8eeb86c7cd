package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/gateway"
)

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
	if err := cli.ParseFlags(fs, args); err != nil {
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
