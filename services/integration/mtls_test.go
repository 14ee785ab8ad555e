package integration

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/mtls/devcert"
)

// TestInternalGRPCRefusesCallersWithoutAClientCertificate (real stack) is
// issue 14's transport check: every service runs as its own process with
// internal mTLS from a CA of the test's own, a message crosses ingest,
// fan-out, presence and both edges' Push; then every internal gRPC
// endpoint (ingest, persistence, both presence instances, both edges'
// Push, edge0's backend API) refuses a plaintext caller, a TLS caller
// without a certificate and one whose certificate another CA signed, and
// answers one with a certificate from the right CA.
func TestInternalGRPCRefusesCallersWithoutAClientCertificate(t *testing.T) {
	s := requireStack(t)
	dir := t.TempDir()
	if _, err := devcert.Write(dir, devcert.LoopbackHosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	good := mtls.Files{CA: filepath.Join(dir, devcert.CAFile), Cert: filepath.Join(dir, devcert.CertFile), Key: filepath.Join(dir, devcert.KeyFile)}
	s.env = append(slices.Clip(s.env), "PARLEY_TLS_CA="+good.CA, "PARLEY_TLS_CERT="+good.Cert, "PARLEY_TLS_KEY="+good.Key, "PARLEY_TLS_SERVER_NAME=")
	// edge0 serves the backend API too: with mTLS on it asks for a
	// certificate before any token is looked at.
	c := startClusterEdges(t, s, [2][]string{backendArgs(t), nil})

	// The services reach each other through mTLS: a message goes from
	// edge0 through ingest and fan-out (presence's Locate, edge1's Push)
	// to bob on edge1.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alice, bob := c.dial(0, "alice", "a1"), c.dial(1, "bob", "b1")
	conv := createGroups(t, ctx, alice, 1, "mtls", "bob")[0]
	if _, err := alice.Send(ctx, conv, "over mTLS"); err != nil {
		t.Fatalf("send: %v", err)
	}
	for got := false; !got; {
		select {
		case ev := <-bob.Events():
			got = ev.GetConversationId() == conv && ev.GetMessagePosted().GetText() == "over mTLS"
		case <-ctx.Done():
			t.Fatal("bob on edge1 did not get the message pushed")
		}
	}

	rogueDir := t.TempDir()
	if _, err := devcert.Write(rogueDir, devcert.LoopbackHosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	// The rogue caller trusts the services' CA, but its own certificate is
	// from another CA.
	rogue := mtls.Files{CA: good.CA, Cert: filepath.Join(rogueDir, devcert.CertFile), Key: filepath.Join(rogueDir, devcert.KeyFile)}
	callers := map[string]grpc.DialOption{
		"plaintext":                mtls.DialOption(nil),
		"TLS without certificate":  mtls.DialOption(open(t, mtls.Files{CA: good.CA})),
		"another CA's certificate": mtls.DialOption(open(t, rogue)),
	}
	endpoints := map[string]string{"ingest": c.ingestAddr, "persistence": c.persistenceAddr}
	for i, a := range strings.Split(c.presenceAddr, ",") {
		endpoints["presence"+string(rune('0'+i))] = a
	}
	for _, e := range []string{"edge0", "edge1"} {
		endpoints[e+" push"] = flagValue(t, c.procs[e].args, "-grpc")
	}
	endpoints["edge0 backend"] = flagValue(t, c.procs["edge0"].args, "-backend-addr")
	for name, addr := range endpoints {
		// A method no service has: a caller the server accepts gets
		// Unimplemented from it, so only the transport decides.
		if code := probe(t, addr, mtls.DialOption(open(t, good))); code != codes.Unimplemented {
			t.Errorf("%s (%s) with the CA's certificate: %v, want the server's Unimplemented", name, addr, code)
		}
		for who, opt := range callers {
			if code := probe(t, addr, opt); code != codes.Unavailable {
				t.Errorf("%s (%s), %s: %v, want the connection refused (Unavailable)", name, addr, who, code)
			}
		}
	}
}

func open(t *testing.T, f mtls.Files) *mtls.Source {
	t.Helper()
	src, err := mtls.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// probe calls an unknown method on addr over a fresh connection and
// returns the status code.
func probe(t *testing.T, addr string, opt grpc.DialOption) codes.Code {
	t.Helper()
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = conn.Invoke(ctx, "/parley.test.v1.Probe/Probe", &emptypb.Empty{}, &emptypb.Empty{})
	if err != nil && status.Code(err) == codes.Unavailable {
		t.Logf("%s refused: %v", addr, err)
	}
	return status.Code(err)
}

// flagValue returns the value following flag in args.
func flagValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	t.Fatalf("no %s in %v", flag, args)
	return ""
}
