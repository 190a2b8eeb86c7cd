package server

import (
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
)

// NATSAuth is how the gateway proves itself to a NATS server of its own
// (--nats-url): whatever the URL does not carry. User and password
// (nats://user:password@host) and a token (nats://token@host) go in the
// URL; the rest name files, so that secrets stay out of flags and process
// listings (in Kubernetes, mounted from Secrets).
type NATSAuth struct {
	// Creds names a .creds file: a user JWT and its NKey seed, as NATS
	// accounts (operator mode) and hosted NATS issue them.
	Creds string
	// NKey names a file holding an NKey seed (SU…) the server knows the
	// public key of.
	NKey string
	// TLSCA names a PEM bundle of CA certificates the server's certificate
	// must chain to; empty: the system's roots.
	TLSCA string
	// TLSCert and TLSKey name the client certificate and key a server
	// that verifies clients (mutual TLS) asks for.
	TLSCert, TLSKey string
	// JSDomain is the JetStream domain Sluice's streams live in: for a
	// gateway connected to a leaf node whose JetStream is another domain's.
	JSDomain string
}

// check names the flag of a setting that cannot work, before any
// connection is tried.
func (a NATSAuth) check(natsURL string) error {
	given := a.Creds != "" || a.NKey != "" || a.TLSCA != "" || a.TLSCert != "" || a.TLSKey != "" || a.JSDomain != ""
	switch {
	case given && natsURL == "":
		return errors.New("--nats-creds, --nats-nkey, --nats-tls-* and --nats-js-domain are for a NATS of your own: they need --nats-url")
	case a.Creds != "" && a.NKey != "":
		return errors.New("--nats-creds and --nats-nkey: give one; a .creds file holds its own NKey seed")
	case (a.TLSCert == "") != (a.TLSKey == ""):
		return errors.New("--nats-tls-cert and --nats-tls-key go together: a client certificate and its key")
	}
	for flag, file := range map[string]string{"--nats-creds": a.Creds, "--nats-nkey": a.NKey, "--nats-tls-ca": a.TLSCA, "--nats-tls-cert": a.TLSCert, "--nats-tls-key": a.TLSKey} {
		if file == "" {
			continue
		}
		if _, err := os.Stat(file); err != nil {
			return fmt.Errorf("%s %s: %w", flag, file, err)
		}
	}
	return nil
}

// options are the nats.go options that present a's credentials and TLS.
func (a NATSAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
	if a.Creds != "" {
		opts = append(opts, nats.UserCredentials(a.Creds))
	}
	if a.NKey != "" {
		opt, err := nats.NkeyOptionFromSeed(a.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %w", a.NKey, err)
		}
		opts = append(opts, opt)
	}
	if a.TLSCA == "" && a.TLSCert == "" {
		return opts, nil
	}
	cfg, err := cli.ClientTLS(a.TLSCA, a.TLSCert, a.TLSKey, "--nats-tls-ca", "--nats-tls-cert "+a.TLSCert+", --nats-tls-key "+a.TLSKey)
	if err != nil {
		return nil, err
	}
	return append(opts, nats.Secure(cfg)), nil
}
