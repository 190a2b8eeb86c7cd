package cli

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ClientTLS is the TLS configuration of a client that trusts the CA
// certificates in caFile (the system's roots if empty) and presents the
// certificate in certFile and keyFile (none if both are empty). caFlag and
// pairFlag name the flags that gave the files, for errors.
func ClientTLS(caFile, certFile, keyFile, caFlag, pairFlag string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caFlag, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s: no PEM certificate in it", caFlag, caFile)
		}
	}
	if certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pairFlag, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
