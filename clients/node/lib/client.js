'use strict';
/**
 * SchedulerClient: the public face of the Node client. The task calls live here; the gRPC
 * plumbing (credentials, deadlines, following the leader) in connection.js; the shapes it returns
 * in convert.js and index.d.ts.
 *
 *   const client = new SchedulerClient('10.0.0.4:50051,10.0.0.5:50051', { tlsCa: 'ca.pem' });
 *   const { taskId } = await client.submit('media.transcribe', { kwargs: { path: 'a.mp3' }, contentType: 'audio' });
 *   for await (const task of client.watch(taskId)) console.log(task.state, task.progress);
 */

const crypto = require('node:crypto');
const { status: Status } = require('@grpc/grpc-js');

const { Connection, Failover, leaderHint } = require('./connection');
const { fromWire, toListValue, toStruct } = require('./convert');
const { enumValues, messageFields, PACKAGE } = require('./protos');
const {
  Cancelled,
  DeadlineExceeded,
  InvalidArgument,
  SwitchyardError,
  Unavailable,
  fromServiceError,
} = require('./errors');

/** Start of the idempotency keys the client makes up for submissions that have none. */
const AUTO_IDEMPOTENCY_KEY_PREFIX = 'switchyard-auto-';

/** Task states after which nothing changes any more. */
const TERMINAL_STATES = Object.freeze([
  'TASK_STATE_SUCCEEDED',
  'TASK_STATE_FAILED',
  'TASK_STATE_DEAD_LETTERED',
  'TASK_STATE_CANCELLED',
]);

const MAX_PRIORITY = 10;
const TASK = `${PACKAGE}.Task`;
const SUBMIT_REQUEST = `${PACKAGE}.SubmitTaskRequest`;

/** True when `state` (a Task's state, e.g. "TASK_STATE_SUCCEEDED") is terminal. */
function isTerminal(state) {
  return TERMINAL_STATES.includes(state);
}

/** What makes a task's new version news to a watcher (the scheduler's own rule). */
function changeKey(task) {
  return JSON.stringify([task.state, task.attempt, task.progress, task.progressMessage, task.workerId]);
}

/**
 * The value of enum `enumName` that `given` names: a full name ("GPU_REQUIREMENT_REQUIRED"),
 * the short form ("required"), or a number. InvalidArgument listing the short forms otherwise.
 */
function enumValue(enumName, prefix, given, what) {
  const values = enumValues(`${PACKAGE}.${enumName}`);
  const shortNames = values.map((value) => value.name.slice(prefix.length).toLowerCase());
  if (typeof given === 'number' && values.some((value) => value.number === given)) return given;
  if (typeof given === 'string') {
    const upper = given.trim().toUpperCase();
    const match = values.find((value) => value.name === upper || value.name === prefix + upper);
    if (match) return match.name;
  }
  throw new InvalidArgument(`${what} must be one of ${shortNames.join(', ')}; got ${JSON.stringify(given)}`);
}

function wholeNumber(value, what, lowest, highest, wording) {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < lowest || value > highest) {
    throw new InvalidArgument(`${what} ${wording}; got ${JSON.stringify(value)}`);
  }
  return value;
}

function seconds(value, what) {
  if (value === undefined || value === null) return 0;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new InvalidArgument(`${what} must be a finite number of seconds >= 0; got ${JSON.stringify(value)}`);
  }
  return value;
}

function stringMap(value, what) {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new InvalidArgument(`${what} must be an object of strings`);
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') {
      throw new InvalidArgument(`${what}.${key} must be a string; got ${JSON.stringify(entry)}`);
    }
  }
  return { ...value };
}

/** Submission options: the SubmitTaskRequest fields by their camelCase names (any the contract has). */
function submitOptionNames() {
  return new Set(messageFields(SUBMIT_REQUEST).map((field) => field.name).filter((name) => name !== 'taskName'));
}

/**
 * The SubmitTaskRequest for `taskName` with `options`, checked client-side (InvalidArgument
 * before any call): arguments in one form only, known enum spellings, priority 0-10, whole
 * non-negative numbers, time limits in order, string labels, no unknown options.
 *
 * `args` (an array) and `kwargs` (an object) go as structured values (ListValue/Struct); the
 * scheduler stores them as JSON text, integers as integers. `argsJson`/`kwargsJson` pass JSON
 * text through unchanged: use them for integers beyond 2^53, which a structured number (a
 * double) cannot hold exactly.
 */
