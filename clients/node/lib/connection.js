'use strict';
/**
 * All of the client's gRPC plumbing: channels to one or several schedulers, credentials (TLS,
 * mTLS, bearer tokens), deadlines, and following the leader after UNAVAILABLE.
 *
 * Several schedulers share one Redis; one leads and the others answer UNAVAILABLE with the
 * leader's address in the `switchyard-leader` trailing metadata. A call goes first to the address
 * that answered last. After UNAVAILABLE (and, for calls safe to repeat, DEADLINE_EXCEEDED) a
 * Failover walks the addresses: the leader a standby named first, then the next untried address,
 * then a named leader outside the list; when a whole round failed it backs off (doubling from
 * 100 ms to 2 s, with jitter) and starts another, until `failoverTimeoutMs` has passed. Until the
 * client has reached a scheduler once it tries each address once only, so a wrong address is
 * reported at once rather than waited for. This is the Python client's behaviour
 * (clients/python/switchyard/_connection.py), kept in step on purpose.
 */

const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');

const { contract } = require('./protos');
const { InvalidArgument, SwitchyardError, fromServiceError } = require('./errors');
const { version } = require('../package.json');

const DEFAULT_SCHEDULER_PORT = 50051;
const DEFAULT_TARGET = `127.0.0.1:${DEFAULT_SCHEDULER_PORT}`;
/** Trailing metadata key in which a standby names the leader (switchyard.wire.LEADER_METADATA_KEY). */
const LEADER_METADATA_KEY = 'switchyard-leader';
/** Environment variable holding a bearer token when no `token`/`tokenFile` option is given. */
const TOKEN_ENV = 'SWITCHYARD_TOKEN';

const DEFAULT_TIMEOUT_MS = 10_000;
/** Long enough for a standby to take over (5 s lease by default) or a scheduler to restart. */
const DEFAULT_FAILOVER_TIMEOUT_MS = 30_000;
const RETRY_FIRST_DELAY_MS = 100;
const RETRY_MAX_DELAY_MS = 2_000;

const TARGET_SCHEMES = ['dns:', 'unix:', 'unix-abstract:', 'ipv4:', 'ipv6:', 'vsock:'];

const SILENT = () => {};
/** Losing the scheduler is worth a line on stderr by default, as the Python client's warning is. */
const DEFAULT_LOGGER = Object.freeze({
  warn: (message) => console.warn(`switchyard: ${message}`),
  info: SILENT,
  debug: SILENT,
});

/** `address` with the scheduler's port added when it names a host only ("sched" → "sched:50051"). */
function withDefaultPort(address) {
  if (TARGET_SCHEMES.some((scheme) => address.startsWith(scheme)) || address.includes('/')) return address;
  if (address.startsWith('[')) return address.includes(']:') ? address : `${address}:${DEFAULT_SCHEDULER_PORT}`;
  if ((address.match(/:/g) || []).length > 1) return `[${address}]:${DEFAULT_SCHEDULER_PORT}`; // bare IPv6
  return address.includes(':') ? address : `${address}:${DEFAULT_SCHEDULER_PORT}`;
}

/**
 * The scheduler addresses in `target`: "HOST:PORT", several as "HOST:PORT,HOST:PORT", or an
 * array of such strings. Blanks and repeats are dropped; the order is the order they are tried.
 */
function parseAddresses(target) {
  const parts = Array.isArray(target) ? target : [target];
  const addresses = [];
  for (const part of parts) {
    for (const piece of String(part ?? '').split(',')) {
      const trimmed = piece.trim();
      const address = trimmed ? withDefaultPort(trimmed) : '';
      if (address && !addresses.includes(address)) addresses.push(address);
    }
  }
  if (addresses.length === 0) {
    throw new InvalidArgument(
      `no scheduler address in ${JSON.stringify(target)}: give HOST:PORT, or several as HOST:PORT,HOST:PORT`,
    );
  }
  return addresses;
}

/** The leader a standby named in a failed call's trailing metadata, or null. */
function leaderHint(error) {
  const metadata = error && error.metadata;
  if (!metadata || typeof metadata.get !== 'function') return null;
  const [value] = metadata.get(LEADER_METADATA_KEY);
  const text = value === undefined ? '' : String(value).trim();
  return text || null;
}

