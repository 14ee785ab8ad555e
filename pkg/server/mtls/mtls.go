// Package mtls is the transport security of Parley's internal connections:
// TLS configurations built from PEM files (a CA, a certificate and its key)
// that are read again whenever a file changes, so a rotated certificate
// (cert-manager renewing a Secret) takes effect without a restart.
//
// The internal gRPC services use it as mutual TLS: a server asks every
// caller for a certificate signed by the CA and refuses the handshake
// without one. Kafka and Cassandra clients use the same Source for
// one-way TLS, with a client certificate when one is configured.
package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/parleychat/parley/pkg/server/daemon"
)

// Files names the PEM files a Source reads.
type Files struct {
	// CA holds the certificates peers are checked against; empty means
	// the system's roots (clients only).
	CA string
	// Cert and Key are this process's certificate chain and private key;
	// both or neither. A server needs them; a client without them presents
	// no certificate.
	Cert, Key string
	// ServerName, when set, is the name a server's certificate is checked
	// against instead of the host dialled: internal servers reached by pod
	// address all carry one shared name.
	ServerName string
}

// Enabled reports whether any file is named.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Register binds -<prefix>tls-ca, -<prefix>tls-cert, -<prefix>tls-key and
// -<prefix>tls-server-name of fs to f, each falling back to the
// environment variable PARLEY_<env>TLS_CA and so on. what names the
// connections in the help text.
func Register(fs *flag.FlagSet, f *Files, prefix, env, what string) {
	fs.StringVar(&f.CA, prefix+"tls-ca", daemon.Env("PARLEY_"+env+"TLS_CA", ""), "PEM CA bundle that "+what+" peers are verified against (PARLEY_"+env+"TLS_CA)")
	fs.StringVar(&f.Cert, prefix+"tls-cert", daemon.Env("PARLEY_"+env+"TLS_CERT", ""), "PEM certificate this process presents on "+what+" connections (PARLEY_"+env+"TLS_CERT)")
	fs.StringVar(&f.Key, prefix+"tls-key", daemon.Env("PARLEY_"+env+"TLS_KEY", ""), "PEM private key of -"+prefix+"tls-cert (PARLEY_"+env+"TLS_KEY)")
	fs.StringVar(&f.ServerName, prefix+"tls-server-name", daemon.Env("PARLEY_"+env+"TLS_SERVER_NAME", ""), "name "+what+" server certificates are checked against instead of the host dialled (PARLEY_"+env+"TLS_SERVER_NAME)")
}

// FromEnv reads the same settings as Register from the environment only,
// for tools and tests that start clients next to configured services.
func FromEnv(env string) Files {
	return Files{
		CA:         os.Getenv("PARLEY_" + env + "TLS_CA"),
		Cert:       os.Getenv("PARLEY_" + env + "TLS_CERT"),
		Key:        os.Getenv("PARLEY_" + env + "TLS_KEY"),
		ServerName: os.Getenv("PARLEY_" + env + "TLS_SERVER_NAME"),
	}
}

// Source hands out TLS configurations from Files, reading a file again
// when its modification time or size has changed since it was last read.
// A file that fails to load after a change (caught half-written, say)
// leaves the previous contents in use until the next attempt.
type Source struct {
	files Files

	mu        sync.Mutex
	caStamp   stamp
	pairStamp [2]stamp
	pool      *x509.CertPool
	cert      *tls.Certificate
}

// stamp is what tells a changed file.
type stamp struct {
	mod  time.Time
	size int64
}

func stat(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{fi.ModTime(), fi.Size()}, nil
}

// Open checks f and reads its files once, so that a wrong path fails the
// start rather than the first connection.
func Open(f Files) (*Source, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tls: a certificate needs its key and a key its certificate")
	}
	s := &Source{files: f}
	if _, _, err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenMutual is Open for internal gRPC: all three files are required, since
// each side both presents a certificate and checks the other's. It returns
// nil, nil when f names no file (plaintext).
func OpenMutual(f Files) (*Source, error) {
	if !f.Enabled() {
		return nil, nil
	}
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("tls: internal mTLS needs a CA, a certificate and a key (-tls-ca, -tls-cert, -tls-key)")
	}
	return Open(f)
}

