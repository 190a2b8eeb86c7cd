package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// checkCompose loads a compose file as `docker compose config` does:
// validated against the Compose specification's schema, references between
// services checked. Then it checks what this deployment needs: bind-mounted
// files exist; every NATS node mounts a config the NATS server accepts, with
// sync_interval always; every gateway runs `serve` against all the NATS
// nodes with --replicas=3 and a stop grace period that covers its drain.
func checkCompose(file string) []error {
	abs, err := filepath.Abs(file)
	if err != nil {
		return []error{err}
	}
	dir := filepath.Dir(abs)
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("sluice", true)
		o.ResolvePaths = true
	})
	if err != nil {
		return []error{fmt.Errorf("compose %s: %w", file, err)}
	}
	var errs []error
	bad := func(svc, format string, args ...any) {
		errs = append(errs, fmt.Errorf("compose %s: service %s: %s", file, svc, fmt.Sprintf(format, args...)))
	}
	var natsNodes, gateways []string
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				bad(name, "bind mount: %v", err)
			}
			if strings.HasPrefix(v.Target, "/etc/nats/") {
				natsNodes = append(natsNodes, name)
				env := map[string]string{}
				for k, val := range s.Environment {
					if val != nil {
						env[k] = *val
					}
				}
				for _, e := range checkNATSConfig(v.Source, env, true) {
					bad(name, "%v", e)
				}
			}
		}
		if len(s.Command) > 0 && s.Command[0] == "serve" {
			gateways = append(gateways, name)
		}
	}
	if len(natsNodes) != 3 {
		errs = append(errs, fmt.Errorf("compose %s: want three NATS nodes mounting a config under /etc/nats, got %v", file, natsNodes))
	}
	if len(gateways) < 2 {
		errs = append(errs, fmt.Errorf("compose %s: want at least two gateway replicas (command serve), got %v", file, gateways))
	}
	for _, name := range gateways {
		s := p.Services[name]
		flags := map[string]string{}
		for _, a := range s.Command[1:] {
			k, v, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !strings.HasPrefix(a, "--") || !ok {
				bad(name, "argument %q: want --flag=value", a)
				continue
			}
			flags[k] = v
		}
		for _, n := range natsNodes {
			if !strings.Contains(flags["nats-url"], "//"+n+":") {
				bad(name, "--nats-url=%s does not name NATS node %s", flags["nats-url"], n)
			}
		}
		if flags["replicas"] != "3" {
			bad(name, "--replicas=%s: want 3, one per NATS node", flags["replicas"])
		}
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == flags["config"] }) {
			bad(name, "--config=%s is not mounted", flags["config"])
		}
		if !s.ReadOnly {
			bad(name, "read_only: want true")
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= durationFlag(flags, "shutdown-delay", 0)+durationFlag(flags, "drain-timeout", 30*time.Second) {
			bad(name, "stop_grace_period does not cover --shutdown-delay plus --drain-timeout")
		}
	}
	return errs
}

// durationFlag is the duration a --flag=value sets, or def.
func durationFlag(flags map[string]string, name string, def time.Duration) time.Duration {
	if v, ok := flags[name]; ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}
