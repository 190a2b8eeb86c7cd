package servertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throwaway PKI in a test's temporary directory: a CA, a
// server certificate for 127.0.0.1 and a client certificate it signed, and
// a client certificate signed by another CA.
type PKI struct {
	// Files, PEM.
	CAFile, ServerCert, ServerKey, ClientCert, ClientKey string

	Roots       *x509.CertPool  // trusts the CA
	Client      tls.Certificate // signed by the CA
	OtherClient tls.Certificate // signed by another CA
}

// NewPKI makes a PKI in a fresh temporary directory of tb's.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newTestCert(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "sluice test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	})
	server, serverKey := newTestCert(t, ca, caKey, &x509.Certificate{
		Subject: pkix.Name{CommonName: "sluice test server"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	clientTemplate := &x509.Certificate{
		Subject:  pkix.Name{CommonName: "sluice test client"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	client, clientKey := newTestCert(t, ca, caKey, clientTemplate)
	otherCA, otherCAKey := newTestCert(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "another CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	})
	other, otherKey := newTestCert(t, otherCA, otherCAKey, clientTemplate)

	p := &PKI{
		CAFile:     writeTestPEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw),
		ServerCert: writeTestPEM(t, dir, "server.pem", "CERTIFICATE", server.Raw),
		ServerKey:  writeTestPEM(t, dir, "server-key.pem", "PRIVATE KEY", marshalTestKey(t, serverKey)),
		ClientCert: writeTestPEM(t, dir, "client.pem", "CERTIFICATE", client.Raw),
		ClientKey:  writeTestPEM(t, dir, "client-key.pem", "PRIVATE KEY", marshalTestKey(t, clientKey)),
		Roots:      x509.NewCertPool(),
		Client:     tls.Certificate{Certificate: [][]byte{client.Raw}, PrivateKey: clientKey},
		OtherClient: tls.Certificate{
			Certificate: [][]byte{other.Raw}, PrivateKey: otherKey,
		},
	}
	p.Roots.AddCert(ca)
	return p
}

// newTestCert makes a certificate from template with a new P-256 key,
// signed by parent (self-signed when parent is nil).
func newTestCert(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, template *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	template.SerialNumber = serial
	template.NotBefore, template.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = template, key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func marshalTestKey(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// writeTestPEM writes one PEM block to dir/name and returns the path.
func writeTestPEM(t testing.TB, dir, name, blockType string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ClientTLS is a client's TLS configuration trusting the test CA and
// presenting cert, if any.
func (p *PKI) ClientTLS(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: p.Roots}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}
