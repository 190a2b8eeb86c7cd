package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// serverTLSConfig loads the TLS settings both listeners share from the
// PEM files named by --tls-cert, --tls-key and --tls-client-ca.
//
// It returns nil, and no error, when all three are empty: TLS is off.
// certFile and keyFile go together: the server's certificate (followed by
// any intermediates) and its private key. clientCAFile, which needs them,
// is a bundle of CA certificates; with it every client must present a
// certificate signed by one of them (mutual TLS). The minimum version is
// TLS 1.2.
//
// Errors name the flag and the file at fault.
func serverTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
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
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
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
