package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/daemon"
)

func tokenCmd(args []string) int {
	fs := flag.NewFlagSet("parley token", flag.ExitOnError)
	user := fs.String("user", "", "user id (the token's subject)")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity")
	daemon.Parse(fs, args)
	tok, err := mint(*user, *ttl)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(tok)
	return 0
}

func mint(user string, ttl time.Duration) (string, error) {
	m, err := auth.NewHS256(secret())
	if err != nil {
		return "", err
	}
	return m.Mint(user, ttl)
}
