// Command parley is Parley's command line: run the whole platform on
// embedded defaults, mint dev tokens, chat from a terminal, and smoke-test a
// running platform.
package main

import (
	"fmt"
	"os"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/daemon"
)

// secret is the HS256 secret `parley run` and `parley token` agree on:
// PARLEY_JWT_SECRET, or the public auth.DevSecret, which the edge accepts
// only on loopback (or with -insecure-dev).
func secret() []byte { return []byte(daemon.Env("PARLEY_JWT_SECRET", auth.DevSecret)) }

const usage = `usage: parley <command> [flags]

commands:
  run      run every service in one process on embedded Kafka (kfake) and Pebble
  kfake    run only the embedded Kafka cluster, for services run as separate processes
  token    print a dev token: parley token --user alice
  chat     chat from a terminal: parley chat --user alice --to bob
  smoke    scripted conversation against a running platform; prints "smoke ok: N events delivered"
  topics   create Parley's Kafka topics on a real cluster

Run "parley <command> -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmds := map[string]func([]string) int{
		"run":    runCmd,
		"kfake":  kfakeCmd,
		"token":  tokenCmd,
		"chat":   chatCmd,
		"smoke":  smokeCmd,
		"topics": topicsCmd,
	}
	cmd, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	os.Exit(cmd(os.Args[2:]))
}
