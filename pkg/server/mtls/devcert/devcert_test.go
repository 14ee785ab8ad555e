package devcert_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/mtls/devcert"
)

func TestWriteMakesAVerifiableSetOnce(t *testing.T) {
	dir := t.TempDir()
	wrote, err := devcert.Write(dir, devcert.LoopbackHosts, time.Hour)
	if err != nil || !wrote {
		t.Fatalf("first Write: wrote %v, %v", wrote, err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pair, err := tls.X509KeyPair(read(devcert.CertFile), read(devcert.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(read(devcert.CAFile))
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("as %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "example.com"}); err == nil {
		t.Error("the loopback certificate verified as example.com")
	}
	if want := append(read(devcert.KeyFile), read(devcert.CertFile)...); !bytes.Equal(read(devcert.BundleFile), want) {
		t.Error("the bundle is not the key followed by the certificate")
	}
	before := read(devcert.CAFile)
	if wrote, err := devcert.Write(dir, devcert.LoopbackHosts, time.Hour); err != nil || wrote {
		t.Fatalf("second Write: wrote %v, %v; want the files kept", wrote, err)
	}
	if !bytes.Equal(read(devcert.CAFile), before) {
		t.Fatal("the CA changed on the second Write")
	}
}
