package edge

import (
	"fmt"
	"net"
	"strings"

	"github.com/parleychat/parley/pkg/server/auth"
)

// checkDevExposure refuses to serve dev tokens, or to trust the public dev
// secret, on any listener off loopback: either lets anyone who reaches the
// node be whoever they like. InsecureDev overrides it for a demo on a LAN.
// Whenever dev tokens or the dev secret are on, it says so loudly.
func (s *Service) checkDevExposure() error {
	devSecret := auth.IsDevSecret(s.cfg.JWTSecret)
	if !s.cfg.DevTokens && !devSecret {
		return nil
	}
	var what []string
	if s.cfg.DevTokens {
		what = append(what, "dev tokens (GET /v1/dev/token mints a token for any user who asks)")
	}
	if devSecret {
		what = append(what, "the public dev jwt secret (anyone can mint tokens for any user)")
	}
	var exposed []string
	for _, l := range []net.Listener{s.srv.httpLis, s.srv.grpcLis} {
		if !loopback(l.Addr()) {
			exposed = append(exposed, l.Addr().String())
		}
	}
	switch {
	case len(exposed) == 0:
		s.log.Warn("edge: INSECURE: "+strings.Join(what, " and ")+" are on; for local use only", "http", s.HTTPAddr())
		return nil
	case !s.cfg.InsecureDev:
		return fmt.Errorf("edge: refusing %s on non-loopback address %s: listen on 127.0.0.1, configure a real secret or JWKS, or pass -insecure-dev (PARLEY_INSECURE_DEV=1) to accept the risk",
			strings.Join(what, " and "), strings.Join(exposed, ", "))
	}
	s.log.Error("edge: INSECURE: "+strings.Join(what, " and ")+" are on and reachable from the network (-insecure-dev): anyone who reaches this node can act as any user",
		"exposed", exposed)
	return nil
}

// loopback reports whether a bound address only takes connections from
// this host. An unspecified address (0.0.0.0, ::) takes them from anywhere.
func loopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
