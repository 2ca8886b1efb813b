package switchyard

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	pb "github.com/switchyard/switchyard/clients/go/switchyard/v1"
)

// LeaderMetadataKey is the trailing metadata of an UNAVAILABLE answer from a scheduler that
// does not lead: the leader's address (HOST:PORT). The client follows it.
const LeaderMetadataKey = "switchyard-leader"

// Backoff between rounds in which every address failed: doubling from retryFirstDelay up to
// retryMaxDelay, with jitter.
const (
	retryFirstDelay = 100 * time.Millisecond
	retryMaxDelay   = 2 * time.Second
)

// Client is a connection to a Switchyard scheduler, or to several that share one Redis. It is
// safe for concurrent use; Close it when done.
//
// Several schedulers: one leads, the others answer UNAVAILABLE and name the leader in the
// "switchyard-leader" trailing metadata. Every call finds the leader and follows it on
// failover, for up to the failover timeout (backing off between rounds), and later calls go
// straight to the address that answered. Only UNAVAILABLE is retried, plus DEADLINE_EXCEEDED
// of an attempt for calls that are safe to repeat (reads, submissions with an idempotency
// key); any other error is returned at once. Until the client has reached a scheduler once,
// a call tries each address only once, so a wrong address is reported at once rather than
// waited for.
type Client struct {
	addresses []string
	settings  settings
	dial      []grpc.DialOption
	token     *tokenSource

	lock    sync.Mutex
	conns   map[string]*grpc.ClientConn
	current string
	reached bool
	closed  bool
}

// New returns a client for target: "HOST:PORT", or several schedulers as
// "HOST:PORT,HOST:PORT" (a host alone gets DefaultPort; any gRPC target string works as one
// address). It dials lazily: New fails only for a bad target or unusable credentials (a TLS
// file that cannot be read, say), with an ErrInvalidArgument saying which.
func New(target string, options ...Option) (*Client, error) {
	s := defaultSettings()
	for _, option := range options {
		option(&s)
	}
	if s.failoverTimeout < 0 {
		return nil, invalidArgument("the failover timeout must be >= 0; got %v", s.failoverTimeout)
	}
	if s.maxMessageBytes <= 0 {
		return nil, invalidArgument("the maximum message size must be > 0 bytes; got %d", s.maxMessageBytes)
	}
	addresses, err := ParseAddresses(target)
	if err != nil {
		return nil, err
	}
	token, err := s.tokenSource()
	if err != nil {
		return nil, err
	}
	tlsSettings, err := s.tlsSettings()
	if err != nil {
		return nil, err
	}
	dial := []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(s.maxMessageBytes), grpc.MaxCallSendMsgSize(s.maxMessageBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: s.keepalive, Timeout: 20 * time.Second}),
	}
	if tlsSettings != nil {
		tlsConfig, err := tlsSettings.config()
		if err != nil {
			return nil, err
		}
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	} else {
		dial = append(dial, grpc.WithInsecure())
	}
	if token != nil {
		dial = append(dial, grpc.WithPerRPCCredentials(token))
		if tlsSettings == nil && s.logger != nil {
			for _, address := range addresses {
				if !isLoopback(address) {
					s.logger.Printf("switchyard: sending %s to %s without TLS: anyone on the network path can read it; "+
						"give a TLS CA (WithTLS / $%s) unless a mesh encrypts the connection", token.origin, address, TLSCAEnv)
				}
			}
		}
	}
	dial = append(dial, s.dialOptions...)
	return &Client{
		addresses: addresses,
		settings:  s,
		dial:      dial,
		token:     token,
		conns:     map[string]*grpc.ClientConn{},
		current:   addresses[0],
	}, nil
}

// Addresses are the scheduler addresses, in the order they are tried.
func (c *Client) Addresses() []string { return append([]string(nil), c.addresses...) }

// CurrentAddress is where the next call goes first: the address that answered last (the leader).
func (c *Client) CurrentAddress() string {
	c.lock.Lock()
	defer c.lock.Unlock()
	return c.current
}

