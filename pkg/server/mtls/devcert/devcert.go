// Package devcert makes throwaway certificate authorities and certificates
// for loopback: the local stack's internal mTLS, Kafka and Cassandra TLS,
// and tests. Nothing it makes belongs in production.
package devcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority that can sign leaf certificates.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

// NewCA makes a self-signed CA named name, valid for validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devcert: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Parley development"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("devcert: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devcert: CA certificate: %w", err)
	}
	return &CA{Cert: cert, key: key, der: der}, nil
}

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})
}

// KeyPEM is the CA key in PEM (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.key) }

// Leaf is a signed certificate and its key, both PEM.
type Leaf struct {
	CertPEM, KeyPEM []byte
}

// Issue signs a certificate for hosts (DNS names or IP addresses), usable
// by a server and a client both, valid for validity.
func (ca *CA) Issue(name string, hosts []string, validity time.Duration) (Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, fmt.Errorf("devcert: key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Parley development"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return Leaf{}, fmt.Errorf("devcert: certificate: %w", err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return Leaf{}, err
	}
	return Leaf{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: kp}, nil
}

// keyPEM encodes PKCS #8, the form Kafka's PEM key store reads too.
func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("devcert: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// LoopbackHosts are the names a loopback certificate covers.
var LoopbackHosts = []string{"localhost", "127.0.0.1", "::1"}

// Names of the files Write makes, as cert-manager names a Secret's keys.
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	// BundleFile is the key followed by the certificate: the PEM key
	// store that Kafka and Cassandra brokers read.
	BundleFile = "tls-bundle.pem"
)

// Write makes a CA and one certificate for hosts in dir, valid for
// validity, unless dir already holds all of them (then it leaves them, so
// running services keep trusting what they trust). It reports whether it
// wrote anything.
func Write(dir string, hosts []string, validity time.Duration) (bool, error) {
	names := []string{CAFile, "ca.key", CertFile, KeyFile, BundleFile}
	have := 0
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			have++
		} else if !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
	}
	if have == len(names) {
		return false, nil
	}
	ca, err := NewCA("Parley development CA", validity)
	if err != nil {
		return false, err
	}
	leaf, err := ca.Issue("parley-dev", hosts, validity)
	if err != nil {
		return false, err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	files := map[string][]byte{
		CAFile: ca.CertPEM(), "ca.key": caKey, CertFile: leaf.CertPEM, KeyFile: leaf.KeyPEM,
		BundleFile: append(append([]byte{}, leaf.KeyPEM...), leaf.CertPEM...),
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), files[n], 0o600); err != nil {
			return false, fmt.Errorf("devcert: write %s: %w", n, err)
		}
	}
	return true, nil
}