// load returns the current CA pool (nil for the system roots) and
// certificate (nil for none), reading what changed.
func (s *Source) load() (*x509.CertPool, *tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.files.CA != "" {
		st, err := stat(s.files.CA)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("tls: CA %s: %w", s.files.CA, err))
		case st != s.caStamp || s.pool == nil:
			pool, err := readPool(s.files.CA)
			if err != nil {
				errs = append(errs, err)
				break
			}
			s.pool, s.caStamp = pool, st
		}
	}
	if s.files.Cert != "" {
		cst, cerr := stat(s.files.Cert)
		kst, kerr := stat(s.files.Key)
		switch {
		case cerr != nil || kerr != nil:
			errs = append(errs, fmt.Errorf("tls: certificate %s / key %s: %w", s.files.Cert, s.files.Key, errors.Join(cerr, kerr)))
		case [2]stamp{cst, kst} != s.pairStamp || s.cert == nil:
			pair, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
			if err != nil {
				errs = append(errs, fmt.Errorf("tls: certificate %s / key %s: %w", s.files.Cert, s.files.Key, err))
				break
			}
			s.cert, s.pairStamp = &pair, [2]stamp{cst, kst}
		}
	}
	if (s.files.CA != "" && s.pool == nil) || (s.files.Cert != "" && s.cert == nil) {
		return nil, nil, errors.Join(errs...)
	}
	return s.pool, s.cert, nil
}

func readPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: CA %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: CA %s holds no PEM certificate", path)
	}
	return pool, nil
}

// ServerConfig is a server's TLS configuration: each handshake gets the
// current certificate and, when a CA is configured, must present a client
// certificate that the current CA signed. nextProtos are the ALPN
// protocols offered ("h2" for gRPC).
func (s *Source) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			pool, cert, err := s.load()
			if err != nil {
				return nil, err
			}
			if cert == nil {
				return nil, errors.New("tls: no server certificate configured")
			}
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}, NextProtos: nextProtos}
			if pool != nil {
				c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// ClientConfig is a client's TLS configuration as the files are now: the
// current CA verifies the server (as ServerName, or serverName when that
// is empty), and the certificate, if any, is read again at each handshake.
// A long-lived client that must follow a CA rotation takes a new
// ClientConfig per connection, as Dial and ClientCredentials do.
func (s *Source) ClientConfig(serverName string) (*tls.Config, error) {
	pool, _, err := s.load()
	if err != nil {
		return nil, err
	}
	if s.files.ServerName != "" {
		serverName = s.files.ServerName
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}
	if s.files.Cert != "" {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			_, cert, err := s.load()
			return cert, err
		}
	}
	return c, nil
}

// Dial opens a TLS connection to addr with the current configuration; the
// server is checked as the host part of addr unless ServerName is set.
func (s *Source) Dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	cfg, err := s.ClientConfig(host)
	if err != nil {
		return nil, err
	}
	return (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, network, addr)
}

// ServerOption is the gRPC server option for src: mutual TLS, or nothing
// (plaintext) when src is nil.
func ServerOption(src *Source) grpc.ServerOption {
	if src == nil {
		return grpc.EmptyServerOption{}
	}
	return grpc.Creds(credentials.NewTLS(src.ServerConfig("h2")))
}

// DialOption is the gRPC dial option for src: mutual TLS, or plaintext when
// src is nil.
func DialOption(src *Source) grpc.DialOption {
	if src == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(&clientCreds{src: src})
}

// clientCreds builds gRPC's TLS credentials from the current files at each
// handshake, so a client connection that reconnects after a rotation uses
// the new CA and certificate.
type clientCreds struct {
	src  *Source
	name string // set by OverrideServerName
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	host, _, err := net.SplitHostPort(authority)
	if err != nil {
		host = authority
	}
	if c.name != "" {
		host = c.name
	}
	cfg, err := c.src.ClientConfig(host)
	if err != nil {
		return nil, nil, err
	}
	// gRPC's TLS credentials check the server as the authority they are
	// given, so give them the name to check.
	return credentials.NewTLS(cfg).ClientHandshake(ctx, cfg.ServerName, conn)
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tls: client credentials cannot serve")
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	return &clientCreds{src: c.src, name: c.name}
}

//nolint:staticcheck // part of the interface gRPC still calls
func (c *clientCreds) OverrideServerName(name string) error {
	c.name = name
	return nil
}
