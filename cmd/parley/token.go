package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/daemon"
)

func tokenCmd(args []string) int {
	fs := flag.NewFlagSet("parley token", flag.ExitOnError)
	user := fs.String("user", "", "user id (the token's subject)")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity")
	attrs := map[string]string{}
	fs.Func("attr", "an attribute, key=value, which puts the user in that audience (repeatable; a key given twice holds both values)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("want key=value")
		}
		if attrs[k] != "" {
			v = attrs[k] + "," + v
		}
		attrs[k] = v
		return nil
	})
	daemon.Parse(fs, args)
	tok, err := mintWith(*user, *ttl, attrs)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(tok)
	return 0
}

func mint(user string, ttl time.Duration) (string, error) {
	return mintWith(user, ttl, nil)
}

// mintWith signs a dev token carrying attrs (auth.AttributesClaim).
func mintWith(user string, ttl time.Duration, attrs map[string]string) (string, error) {
	m, err := auth.NewHS256(secret())
	if err != nil {
		return "", err
	}
	return m.MintWith(user, time.Now(), ttl, attrs)
}
