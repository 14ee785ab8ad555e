package mtls_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/mtls/devcert"
)

// writeSet writes a CA's certificate and a leaf it signed into dir, and
// returns the files.
func writeSet(t *testing.T, dir string, ca *devcert.CA, hosts []string) mtls.Files {
	t.Helper()
	leaf, err := ca.Issue("test", hosts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := mtls.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
	for path, b := range map[string][]byte{f.CA: ca.CertPEM(), f.Cert: leaf.CertPEM, f.Key: leaf.KeyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func newCA(t *testing.T, name string) *devcert.CA {
	t.Helper()
	ca, err := devcert.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// serve starts a gRPC health server with opt and returns its address.
func serve(t *testing.T, opt grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opt)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// call makes one health check over a fresh connection.
func call(t *testing.T, addr string, opt grpc.DialOption) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func open(t *testing.T, f mtls.Files) *mtls.Source {
	t.Helper()
	src, err := mtls.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestMutualTLSRefusesCallersWithoutAGoodCertificate(t *testing.T) {
	ca := newCA(t, "ca")
	server := writeSet(t, t.TempDir(), ca, devcert.LoopbackHosts)
	addr := serve(t, mtls.ServerOption(open(t, server)))

	if err := call(t, addr, mtls.DialOption(open(t, server))); err != nil {
		t.Fatalf("a client with a certificate from the CA was refused: %v", err)
	}
	if err := call(t, addr, mtls.DialOption(nil)); err == nil {
		t.Fatal("a plaintext client was served")
	}
	noCert := open(t, mtls.Files{CA: server.CA})
	if err := call(t, addr, mtls.DialOption(noCert)); err == nil {
		t.Fatal("a TLS client without a certificate was served")
	}
	rogue := writeSet(t, t.TempDir(), newCA(t, "rogue"), devcert.LoopbackHosts)
	rogue.CA = server.CA // it trusts the server, but its own certificate is from another CA
	if err := call(t, addr, mtls.DialOption(open(t, rogue))); err == nil {
		t.Fatal("a client with a certificate from another CA was served")
	}
}

func TestClientChecksTheServerName(t *testing.T) {
	ca := newCA(t, "ca")
	server := writeSet(t, t.TempDir(), ca, []string{"parley-internal"})
	addr := serve(t, mtls.ServerOption(open(t, server)))
	client := writeSet(t, t.TempDir(), ca, []string{"client"})
	client.CA = server.CA
	if err := call(t, addr, mtls.DialOption(open(t, client))); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server whose certificate does not name 127.0.0.1 was trusted (err %v)", err)
	}
	client.ServerName = "parley-internal"
	if err := call(t, addr, mtls.DialOption(open(t, client))); err != nil {
		t.Fatalf("with the shared server name: %v", err)
	}
}

func TestRotatedFilesAreReadAgain(t *testing.T) {
	dir := t.TempDir()
	old := newCA(t, "old")
	server := writeSet(t, dir, old, devcert.LoopbackHosts)
	addr := serve(t, mtls.ServerOption(open(t, server)))
	// A client set signed by the new CA, trusting the new CA.
	next := newCA(t, "next")
	client := writeSet(t, t.TempDir(), next, devcert.LoopbackHosts)
	if err := call(t, addr, mtls.DialOption(open(t, client))); err == nil {
		t.Fatal("a client of another CA was served before the rotation")
	}
	// Rotate the server's files in place: new CA, new certificate. Give
	// the files a later modification time whatever the clock's grain.
	writeSet(t, dir, next, devcert.LoopbackHosts)
	later := time.Now().Add(2 * time.Second)
	for _, p := range []string{server.CA, server.Cert, server.Key} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if err := call(t, addr, mtls.DialOption(open(t, client))); err != nil {
		t.Fatalf("after the rotation the new CA's client was refused: %v", err)
	}
	oldClient := writeSet(t, t.TempDir(), old, devcert.LoopbackHosts)
	if err := call(t, addr, mtls.DialOption(open(t, oldClient))); err == nil {
		t.Fatal("after the rotation a client of the old CA was still served")
	}
}

func TestOpenMutualNeedsAllThreeFiles(t *testing.T) {
	if src, err := mtls.OpenMutual(mtls.Files{}); src != nil || err != nil {
		t.Fatalf("no files: got %v, %v; want plaintext", src, err)
	}
	f := writeSet(t, t.TempDir(), newCA(t, "ca"), devcert.LoopbackHosts)
	f.Key = ""
	if _, err := mtls.OpenMutual(f); err == nil {
		t.Fatal("a certificate without its key was accepted")
	}
	f.Key = filepath.Join(t.TempDir(), "missing.key")
	if _, err := mtls.OpenMutual(f); err == nil {
		t.Fatal("a missing key file was accepted")
	}
}