function buildSubmitRequest(taskName, options = {}) {
  if (typeof taskName !== 'string' || !taskName.trim()) {
    throw new InvalidArgument(`the task name must be a non-empty string; got ${JSON.stringify(taskName)}`);
  }
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new InvalidArgument('submit options must be an object, e.g. { kwargs: { x: 1 }, contentType: "text" }');
  }
  const known = submitOptionNames();
  for (const key of Object.keys(options)) {
    if (!known.has(key)) {
      throw new InvalidArgument(`unknown submit option ${JSON.stringify(key)}; valid: ${[...known].sort().join(', ')}`);
    }
  }
  const { args, kwargs, argsJson, kwargsJson } = options;
  const structured = (args !== undefined && args !== null) || (kwargs !== undefined && kwargs !== null);
  const text = (argsJson !== undefined && argsJson !== null) || (kwargsJson !== undefined && kwargsJson !== null);
  if (structured && text) {
    throw new InvalidArgument(
      'give args/kwargs (values) or argsJson/kwargsJson (JSON text), not a mix: one form per request',
    );
  }
  for (const [name, value] of [['argsJson', argsJson], ['kwargsJson', kwargsJson]]) {
    if (value !== undefined && value !== null && typeof value !== 'string') {
      throw new InvalidArgument(`${name} must be JSON text (a string); pass values as ${name.replace('Json', '')}`);
    }
  }
  if (typeof args === 'string') {
    throw new InvalidArgument('args must be an array of arguments, not a string; use argsJson for JSON text');
  }
  const soft = seconds(options.softTimeLimitSeconds, 'softTimeLimitSeconds');
  const hard = seconds(options.hardTimeLimitSeconds, 'hardTimeLimitSeconds');
  if (hard && soft > hard) {
    throw new InvalidArgument(`softTimeLimitSeconds (${soft} s) must not exceed hardTimeLimitSeconds (${hard} s)`);
  }
  const request = {
    ...options,
    taskName,
    gpu: enumValue('GpuRequirement', 'GPU_REQUIREMENT_', options.gpu ?? 'unspecified', 'gpu'),
    priority: wholeNumber(options.priority ?? 0, 'priority', 0, MAX_PRIORITY,
      `must be 0 (the scheduler decides) or 1-${MAX_PRIORITY}`),
    gpuMemoryMb: wholeNumber(options.gpuMemoryMb ?? 0, 'gpuMemoryMb', 0, Number.MAX_SAFE_INTEGER,
      'must be a whole number of MiB >= 0'),
    batchSize: wholeNumber(options.batchSize ?? 0, 'batchSize', 0, 2 ** 32 - 1, 'must be a whole number >= 0'),
    softTimeLimitSeconds: soft,
    hardTimeLimitSeconds: hard,
    labels: stringMap(options.labels, 'labels'),
    preferredLabels: stringMap(options.preferredLabels, 'preferredLabels'),
  };
  if ('serializer' in options) {
    request.serializer = enumValue('Serializer', 'SERIALIZER_', options.serializer ?? 'unspecified', 'serializer');
  }
  delete request.args;
  delete request.kwargs;
  if (args !== undefined && args !== null && args.length !== 0) request.args = toListValue(args, 'args');
  if (kwargs !== undefined && kwargs !== null) {
    const struct = toStruct(kwargs, 'kwargs');
    if (Object.keys(struct.fields).length) request.kwargs = struct;
  }
  return request;
}

/**
 * A connection to a Switchyard scheduler, or to several that share one Redis (see
 * connection.js for how it follows the leader). Every method returns a Promise (watch: an async
 * iterator) of plain objects typed in index.d.ts; failures throw the typed errors of errors.js.
 */
class SchedulerClient extends Connection {
  // --- submission -------------------------------------------------------------------------

  /**
   * Submit one task; resolves at once with its id and where the scheduler queued it. Without an
   * idempotencyKey the client makes one up (unless autoIdempotencyKeys is false), so retrying
   * after a lost connection cannot create the task twice.
   */
  async submit(taskName, options = {}, callOptions = {}) {
    const request = buildSubmitRequest(taskName, options);
    const madeUp = this._giveIdempotencyKey(request);
    const response = await this._call('SubmitTask', request, {
      ...callOptions,
      repeatable: Boolean(request.idempotencyKey),
    });
    return this._submitResult(response, madeUp);
  }

  /**
   * Submit several tasks atomically (all accepted or none); results in order. Each item is
   * `{ taskName, ...submit options }`.
   */
  async submitBatch(items, callOptions = {}) {
    if (!Array.isArray(items)) throw new InvalidArgument('submitBatch takes an array of { taskName, ...options }');
    const requests = items.map((item, index) => {
      if (item === null || typeof item !== 'object') throw new InvalidArgument(`batch item ${index} must be an object`);
      const { taskName, ...options } = item;
      return buildSubmitRequest(taskName, options);
    });
    const madeUp = requests.map((request) => this._giveIdempotencyKey(request));
    const response = await this._call('SubmitBatch', { tasks: requests }, {
      ...callOptions,
      repeatable: requests.every((request) => request.idempotencyKey),
    });
    return response.results.map((result, index) => this._submitResult(result, madeUp[index]));
  }

  _giveIdempotencyKey(request) {
    if (request.idempotencyKey || !this.autoIdempotencyKeys) return false;
    request.idempotencyKey = AUTO_IDEMPOTENCY_KEY_PREFIX + crypto.randomUUID().replaceAll('-', '');
    return true;
  }

