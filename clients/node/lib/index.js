'use strict';
/**
 * @switchyard/client: submit Celery tasks to a Switchyard scheduler from Node.js.
 *
 * The public names, all here; index.d.ts types them. SchedulerClient is in client.js, the gRPC
 * plumbing in connection.js, the message shapes in convert.js, the errors in errors.js.
 */

const { SchedulerClient, AUTO_IDEMPOTENCY_KEY_PREFIX, TERMINAL_STATES, buildSubmitRequest, isTerminal } =
  require('./client');
const {
  DEFAULT_TARGET,
  DEFAULT_SCHEDULER_PORT,
  LEADER_METADATA_KEY,
  TOKEN_ENV,
  parseAddresses,
} = require('./connection');
const { protoJSON } = require('./convert');
const {
  SwitchyardError,
  InvalidArgument,
  NotFound,
  AlreadyExists,
  ResourceExhausted,
  FailedPrecondition,
  Aborted,
  OutOfRange,
  Unauthenticated,
  PermissionDenied,
  Unavailable,
  DeadlineExceeded,
  Cancelled,
  Unimplemented,
  InternalError,
} = require('./errors');

// Shorthand properties only: Node's ES-module loader finds named exports of a CommonJS module by
// reading this literal, so `import { NotFound } from '@switchyard/client'` works.
module.exports = {
  SchedulerClient,
  AUTO_IDEMPOTENCY_KEY_PREFIX,
  DEFAULT_SCHEDULER_PORT,
  DEFAULT_TARGET,
  LEADER_METADATA_KEY,
  TERMINAL_STATES,
  TOKEN_ENV,
  buildSubmitRequest,
  isTerminal,
  parseAddresses,
  protoJSON,
  SwitchyardError,
  InvalidArgument,
  NotFound,
  AlreadyExists,
  ResourceExhausted,
  FailedPrecondition,
  Aborted,
  OutOfRange,
  Unauthenticated,
  PermissionDenied,
  Unavailable,
  DeadlineExceeded,
  Cancelled,
  Unimplemented,
  InternalError,
};
