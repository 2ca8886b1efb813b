'use strict';
/**
 * Errors the client throws: one class per gRPC status the scheduler answers, so callers catch
 * what they can act on (the same hierarchy as the Python client's switchyard.exceptions):
 *
 *   SwitchyardError        base: .code ("NOT_FOUND"), .message, .statusCode (the gRPC number),
 *   │                      .metadata (the trailing metadata, when the scheduler sent any)
 *   ├── InvalidArgument    INVALID_ARGUMENT: the request itself is wrong; also thrown before any
 *   │                      call for what the client checks itself (a priority outside 0-10)
 *   ├── NotFound           NOT_FOUND: no such task, queue or worker
 *   ├── AlreadyExists      ALREADY_EXISTS
 *   ├── ResourceExhausted  RESOURCE_EXHAUSTED: payload too large, queue full
 *   ├── FailedPrecondition FAILED_PRECONDITION: not allowed now (cancel a finished task)
 *   ├── Aborted            ABORTED: a concurrent change won; retrying may succeed
 *   ├── OutOfRange         OUT_OF_RANGE
 *   ├── Unauthenticated    UNAUTHENTICATED: no token, or one the scheduler does not know
 *   ├── PermissionDenied   PERMISSION_DENIED: the token's role may not make this call
 *   ├── Unavailable        UNAVAILABLE: no scheduler reachable (after failover and retries)
 *   ├── DeadlineExceeded   DEADLINE_EXCEEDED: the call, or a watch, ran out of time
 *   ├── Cancelled          CANCELLED: the call was cancelled on the client side
 *   ├── Unimplemented      UNIMPLEMENTED: the scheduler is older than this client
 *   └── InternalError      INTERNAL, UNKNOWN, DATA_LOSS: a bug or corruption on the server side
 */

const { status: Status } = require('@grpc/grpc-js');

const CODE_NAMES = Object.fromEntries(Object.entries(Status).map(([name, number]) => [number, name]));

class SwitchyardError extends Error {
  /**
   * @param {string} message what went wrong, in words
   * @param {{statusCode?: number, metadata?: object}} [options]
   */
  constructor(message, { statusCode, metadata } = {}) {
    super(message);
    this.name = this.constructor.name;
    this.statusCode = statusCode !== undefined ? statusCode : this.constructor.defaultStatus;
    this.metadata = metadata || null;
  }

  /** The gRPC status name, e.g. "NOT_FOUND". */
  get code() {
    return CODE_NAMES[this.statusCode] || 'UNKNOWN';
  }

  toString() {
    return `${this.name} (${this.code}): ${this.message}`;
  }
}
SwitchyardError.defaultStatus = Status.UNKNOWN;

function errorClass(name, statusCode) {
  const cls = { [name]: class extends SwitchyardError {} }[name];
  cls.defaultStatus = statusCode;
  return cls;
}

const InvalidArgument = errorClass('InvalidArgument', Status.INVALID_ARGUMENT);
const NotFound = errorClass('NotFound', Status.NOT_FOUND);
const AlreadyExists = errorClass('AlreadyExists', Status.ALREADY_EXISTS);
const ResourceExhausted = errorClass('ResourceExhausted', Status.RESOURCE_EXHAUSTED);
const FailedPrecondition = errorClass('FailedPrecondition', Status.FAILED_PRECONDITION);
const Aborted = errorClass('Aborted', Status.ABORTED);
const OutOfRange = errorClass('OutOfRange', Status.OUT_OF_RANGE);
const Unauthenticated = errorClass('Unauthenticated', Status.UNAUTHENTICATED);
const PermissionDenied = errorClass('PermissionDenied', Status.PERMISSION_DENIED);
const Unavailable = errorClass('Unavailable', Status.UNAVAILABLE);
const DeadlineExceeded = errorClass('DeadlineExceeded', Status.DEADLINE_EXCEEDED);
const Cancelled = errorClass('Cancelled', Status.CANCELLED);
const Unimplemented = errorClass('Unimplemented', Status.UNIMPLEMENTED);
const InternalError = errorClass('InternalError', Status.INTERNAL);

const BY_STATUS = new Map([
  [Status.INVALID_ARGUMENT, InvalidArgument],
  [Status.NOT_FOUND, NotFound],
  [Status.ALREADY_EXISTS, AlreadyExists],
  [Status.RESOURCE_EXHAUSTED, ResourceExhausted],
  [Status.FAILED_PRECONDITION, FailedPrecondition],
  [Status.ABORTED, Aborted],
  [Status.OUT_OF_RANGE, OutOfRange],
  [Status.UNAUTHENTICATED, Unauthenticated],
  [Status.PERMISSION_DENIED, PermissionDenied],
  [Status.UNAVAILABLE, Unavailable],
  [Status.DEADLINE_EXCEEDED, DeadlineExceeded],
  [Status.CANCELLED, Cancelled],
  [Status.UNIMPLEMENTED, Unimplemented],
  [Status.INTERNAL, InternalError],
  [Status.UNKNOWN, InternalError],
  [Status.DATA_LOSS, InternalError],
]);

/** The typed error for a grpc-js ServiceError (its status code, details and trailing metadata). */
function fromServiceError(error) {
  const statusCode = typeof error.code === 'number' ? error.code : Status.UNKNOWN;
  const cls = BY_STATUS.get(statusCode) || SwitchyardError;
  const message = error.details || error.message || CODE_NAMES[statusCode] || 'unknown error';
  const typed = new cls(message, { statusCode, metadata: error.metadata });
  typed.cause = error;
  return typed;
}

module.exports = {
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
  fromServiceError,
};