/** Backoff before round `round` (0-based): doubling to a cap, half fixed and half random. */
function retryDelayMs(round) {
  const ceiling = Math.min(RETRY_MAX_DELAY_MS, RETRY_FIRST_DELAY_MS * 2 ** round);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function readPem(value, what) {
  if (value === undefined || value === null || value === '') return null;
  if (Buffer.isBuffer(value)) return value;
  try {
    return fs.readFileSync(String(value));
  } catch (error) {
    throw new InvalidArgument(`cannot read the ${what} file ${value}: ${error.message}`);
  }
}

function isLoopback(address) {
  return /^(127\.|localhost[:]|\[::1\]|unix:|unix-abstract:)/.test(address);
}

/**
 * Where the bearer token comes from: the `token` option, the `tokenFile` option (read again
 * whenever the file changes, so a rotated secret is picked up without a restart) or the
 * SWITCHYARD_TOKEN environment variable; none of them means no token.
 */
class TokenSource {
  constructor({ token, tokenFile, env = process.env }) {
    if (token !== undefined && token !== null && tokenFile) {
      throw new InvalidArgument('give token or tokenFile, not both');
    }
    this.file = tokenFile ? String(tokenFile) : null;
    this.fixed = null;
    this.cached = null;
    this.cachedStamp = null;
    if (token !== undefined && token !== null) this.fixed = TokenSource.check(String(token), 'the token option');
    else if (!this.file && env[TOKEN_ENV]) this.fixed = TokenSource.check(env[TOKEN_ENV], `$${TOKEN_ENV}`);
    if (this.file) this.current(); // a missing or empty file is reported now, not at the first call
  }

  static check(token, where) {
    const trimmed = token.trim();
    if (!trimmed) throw new InvalidArgument(`${where} is empty; give a token or leave it out`);
    if (/\s/.test(trimmed)) throw new InvalidArgument(`${where} holds whitespace inside the token; check its contents`);
    return trimmed;
  }

  /** The token to send now, or null. */
  current() {
    if (!this.file) return this.fixed;
    let stat;
    try {
      stat = fs.statSync(this.file);
    } catch (error) {
      throw new InvalidArgument(`cannot read the token file ${this.file}: ${error.message}`);
    }
    const stamp = `${stat.mtimeMs}:${stat.size}`;
    if (stamp !== this.cachedStamp) {
      this.cached = TokenSource.check(fs.readFileSync(this.file, 'utf8'), `the token file ${this.file}`);
      this.cachedStamp = stamp;
    }
    return this.cached;
  }
}

function channelCredentials(options) {
  const tls = Boolean(options.tls || options.tlsCa || options.tlsCert || options.tlsKey);
  if (!tls) return { credentials: grpc.credentials.createInsecure(), tls: false };
  if (Boolean(options.tlsCert) !== Boolean(options.tlsKey)) {
    throw new InvalidArgument('tlsCert and tlsKey go together: give both for mTLS, or neither');
  }
  const credentials = grpc.credentials.createSsl(
    readPem(options.tlsCa, 'TLS CA certificate (tlsCa)'),
    readPem(options.tlsKey, 'TLS client key (tlsKey)'),
    readPem(options.tlsCert, 'TLS client certificate (tlsCert)'),
  );
  return { credentials, tls: true };
}

function channelOptions(options) {
  const maxBytes = (options.maxMessageMb ?? 16) * 1024 * 1024;
  const channel = {
    // Tasks may carry ~10 MiB payloads; gRPC's default 4 MiB receive cap would refuse them.
    'grpc.max_send_message_length': maxBytes,
    'grpc.max_receive_message_length': maxBytes,
    // A half-open TCP connection can look alive for hours; pings during calls (watch streams
    // especially) find out. The scheduler permits this rate.
    'grpc.keepalive_time_ms': options.keepaliveTimeMs ?? 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
    'grpc.keepalive_permit_without_calls': 0,
    // Reconnect about as fast as the failover loop retries, not after grpc-js's default 1-120 s.
    'grpc.initial_reconnect_backoff_ms': RETRY_FIRST_DELAY_MS,
    'grpc.max_reconnect_backoff_ms': RETRY_MAX_DELAY_MS,
    'grpc.primary_user_agent': `switchyard-node/${version}`,
  };
  if (options.tlsServerName) {
    channel['grpc.ssl_target_name_override'] = options.tlsServerName;
    channel['grpc.default_authority'] = options.tlsServerName;
  }
  if (options.interceptors) channel.interceptors = options.interceptors;
  return channel;
}

const CONNECTION_OPTIONS = new Set([
  'timeoutMs', 'failoverTimeoutMs', 'maxMessageMb', 'keepaliveTimeMs', 'autoIdempotencyKeys',
  'tls', 'tlsCa', 'tlsCert', 'tlsKey', 'tlsServerName', 'token', 'tokenFile', 'logger', 'interceptors', 'env',
]);

/**
 * Channels to one or several schedulers and the leader among them; SchedulerClient's base.
 * See index.d.ts (ClientOptions) for every option.
 */
class Connection {
  constructor(target = DEFAULT_TARGET, options = {}) {
    for (const key of Object.keys(options)) {
      if (!CONNECTION_OPTIONS.has(key)) {
        throw new InvalidArgument(`unknown client option ${JSON.stringify(key)}; valid: ${[...CONNECTION_OPTIONS].join(', ')}`);
      }
    }
    const failoverTimeoutMs = options.failoverTimeoutMs ?? DEFAULT_FAILOVER_TIMEOUT_MS;
    if (!(failoverTimeoutMs >= 0)) throw new InvalidArgument(`failoverTimeoutMs must be >= 0; got ${failoverTimeoutMs}`);
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new InvalidArgument(`timeoutMs must be > 0; got ${timeoutMs}`);
    /** Every scheduler address given, in the order they are tried. */
    this.addresses = parseAddresses(target);
    /** The addresses as one comma-separated string. */
    this.target = this.addresses.join(',');
    this.timeoutMs = timeoutMs;
    this.failoverTimeoutMs = failoverTimeoutMs;
    this.autoIdempotencyKeys = options.autoIdempotencyKeys ?? true;
    this.logger = { ...DEFAULT_LOGGER, ...(options.logger || {}) };
    const { credentials, tls } = channelCredentials(options);
    this._credentials = credentials;
    this._channelOptions = channelOptions(options);
    this._tokens = new TokenSource({ token: options.token, tokenFile: options.tokenFile, env: options.env || process.env });
    this._stubs = new Map();
    this._current = this.addresses[0];
    this._reached = false;
    this._closed = false;
    if (!tls && this._tokens.current() && !this.addresses.every(isLoopback)) {
      this.logger.warn('sending a bearer token without TLS to a non-loopback scheduler; give tlsCa (or tls: true)');
    }
  }

  /** Where the next call goes first: the address that answered last (the leader). */
  get currentAddress() {
    return this._current;
  }

  /** Close every channel; calls after this fail. */
  close() {
    this._closed = true;
    for (const stub of this._stubs.values()) stub.close();
    this._stubs.clear();
  }

  // --- plumbing for SchedulerClient ----------------------------------------------------------

  _stubFor(address) {
    if (this._closed) throw new SwitchyardError('the client is closed');
    let stub = this._stubs.get(address);
    if (!stub) {
      // A copy: grpc-js deletes `interceptors` from the options object it is given.
      stub = new (schedulerStubClass())(address, this._credentials, { ...this._channelOptions });
      this._stubs.set(address, stub);
    }
    return stub;
  }

  _metadata() {
    const metadata = new grpc.Metadata();
    const token = this._tokens.current();
    if (token) metadata.set('authorization', `Bearer ${token}`);
    return metadata;
  }

  _answered(address) {
    this._current = address;
    this._reached = true;
  }

  _failover({ announceAtOnce = false } = {}) {
    return new Failover(this, { announceAtOnce });
  }

  /**
   * One unary call of the Scheduler method `rpc`, following the leader. Each attempt has the
   * deadline `timeoutMs` (the client's by default). UNAVAILABLE is retried as Failover says;
   * DEADLINE_EXCEEDED only when `repeatable` (the call has the same effect however often it
   * runs). Any other failure throws its typed error at once.
   */
  async _call(rpc, request, { timeoutMs, repeatable = true } = {}) {
    const perAttemptMs = timeoutMs ?? this.timeoutMs;
    let address = this._current;
    let failover = null;
    for (;;) {
      let response;
      try {
        response = await this._attempt(address, rpc, request, perAttemptMs);
      } catch (raw) {
        if (raw instanceof SwitchyardError) throw raw;
        const error = fromServiceError(raw);
        if (!retryable(error, repeatable)) {
          this._reached = true; // a scheduler answered, even if with an error
          throw error;
        }
        failover = failover || this._failover();
        address = await failover.nextAddress(address, error, leaderHint(raw));
        continue;
      }
      this._answered(address);
      if (failover) failover.recovered(address);
      return response;
    }
  }

  _attempt(address, rpc, request, timeoutMs) {
    const stub = this._stubFor(address);
    const metadata = this._metadata();
    return new Promise((resolve, reject) => {
      stub[rpc](request, metadata, { deadline: Date.now() + timeoutMs }, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
  }
}

let SchedulerStub = null;

/** The grpc-js client class of the Scheduler service, made once from the loaded contract. */
function schedulerStubClass() {
  if (SchedulerStub === null) SchedulerStub = grpc.makeGenericClientConstructor(contract().service, 'Scheduler');
  return SchedulerStub;
}

function retryable(error, repeatable) {
  if (error.statusCode === grpc.status.UNAVAILABLE) return true;
  return repeatable && error.statusCode === grpc.status.DEADLINE_EXCEEDED;
}

/**
 * One logical call's way through the scheduler addresses after a failure (see the module
 * comment). nextAddress() says where to try next, sleeping between rounds, and throws when the
 * connection's failoverTimeoutMs has passed since the failure.
 */
class Failover {
  constructor(connection, { announceAtOnce = false } = {}) {
    this.connection = connection;
    this.deadline = Date.now() + connection.failoverTimeoutMs;
    this.announceAtOnce = announceAtOnce;
    this.tried = [];
    this.everTried = [];
    this.rounds = 0;
    this.attempts = 0;
    this.announced = false;
  }

  async nextAddress(failed, error, hint) {
    const connection = this.connection;
    this.attempts += 1;
    for (const address of [failed, hint]) {
      if (address && !this.everTried.includes(address)) this.everTried.push(address);
    }
    if (!this.tried.includes(failed)) this.tried.push(failed);
    if (hint) connection._reached = true; // a standby answered: the schedulers are there
    connection.logger.debug(`scheduler at ${failed}: ${error.message}${hint ? ` (leader: ${hint})` : ''}`);
    if (this.announceAtOnce && !this.announced) this._announce(failed, error);
    const patient = connection._reached && connection.failoverTimeoutMs > 0;
    const address = this._untried(failed, hint);
    if (address !== null && (Date.now() < this.deadline || !patient)) return address;
    // Every address failed in this round (or the time is up).
    const remaining = this.deadline - Date.now();
    if (!patient || remaining <= 0) throw this._gaveUp(failed, error, patient);
    if (!this.announced) this._announce(failed, error);
    await sleep(Math.min(retryDelayMs(this.rounds), remaining));
    this.rounds += 1;
    this.tried = [];
    return this._untried(failed, hint);
  }

  /** `address` answered after the failure; say so if the failure was announced. */
  recovered(address) {
    if (this.announced) this.connection.logger.info(`reconnected to ${address}`);
  }

  _announce(address, error) {
    this.announced = true;
    this.connection.logger.warn(`lost the scheduler at ${address} (${error.code}: ${error.message}); reconnecting...`);
  }

  _untried(failed, hint) {
    const { addresses } = this.connection;
    if (hint && addresses.includes(hint) && !this.tried.includes(hint)) return hint;
    const start = addresses.includes(failed) ? addresses.indexOf(failed) + 1 : 0;
    for (let offset = 0; offset < addresses.length; offset += 1) {
      const address = addresses[(start + offset) % addresses.length];
      if (!this.tried.includes(address)) return address;
    }
    // A leader the client was not told about: maybe an address only its peers know.
    if (hint && !this.tried.includes(hint)) return hint;
    return null;
  }

  _gaveUp(failed, error, patient) {
    if (this.attempts === 1) return error;
    const within = patient ? ` within ${this.connection.failoverTimeoutMs} ms` : '';
    const message =
      `no scheduler at ${this.everTried.join(', ')} could serve the call${within}; ` +
      `the last, ${failed}, answered: ${error.message}`;
    return new error.constructor(message, { statusCode: error.statusCode, metadata: error.metadata });
  }
}

module.exports = {
  Connection,
  Failover,
  DEFAULT_TARGET,
  DEFAULT_SCHEDULER_PORT,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_FAILOVER_TIMEOUT_MS,
  LEADER_METADATA_KEY,
  TOKEN_ENV,
  leaderHint,
  parseAddresses,
  withDefaultPort,
};
