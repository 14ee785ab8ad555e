// Command parley-presence runs the presence service.
package main

import (
	"flag"
	"os"

	"github.com/parleychat/parley/pkg/daemon"
	"github.com/parleychat/parley/services/presence"
)

func main() {
	fs := flag.NewFlagSet("parley-presence", flag.ExitOnError)
	grpcAddr := fs.String("grpc", daemon.Env("PARLEY_GRPC_ADDR", "127.0.0.1:7104"), "gRPC listen address (PARLEY_GRPC_ADDR)")
	httpAddr := fs.String("http", daemon.Env("PARLEY_HTTP_ADDR", "127.0.0.1:8104"), "health listen address (PARLEY_HTTP_ADDR)")
	lease := fs.Duration("lease", daemon.EnvDuration("PARLEY_PRESENCE_LEASE", presence.DefaultLease), "how long a silent edge keeps its sessions (PARLEY_PRESENCE_LEASE)")
	daemon.Parse(fs, os.Args[1:])
	log := daemon.Logger()
	svc, err := presence.New(presence.Config{GRPCAddr: *grpcAddr, Lease: *lease, Logger: log})
	if err != nil {
		log.Error("start", "err", err)
		os.Exit(1)
	}
	os.Exit(daemon.Run(log, *httpAddr, svc.Probe.Ready, svc.Run))
}
