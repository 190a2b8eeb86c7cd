package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// checkNATSConfig parses a NATS server config file the way nats-server does
// (unknown fields are errors), with env standing in for the environment the
// file's $VARIABLES come from, and checks the settings Sluice's durability
// depends on: JetStream on, sync_interval always, a max_payload that fits
// Sluice's largest payload, and, with cluster set, a named cluster with
// routes to three nodes.
func checkNATSConfig(file string, env map[string]string, cluster bool) []error {
	for k, v := range env {
		if old, ok := os.LookupEnv(k); ok {
			defer os.Setenv(k, old)
		} else {
			defer os.Unsetenv(k)
		}
		os.Setenv(k, v)
	}
	o, err := server.ProcessConfigFile(file)
	if err != nil {
		return []error{fmt.Errorf("nats config %s: %w", file, err)}
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("nats config %s: %s", file, fmt.Sprintf(format, args...)))
	}
	if !o.JetStream {
		bad("jetstream: not enabled")
	}
	if !o.SyncAlways {
		bad("jetstream.sync_interval: want always; otherwise an OS crash or power loss can lose acknowledged jobs")
	}
	if o.StoreDir == "" {
		bad("jetstream.store_dir: required")
	}
	// Sluice's largest max_payload (4MiB) plus what its dead letter holds
	// besides the payload: 96KiB (buffer.PayloadOverhead; another module).
	if o.MaxPayload < 4<<20+96<<10 {
		bad("max_payload %d: too small for Sluice's largest max_payload (4MiB) and the 96KiB a dead letter holds besides", o.MaxPayload)
	}
	if strings.HasPrefix(o.ServerName, "$") || o.ServerName == "" {
		bad("server_name: unset (%q)", o.ServerName)
	}
	if cluster {
		if o.Cluster.Name == "" || o.Cluster.Port == 0 {
			bad("cluster: name and port are required")
		}
		if len(o.Routes) != 3 {
			bad("cluster.routes: want the three nodes, got %d", len(o.Routes))
		}
	}
	return errs
}