  _submitResult(response, madeUpKey) {
    const result = fromWire(`${PACKAGE}.SubmitTaskResponse`, response);
    // Only this call's own earlier attempt can hold a key made up for it: to the caller the
    // task is new, not a duplicate of something they submitted before.
    if (madeUpKey) result.deduplicated = false;
    return result;
  }

  // --- tasks ------------------------------------------------------------------------------

  /** The task's current state. */
  async get(taskId, callOptions = {}) {
    const response = await this._call('GetTask', { taskId }, callOptions);
    return fromWire(TASK, response.task);
  }

  /**
   * The task now and after every change, as an async iterator that ends after a terminal state.
   *
   * When the stream breaks (the scheduler restarts, a standby takes over, the network drops) the
   * watch reconnects, to the leader when a standby names it, with backoff for up to
   * failoverTimeoutMs, and resumes: the scheduler sends the current state first, which is skipped
   * when it is the last one yielded, so nothing is yielded twice. `timeoutMs` bounds the whole
   * watch (DeadlineExceeded); `signal` (an AbortSignal) stops it (Cancelled). Leaving the loop
   * early (break) cancels the call.
   */
  async *watch(taskId, { timeoutMs, signal } = {}) {
    const deadline = timeoutMs === undefined || timeoutMs === null ? null : Date.now() + timeoutMs;
    const expired = () => new DeadlineExceeded(`task ${taskId} did not finish within ${timeoutMs} ms`);
    let address = this.currentAddress;
    let failover = null;
    let lastKey = null;
    for (;;) {
      if (signal && signal.aborted) throw new Cancelled(`watch of task ${taskId} was aborted`);
      const remaining = deadline === null ? null : deadline - Date.now();
      if (remaining !== null && remaining <= 0) throw expired();
      const stub = this._stubFor(address);
      const call = stub.WatchTask({ taskId }, this._metadata(), remaining === null ? {} : { deadline: Date.now() + remaining });
      const abort = () => call.cancel();
      if (signal) signal.addEventListener('abort', abort, { once: true });
      let error;
      let hint = null;
      try {
        for await (const response of call) {
          this._answered(address);
          if (failover) {
            failover.recovered(address);
            failover = null;
          }
          const task = fromWire(TASK, response.task);
          const key = changeKey(task);
          if (key === lastKey) continue;
          lastKey = key;
          yield task;
          if (isTerminal(task.state)) return;
        }
        error = new Unavailable(`the stream ended before task ${taskId} finished`);
      } catch (raw) {
        if (raw instanceof SwitchyardError) throw raw;
        if (signal && signal.aborted) throw new Cancelled(`watch of task ${taskId} was aborted`);
        error = fromServiceError(raw);
        if (error.statusCode === Status.DEADLINE_EXCEEDED && deadline !== null) throw expired();
        if (error.statusCode !== Status.UNAVAILABLE) throw error;
        hint = leaderHint(raw);
      } finally {
        if (signal) signal.removeEventListener('abort', abort);
        call.cancel();
      }
      // Announce at once only a stream that was delivering: a first connection that fails is an
      // error to report, not a loss to recover from.
      failover = failover || this._failover({ announceAtOnce: lastKey !== null });
      address = await failover.nextAddress(address, error, hint);
    }
  }

  /**
   * Resolve with the task once it reaches a terminal state (following watch, so it rides out a
   * restart or failover the same way); DeadlineExceeded after `timeoutMs`.
   */
  async wait(taskId, { timeoutMs, signal } = {}) {
    let last = null;
    for await (const task of this.watch(taskId, { timeoutMs, signal })) last = task;
    return last;
  }

  /**
   * Cancel a task: a pending task never runs, a running one is revoked. Retried after
   * UNAVAILABLE (not after DEADLINE_EXCEEDED); a connection lost after the scheduler cancelled
   * makes the retry throw FailedPrecondition (the task has ended) although the cancel took effect.
   */
  async cancel(taskId, callOptions = {}) {
    const response = await this._call('CancelTask', { taskId }, { ...callOptions, repeatable: false });
    return { task: fromWire(TASK, response.task), previousState: response.previousState };
  }

  // --- fleet --------------------------------------------------------------------------------

  /** Statistics of every logical queue, in configuration order. */
  async queues(callOptions = {}) {
    const response = await this._call('ListQueues', {}, callOptions);
    return response.queues.map((queue) => fromWire(`${PACKAGE}.QueueStats`, queue));
  }

  /** Every worker the scheduler knows, connected or within its grace period. */
  async workers(callOptions = {}) {
    const response = await this._call('ListWorkers', {}, callOptions);
    return response.workers.map((worker) => fromWire(`${PACKAGE}.WorkerInfo`, worker));
  }
}

module.exports = {
  SchedulerClient,
  AUTO_IDEMPOTENCY_KEY_PREFIX,
  TERMINAL_STATES,
  Failover,
  buildSubmitRequest,
  isTerminal,
};