// Close closes every connection; calls after it fail with ErrCanceled.
func (c *Client) Close() error {
	c.lock.Lock()
	conns := c.conns
	c.conns, c.closed = map[string]*grpc.ClientConn{}, true
	c.lock.Unlock()
	var first error
	for _, conn := range conns {
		if err := conn.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// stub is the Scheduler stub for address; its connection opens on first use.
func (c *Client) stub(address string) (pb.SchedulerClient, error) {
	c.lock.Lock()
	defer c.lock.Unlock()
	if c.closed {
		return nil, &Error{Code: codes.Canceled, Message: "the client is closed"}
	}
	conn, ok := c.conns[address]
	if !ok {
		var err error
		conn, err = grpc.Dial(address, c.dial...)
		if err != nil {
			return nil, invalidArgument("cannot dial %s: %v", address, err)
		}
		c.conns[address] = conn
	}
	return pb.NewSchedulerClient(conn), nil
}

// answered records that address served a call: it leads, so later calls start there.
func (c *Client) answered(address string) {
	c.lock.Lock()
	c.current, c.reached = address, true
	c.lock.Unlock()
}

func (c *Client) markReached() {
	c.lock.Lock()
	c.reached = true
	c.lock.Unlock()
}

func (c *Client) wasReached() bool {
	c.lock.Lock()
	defer c.lock.Unlock()
	return c.reached
}

func (c *Client) logf(format string, args ...any) {
	if c.settings.logger != nil {
		c.settings.logger.Printf("switchyard: "+format, args...)
	}
}

// unary runs one unary call of the Scheduler service, following the leader: invoke makes the
// call on a stub with the call options given. Each attempt has the client's timeout.
// UNAVAILABLE is retried as failover.next says; DEADLINE_EXCEEDED of an attempt only when
// repeatable (the call has the same effect however often it runs). Other errors are returned
// at once, as *Error.
func unary[Response any](ctx context.Context, c *Client, repeatable bool,
	invoke func(context.Context, pb.SchedulerClient, ...grpc.CallOption) (Response, error)) (Response, error) {
	var none Response
	address := c.CurrentAddress()
	var fo *failover
	for {
		stub, err := c.stub(address)
		if err != nil {
			return none, err
		}
		attemptCtx, cancel := ctx, context.CancelFunc(func() {})
		if c.settings.timeout > 0 {
			attemptCtx, cancel = context.WithTimeout(ctx, c.settings.timeout)
		}
		var trailer metadata.MD
		response, err := invoke(attemptCtx, stub, grpc.Trailer(&trailer))
		cancel()
		if err == nil {
			c.answered(address)
			if fo != nil {
				fo.recovered(address)
			}
			return response, nil
		}
		if ctx.Err() != nil { // the caller's context ended: its error, not the attempt's
			return none, fromError(ctx.Err())
		}
		failure := fromError(err)
		if !retryable(failure.Code, repeatable) {
			c.markReached() // a scheduler answered, even if with an error
			return none, failure
		}
		if fo == nil {
			fo = c.newFailover(false)
		}
		if address, err = fo.next(ctx, address, failure, leaderHint(trailer)); err != nil {
			return none, err
		}
	}
}

func retryable(code codes.Code, repeatable bool) bool {
	return code == codes.Unavailable || (repeatable && code == codes.DeadlineExceeded)
}

// leaderHint is the leader's address a standby named in its trailing metadata, "" if none.
func leaderHint(trailer metadata.MD) string {
	for _, value := range trailer.Get(LeaderMetadataKey) {
		if hint := strings.TrimSpace(value); hint != "" {
			return hint
		}
	}
	return ""
}

// failover is one logical call's way through the scheduler addresses after a failure.
//
// next says where to try next: the leader a standby named (when it is one of the client's
// addresses), else the next address not yet tried in this round; a leader outside the list
// comes last. When every address of a round has failed it waits (exponential backoff with
// jitter) and starts a new round, until the failover timeout has passed since the failure;
// then it returns the error. A client that never reached a scheduler gets one round.
type failover struct {
	client         *Client
	deadline       time.Time
	announceAtOnce bool
	announced      bool
	tried          []string // addresses tried in the current round
	everTried      []string
	rounds         int
	attempts       int
}

func (c *Client) newFailover(announceAtOnce bool) *failover {
	return &failover{client: c, deadline: time.Now().Add(c.settings.failoverTimeout), announceAtOnce: announceAtOnce}
}

// next is where to try after failed answered failure (naming hint as the leader). It may wait
// between rounds; it returns an error when the time is up: failure itself after a single
// attempt, otherwise an error of the same code that names every address tried.
func (f *failover) next(ctx context.Context, failed string, failure *Error, hint string) (string, error) {
	f.attempts++
	for _, address := range []string{failed, hint} {
		if address != "" && !contains(f.everTried, address) {
			f.everTried = append(f.everTried, address)
		}
	}
	if !contains(f.tried, failed) {
		f.tried = append(f.tried, failed)
	}
	if hint != "" {
		f.client.markReached() // a standby answered: the schedulers are there
	}
	if f.announceAtOnce && !f.announced {
		f.announce(failed, failure)
	}
	patient := f.client.wasReached() && f.client.settings.failoverTimeout > 0
	if address := f.untried(failed, hint); address != "" && (time.Now().Before(f.deadline) || !patient) {
		return address, nil
	}
	// Every address failed in this round (or the time is up).
	remaining := time.Until(f.deadline)
	if !patient || remaining <= 0 {
		return "", f.gaveUp(failed, failure, patient)
	}
	if !f.announced {
		f.announce(failed, failure)
	}
	delay := retryDelay(f.rounds)
	if delay > remaining {
		delay = remaining
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return "", fromError(ctx.Err())
	case <-timer.C:
	}
	f.rounds++
	f.tried = f.tried[:0]
	return f.untried(failed, hint), nil // with nothing tried, some address is untried
}

// recovered says so when address answered after an announced failure.
func (f *failover) recovered(address string) {
	if f.announced {
		f.client.logf("reconnected to %s", address)
	}
}

func (f *failover) announce(address string, failure *Error) {
	f.announced = true
	f.client.logf("lost the scheduler at %s (%v); reconnecting...", address, failure)
}

func (f *failover) untried(failed, hint string) string {
	addresses := f.client.addresses
	if hint != "" && contains(addresses, hint) && !contains(f.tried, hint) {
		return hint
	}
	start := 0
	for i, address := range addresses {
		if address == failed {
			start = i + 1
		}
	}
	for offset := range addresses {
		address := addresses[(start+offset)%len(addresses)]
		if !contains(f.tried, address) {
			return address
		}
	}
	// A leader the client was not told about: maybe an address only its peers can reach.
	if hint != "" && !contains(f.tried, hint) {
		return hint
	}
	return ""
}

func (f *failover) gaveUp(failed string, failure *Error, patient bool) *Error {
	if f.attempts == 1 {
		return failure
	}
	within := ""
	if patient {
		within = fmt.Sprintf(" within %v", f.client.settings.failoverTimeout)
	}
	return &Error{
		Code: failure.Code,
		Message: fmt.Sprintf("no scheduler at %s could serve the call%s; the last, %s, answered: %s",
			strings.Join(f.everTried, ", "), within, failed, failure.Message),
		cause: failure,
	}
}

func contains(list []string, wanted string) bool {
	for _, item := range list {
		if item == wanted {
			return true
		}
	}
	return false
}

var (
	jitterLock sync.Mutex
	// jitter is seeded per process, so that many clients losing one scheduler do not return in step.
	jitter = rand.New(rand.NewSource(time.Now().UnixNano()))
)

// retryDelay is the backoff before round (0-based): doubling up to a cap, with "equal jitter"
// (half fixed, half random).
func retryDelay(round int) time.Duration {
	ceiling := retryMaxDelay
	if round < 8 {
		if doubled := retryFirstDelay << round; doubled < ceiling {
			ceiling = doubled
		}
	}
	jitterLock.Lock()
	defer jitterLock.Unlock()
	return ceiling/2 + time.Duration(jitter.Int63n(int64(ceiling/2)+1))
}
