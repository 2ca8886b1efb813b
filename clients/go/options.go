package switchyard

import (
	"os"
	"time"

	"google.golang.org/grpc"
)

// Defaults of the Options.
const (
	// DefaultTimeout is the deadline of each attempt of a unary call.
	DefaultTimeout = 10 * time.Second
	// DefaultFailoverTimeout is how long a call keeps trying the schedulers after UNAVAILABLE:
	// long enough for a standby to take over (5 s by default) or a scheduler to restart.
	DefaultFailoverTimeout = 30 * time.Second
	// DefaultMaxMessageBytes is the send and receive limit: tasks may carry ~10 MiB payloads,
	// and gRPC's own 4 MiB receive limit would reject them.
	DefaultMaxMessageBytes = 16 * 1024 * 1024
	// DefaultKeepalive is how often a quiet connection is pinged during a call (a watch, say),
	// so a half-open TCP connection is noticed. gRPC-Go enforces at least 10 s.
	DefaultKeepalive = 60 * time.Second
)

// Logger receives the client's few messages: a lost scheduler and the reconnection, a
// rotated token file, a token sent without TLS. *log.Logger satisfies it.
type Logger interface {
	Printf(format string, args ...any)
}

// Option configures a Client (see New).
type Option func(*settings)

// settings is what the Options set; New turns it into a Client.
type settings struct {
	timeout         time.Duration
	failoverTimeout time.Duration
	maxMessageBytes int
	keepalive       time.Duration
	autoKeys        bool
	logger          Logger
	token           *string
	tokenFile       string
	tls             *TLS
	plaintext       bool
	environment     bool
	dialOptions     []grpc.DialOption
}

func defaultSettings() settings {
	return settings{
		timeout:         DefaultTimeout,
		failoverTimeout: DefaultFailoverTimeout,
		maxMessageBytes: DefaultMaxMessageBytes,
		keepalive:       DefaultKeepalive,
		autoKeys:        true,
		environment:     true,
	}
}

// WithTimeout sets the deadline of each attempt of a unary call (DefaultTimeout); 0 leaves
// only the context's. A context deadline that comes first wins.
func WithTimeout(timeout time.Duration) Option {
	return func(s *settings) { s.timeout = timeout }
}

// WithFailoverTimeout sets how long a call keeps trying after UNAVAILABLE
// (DefaultFailoverTimeout): it follows a standby's pointer to the leader, tries the other
// addresses, backs off between rounds. With 0 each address is tried once, with no waiting.
func WithFailoverTimeout(timeout time.Duration) Option {
	return func(s *settings) { s.failoverTimeout = timeout }
}

// WithMaxMessageSize sets the send and receive limit in bytes (DefaultMaxMessageBytes).
func WithMaxMessageSize(bytes int) Option {
	return func(s *settings) { s.maxMessageBytes = bytes }
}

// WithKeepalive sets the keepalive ping interval during calls (DefaultKeepalive). The
// scheduler must permit this rate.
func WithKeepalive(interval time.Duration) Option {
	return func(s *settings) { s.keepalive = interval }
}

// WithoutAutoIdempotencyKeys stops Submit and SubmitBatch from giving a task without an
// idempotency key one of their own. Such a submission is then not retried after a deadline
// passes mid-call, since a retry could create the task twice.
func WithoutAutoIdempotencyKeys() Option {
	return func(s *settings) { s.autoKeys = false }
}

// WithLogger sends the client's messages to logger (none by default).
func WithLogger(logger Logger) Option {
	return func(s *settings) { s.logger = logger }
}

// WithToken sends token as "authorization: Bearer <token>" metadata on every call.
func WithToken(token string) Option {
	return func(s *settings) { s.token = &token }
}

// WithTokenFile sends the token held in the file at path; the file is read again whenever it
// changes, so a rotated token is used from the next call on.
func WithTokenFile(path string) Option {
	return func(s *settings) { s.tokenFile = path }
}

// WithTLS dials the schedulers over TLS (see TLS; TLS{} uses the system's trusted roots).
func WithTLS(tls TLS) Option {
	return func(s *settings) { s.tls = &tls }
}

// WithoutTLS dials in plaintext whatever the SWITCHYARD_TLS_* variables say.
func WithoutTLS() Option {
	return func(s *settings) { s.plaintext = true }
}

// WithoutEnvironment makes New read no SWITCHYARD_* environment variable. By default, with
// no token option it reads SWITCHYARD_TOKEN, else the file SWITCHYARD_TOKEN_FILE names, and
// with no TLS option SWITCHYARD_TLS_CA, SWITCHYARD_TLS_CERT, SWITCHYARD_TLS_KEY and
// SWITCHYARD_TLS_SERVER_NAME (any of them set turns TLS on), as the other clients do.
func WithoutEnvironment() Option {
	return func(s *settings) { s.environment = false }
}

// WithDialOptions adds gRPC dial options to every connection (after the client's own, so
// they win): interceptors, a custom dialer, stats handlers.
func WithDialOptions(options ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOptions = append(s.dialOptions, options...) }
}

// tokenSource is the token the settings (or the environment) name, nil for none.
func (s *settings) tokenSource() (*tokenSource, error) {
	if s.token != nil && s.tokenFile != "" {
		return nil, invalidArgument("give a token or a token file, not both")
	}
	switch {
	case s.token != nil:
		return newToken(*s.token, "the token given")
	case s.tokenFile != "":
		return newTokenFile(s.tokenFile, s.logger)
	case !s.environment:
		return nil, nil
	case os.Getenv(TokenEnv) != "":
		return newToken(os.Getenv(TokenEnv), "$"+TokenEnv)
	case os.Getenv(TokenFileEnv) != "":
		return newTokenFile(os.Getenv(TokenFileEnv), s.logger)
	}
	return nil, nil
}

// tlsSettings is the TLS to dial with, nil for plaintext.
func (s *settings) tlsSettings() (*TLS, error) {
	if s.plaintext {
		return nil, nil
	}
	if s.tls != nil || !s.environment {
		return s.tls, nil
	}
	fromEnvironment := TLS{
		CAFile:     os.Getenv(TLSCAEnv),
		CertFile:   os.Getenv(TLSCertEnv),
		KeyFile:    os.Getenv(TLSKeyEnv),
		ServerName: os.Getenv(TLSServerNameEnv),
	}
	if fromEnvironment == (TLS{ServerName: fromEnvironment.ServerName}) {
		if fromEnvironment.ServerName != "" {
			return nil, invalidArgument("$%s was given without TLS: set $%s too (or use WithTLS)", TLSServerNameEnv, TLSCAEnv)
		}
		return nil, nil
	}
	return &fromEnvironment, nil
}
