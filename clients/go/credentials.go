package switchyard

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"sync"
)

// The environment variables New reads for what no Option set (WithoutEnvironment turns that
// off). They are the ones the Python client, the CLI and the agent read (docs/security.md).
const (
	// TokenEnv holds the bearer token itself.
	TokenEnv = "SWITCHYARD_TOKEN"
	// TokenFileEnv names a file holding the token (a mounted Kubernetes Secret, say).
	TokenFileEnv = "SWITCHYARD_TOKEN_FILE"
	// TLSCAEnv names the PEM file of the CA(s) the scheduler's certificate must chain to.
	TLSCAEnv = "SWITCHYARD_TLS_CA"
	// TLSCertEnv names the PEM file of the caller's own certificate (mTLS).
	TLSCertEnv = "SWITCHYARD_TLS_CERT"
	// TLSKeyEnv names the PEM file of the private key of that certificate.
	TLSKeyEnv = "SWITCHYARD_TLS_KEY"
	// TLSServerNameEnv is the name the scheduler's certificate must carry when it is not the
	// host dialled.
	TLSServerNameEnv = "SWITCHYARD_TLS_SERVER_NAME"
)

// AuthorizationMetadataKey is the request metadata that carries the token, as
// BearerPrefix + token.
const AuthorizationMetadataKey = "authorization"

// BearerPrefix starts the value of AuthorizationMetadataKey (RFC 6750).
const BearerPrefix = "Bearer "

// TLS says how to reach the schedulers over TLS. The zero value means TLS with the system's
// trusted roots.
type TLS struct {
	// CAFile is the PEM bundle the scheduler's certificate must chain to; "" uses the
	// system's trusted roots.
	CAFile string
	// CertFile is the caller's own certificate chain (PEM), for a scheduler that requires
	// client certificates (mTLS); always with KeyFile. It is read again at every new
	// connection, so a renewed certificate is used without a restart.
	CertFile string
	// KeyFile is the private key (PEM) of CertFile.
	KeyFile string
	// ServerName is the name to check the scheduler's certificate against instead of the host
	// dialled (a certificate for scheduler.internal reached by pod IP, say).
	ServerName string
}

// config builds the crypto/tls configuration, reading the files now so that a missing or
// malformed one is reported by New rather than by the first call.
func (t TLS) config() (*tls.Config, error) {
	config := &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, invalidArgument("cannot read the TLS CA file %s: %v", t.CAFile, unwrapPathError(err))
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, invalidArgument("the TLS CA file %s holds no PEM CERTIFICATE (expected a '-----BEGIN CERTIFICATE-----' block)", t.CAFile)
		}
		config.RootCAs = roots
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		given, missing := "certificate", "key"
		if t.CertFile == "" {
			given, missing = "key", "certificate"
		}
		return nil, invalidArgument("a TLS client %s was given without its %s: mTLS needs both (--tls-cert FILE --tls-key FILE)", given, missing)
	}
	if t.CertFile != "" {
		certificate, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, invalidArgument("cannot use the TLS client certificate %s with key %s: %v", t.CertFile, t.KeyFile, unwrapPathError(err))
		}
		var lastGood = &certificate
		var lock sync.Mutex
		config.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			lock.Lock()
			defer lock.Unlock()
			// Renewed files are picked up at the next handshake; a pair caught half-written
			// (mid-rotation) keeps the last good one in use.
			if renewed, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err == nil {
				lastGood = &renewed
			}
			return lastGood, nil
		}
	}
	return config, nil
}

// unwrapPathError drops the "open FILE:" prefix of an *os.PathError; the message names the file.
func unwrapPathError(err error) error {
	if pathError, ok := err.(*os.PathError); ok {
		return pathError.Err
	}
	return err
}

// tokenProblem says what is wrong with a token, or "" when it can be sent: a header value
// holds visible ASCII only, and a token is one word of it.
func tokenProblem(token string) string {
	if token == "" {
		return "is empty"
	}
	for _, r := range token {
		if r < 0x21 || r > 0x7e {
			return "holds a space, a line break or a character outside visible ASCII; it must hold the token alone"
		}
	}
	return ""
}

// tokenSource is the caller's bearer token, given as it is or read from a file; a file is
// read again whenever it changes (checked with a stat on every call), so a rotated token is
// used from the next call on. It implements credentials.PerRPCCredentials.
type tokenSource struct {
	// origin names where the token came from, for messages: never the token itself.
	origin string
	path   string
	logger Logger

	lock   sync.Mutex
	token  string
	stamp  os.FileInfo
	warned bool
}

func newToken(token, origin string) (*tokenSource, error) {
	token = strings.TrimSpace(token)
	if problem := tokenProblem(token); problem != "" {
		return nil, invalidArgument("%s %s", origin, problem)
	}
	return &tokenSource{origin: origin, token: token}, nil
}

func newTokenFile(path string, logger Logger) (*tokenSource, error) {
	source := &tokenSource{origin: "token file " + path, path: path, logger: logger}
	if err := source.reload(true); err != nil {
		return nil, err
	}
	return source, nil
}

// current is the token to send now, after reading a changed file.
func (s *tokenSource) current() string {
	s.lock.Lock()
	defer s.lock.Unlock()
	if s.path != "" {
		_ = s.reload(false)
	}
	return s.token
}

func (s *tokenSource) reload(initial bool) error {
	info, err := os.Stat(s.path)
	if err == nil && s.stamp != nil && os.SameFile(info, s.stamp) && info.Size() == s.stamp.Size() && info.ModTime().Equal(s.stamp.ModTime()) {
		return nil
	}
	var content []byte
	if err == nil {
		content, err = os.ReadFile(s.path)
	}
	if err != nil {
		if initial {
			return invalidArgument("cannot read token file %s: %v", s.path, unwrapPathError(err))
		}
		s.warnOnce(fmt.Sprintf("cannot read token file %s (%v); still using the token read before", s.path, unwrapPathError(err)))
		return nil
	}
	token := strings.TrimSpace(string(content))
	if problem := tokenProblem(token); problem != "" {
		if initial {
			return invalidArgument("token file %s %s", s.path, problem)
		}
		s.warnOnce(fmt.Sprintf("token file %s %s; still using the token read before", s.path, problem))
		return nil
	}
	if !initial && token != s.token && s.logger != nil {
		s.logger.Printf("switchyard: token file %s changed: using the new token from now on", s.path)
	}
	s.token, s.stamp, s.warned = token, info, false
	return nil
}

func (s *tokenSource) warnOnce(message string) {
	if !s.warned && s.logger != nil {
		s.warned = true
		s.logger.Printf("switchyard: %s", message)
	}
}

// GetRequestMetadata adds the token to every call (credentials.PerRPCCredentials).
func (s *tokenSource) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{AuthorizationMetadataKey: BearerPrefix + s.current()}, nil
}

// RequireTransportSecurity is false: a token may go to a scheduler on loopback, or behind a
// mesh that adds TLS on the way, in clear. New logs a warning for any other address.
func (s *tokenSource) RequireTransportSecurity() bool { return false }

// String names the token's origin, never the token, should it end up in a log line.
func (s *tokenSource) String() string { return "switchyard token (" + s.origin + ")" }
