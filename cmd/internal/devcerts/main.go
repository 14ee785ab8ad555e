// Command devcerts makes a throwaway CA and one certificate for loopback
// (localhost, 127.0.0.1, ::1) in a folder, named as cert-manager names a
// Secret's keys: ca.crt, tls.crt, tls.key, plus ca.key and tls-bundle.pem
// (key and certificate in one file, the PEM key store Kafka reads). The
// local stack (deployments/local/stack.sh) runs its internal mTLS, Kafka's
// SASL_SSL listener and the tests' clients on them. Files already there
// are kept, so running services keep trusting what they trust.
//
//	go run ./cmd/internal/devcerts -dir ~/.local/state/parley-stack/tls
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/mtls/devcert"
)

func main() {
	fs := flag.NewFlagSet("devcerts", flag.ExitOnError)
	dir := fs.String("dir", "", "folder to write the files to (required)")
	hosts := fs.String("hosts", "localhost,127.0.0.1,::1", "names and addresses the certificate covers, comma-separated")
	validity := fs.Duration("validity", 365*24*time.Hour, "how long the CA and certificate are valid")
	daemon.Parse(fs, os.Args[1:])
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "devcerts: -dir is required")
		os.Exit(2)
	}
	wrote, err := devcert.Write(*dir, daemon.List(*hosts), *validity)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devcerts:", err)
		os.Exit(1)
	}
	if wrote {
		fmt.Printf("devcerts: wrote a development CA and a certificate for %s to %s\n", *hosts, *dir)
	}
}
