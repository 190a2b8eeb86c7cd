package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// serverTLSConfig loads the TLS settings both listeners share from the
// PEM files named by --tls-cert, --tls-key and --tls-client-ca.
//
// It returns nil, and no error, when all three are empty: TLS is off.
// certFile and keyFile go together: the server's certificate (followed by
// any intermediates) and its private key, read again when either changes
// on disk (see certReloader). clientCAFile, which needs them,
// is a bundle of CA certificates; with it every client must present a
// certificate signed by one of them (mutual TLS). The minimum version is
// TLS 1.2.
//
// Errors name the flag and the file at fault.
func serverTLSConfig(certFile, keyFile, clientCAFile string, log *slog.Logger) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "" && clientCAFile == "":
		return nil, nil
	case certFile == "" && keyFile == "":
		return nil, errors.New("--tls-client-ca: needs --tls-cert and --tls-key: client certificates are checked only over TLS")
	case keyFile == "":
		return nil, errors.New("--tls-cert: needs --tls-key, the certificate's private key")
	case certFile == "":
		return nil, errors.New("--tls-key: needs --tls-cert, the certificate for the key")
	}
	certPEM, err := readPEM("--tls-cert", certFile, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	keyPEM, err := readPEM("--tls-key", keyFile, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", certFile, keyFile, err)
	}
	certs := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	certs.loaded.Store(&loadedCert{cert: &cert, at: certs.stamp()})
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}
	if clientCAFile == "" {
		return cfg, nil
	}
	caPEM, err := readPEM("--tls-client-ca", clientCAFile, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for i, rest := 1, caPEM; ; i++ {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("--tls-client-ca %s: PEM block %d is a %s, not a CERTIFICATE", clientCAFile, i, b.Type)
		}
		ca, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca %s: certificate %d: %w", clientCAFile, i, err)
		}
		pool.AddCert(ca)
	}
	cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	return cfg, nil
}

// readPEM reads file, given by flag, and checks that it holds at least one
// PEM block whose type ends in what ("PRIVATE KEY" takes "EC PRIVATE KEY"
// too).
func readPEM(flag, file, what string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, fmt.Errorf("%s %s: no PEM %s in it", flag, file, what)
		}
		if strings.HasSuffix(b.Type, what) {
			return data, nil
		}
	}
}

// certReloader serves the certificate in certFile and keyFile, read again
// at the first handshake after either file changed on disk, so that a
// certificate rotated in place (cert-manager, a renewed Let's Encrypt
// one) is served without a restart, by both listeners. A pair that does
// not load (a rotation caught halfway: the new certificate beside the old
// key) leaves the last good one in service, with a warning, and is tried
// again at the next handshake after either file changes again.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu     sync.Mutex // one reload at a time
	loaded atomic.Pointer[loadedCert]
	failed fileStamp // the files as they were at the last failed load
}

// loadedCert is a certificate and the files it was read from, as they
// were then.
type loadedCert struct {
	cert *tls.Certificate
	at   fileStamp
}

// fileStamp is what tells that the files changed: each one's modification
// time and size.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// stamp reads the files' stamp; a file that cannot be read stamps zero.
func (r *certReloader) stamp() fileStamp {
	var s fileStamp
	if fi, err := os.Stat(r.certFile); err == nil {
		s.certMod, s.certSize = fi.ModTime(), fi.Size()
	}
	if fi, err := os.Stat(r.keyFile); err == nil {
		s.keyMod, s.keySize = fi.ModTime(), fi.Size()
	}
	return s
}

// get is tls.Config.GetCertificate: the certificate now, reloaded first if
// the files changed.
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cur := r.loaded.Load()
	now := r.stamp()
	if now == cur.at {
		return cur.cert, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur = r.loaded.Load(); now == cur.at || now == r.failed {
		return cur.cert, nil // reloaded meanwhile, or known not to load
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.failed = now
		r.log.Warn("TLS certificate changed on disk but does not load; still serving the previous one",
			"tls_cert", r.certFile, "tls_key", r.keyFile, "err", err)
		return cur.cert, nil
	}
	r.loaded.Store(&loadedCert{cert: &cert, at: now})
	r.log.Info("TLS certificate reloaded from disk", "tls_cert", r.certFile)
	return &cert, nil
}
