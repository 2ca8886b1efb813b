// Types of @switchyard/client. The message types (Task, QueueStats, WorkerInfo, ...) are
// generated from the .proto files into messages.d.ts; this file types the client around them.

import type { Interceptor } from '@grpc/grpc-js';
import type {
  CancelTaskResponse,
  GpuRequirement,
  JsonObject,
  JsonValue,
  QueueStats,
  Serializer,
  SubmitTaskRequest,
  SubmitTaskResponse,
  Task,
  TaskState,
  WorkerInfo,
} from './messages';

export * from './messages';

/** Where the client logs losing and finding the scheduler; every method is optional. */
export interface Logger {
  /** "lost the scheduler at ...; reconnecting..." (default: console.warn). */
  warn?(message: string): void;
  /** "reconnected to ..." (default: silent). */
  info?(message: string): void;
  /** Every failed attempt (default: silent). */
  debug?(message: string): void;
}

/** How a SchedulerClient connects. Every option has a default. */
export interface ClientOptions {
  /** Deadline of each attempt of a unary call, ms (default 10000). */
  timeoutMs?: number;
  /**
   * How long a call keeps trying after UNAVAILABLE, ms (default 30000): it follows a standby's
   * pointer to the leader, tries the other addresses and backs off between rounds. 0: each
   * address once, no waiting.
   */
  failoverTimeoutMs?: number;
  /** gRPC send/receive message limit, MiB (default 16). */
  maxMessageMb?: number;
  /** Keepalive ping interval during calls, ms (default 60000). */
  keepaliveTimeMs?: number;
  /** Give submissions without an idempotencyKey one, so a retry cannot duplicate them (default true). */
  autoIdempotencyKeys?: boolean;
  /** Use TLS with the system's root certificates (implied by tlsCa, tlsCert, tlsKey). */
  tls?: boolean;
  /** CA certificate (PEM: a file path or its contents as a Buffer) to verify the scheduler with; turns TLS on. */
  tlsCa?: string | Buffer;
  /** Client certificate (PEM path or Buffer) for mTLS; with tlsKey. */
  tlsCert?: string | Buffer;
  /** Client private key (PEM path or Buffer) for mTLS; with tlsCert. */
  tlsKey?: string | Buffer;
  /** The name the scheduler's certificate is checked against, when it differs from the address's host. */
  tlsServerName?: string;
  /** Bearer token sent as `authorization: Bearer <token>` on every call. Default: $SWITCHYARD_TOKEN. */
  token?: string;
  /** File holding the bearer token; read again whenever it changes (rotation without restart). */
  tokenFile?: string;
  /** Where reconnection messages go (default: warnings to console.warn, the rest silent). */
  logger?: Logger;
  /** grpc-js client interceptors, run on every call (tracing, metrics, fault injection). */
  interceptors?: Interceptor[];
  /** Environment to read SWITCHYARD_TOKEN from (default: process.env). */
  env?: Record<string, string | undefined>;
}

/** Options of one unary call. */
export interface CallOptions {
  /** Deadline of each attempt, ms (default: the client's timeoutMs). */
  timeoutMs?: number;
}

/** Options of watch() and wait(). */
export interface WatchOptions {
  /** Bound on the whole watch, ms; DeadlineExceeded when it passes (default: none). */
  timeoutMs?: number;
  /** Stops the watch; it then throws Cancelled. */
  signal?: AbortSignal;
}

/** GpuRequirement by its full name, its short name, or its number. */
export type GpuOption = GpuRequirement | 'unspecified' | 'none' | 'preferred' | 'required' | number;
/** Serializer by its full name, its short name, or its number. */
export type SerializerOption = Serializer | 'unspecified' | 'json' | 'msgpack' | number;

/**
 * What a submission may say besides the task name: the SubmitTaskRequest fields. Arguments come
 * as values (`args`, `kwargs`: sent as structured JSON, numbers as doubles, integers exact up to
 * 2^53) or as JSON text (`argsJson`, `kwargsJson`: passed through unchanged, for larger
 * integers), never both forms in one submission.
 */
export type SubmitOptions = Partial<
  Omit<SubmitTaskRequest, 'taskName' | 'args' | 'kwargs' | 'gpu' | 'serializer'>
> & {
  /** Positional arguments of the Celery task. */
  args?: JsonValue[];
  /** Keyword arguments of the Celery task. */
  kwargs?: JsonObject;
  /** GPU need: "none", "preferred", "required" (default "unspecified": classification decides). */
  gpu?: GpuOption;
  /** Encoding of the Celery message: "json" or "msgpack" (default: the queue's). */
  serializer?: SerializerOption;
};

/** One submitBatch item: a task name and its submit options. */
export type BatchItem = SubmitOptions & { taskName: string };

/** The result of cancel(): the task after cancellation and the state cancel found it in. */
export interface CancelResult {
  task: Task;
  previousState: CancelTaskResponse['previousState'];
}

/**
 * A connection to a Switchyard scheduler, or to several that share one Redis:
 * `new SchedulerClient("10.0.0.4:50051,10.0.0.5:50051", { tlsCa: "ca.pem", tokenFile: "token" })`.
 * Every call goes to the leader and follows it on failover (see ClientOptions.failoverTimeoutMs).
 * Only UNAVAILABLE is retried, plus DEADLINE_EXCEEDED for calls safe to repeat. Call close() when done.
 */
export class SchedulerClient {
  constructor(target?: string | string[], options?: ClientOptions);
  /** Every scheduler address given, in the order they are tried. */
  readonly addresses: string[];
  /** The addresses as one comma-separated string. */
  readonly target: string;
  /** Where the next call goes first: the address that answered last (the leader). */
  readonly currentAddress: string;
  /** Submit one task; resolves at once with its id and where it was queued. */
  submit(taskName: string, options?: SubmitOptions, callOptions?: CallOptions): Promise<SubmitTaskResponse>;
  /** Submit several tasks atomically (all accepted or none); results in order. */
  submitBatch(items: BatchItem[], callOptions?: CallOptions): Promise<SubmitTaskResponse[]>;
  /**
   * The task's current state. `result` is the structured result, or resultJson parsed when the
   * scheduler did not send the structured form (null when neither holds a value).
   */
  get(taskId: string, callOptions?: CallOptions): Promise<Task>;
  /**
   * The task now and after every change; ends after a terminal state. Survives a scheduler
   * restart or failover (reconnects and resumes without yielding a state twice).
   */
  watch(taskId: string, options?: WatchOptions): AsyncGenerator<Task, void, undefined>;
  /** The task once it reaches a terminal state. */
  wait(taskId: string, options?: WatchOptions): Promise<Task>;
  /** Cancel a task: a pending task never runs, a running one is revoked. */
  cancel(taskId: string, callOptions?: CallOptions): Promise<CancelResult>;
  /** Statistics of every logical queue, in configuration order. */
  queues(callOptions?: CallOptions): Promise<QueueStats[]>;
  /** Every worker the scheduler knows. */
  workers(callOptions?: CallOptions): Promise<WorkerInfo[]>;
  /** Close the channels. */
  close(): void;
}

/** Task states after which nothing changes any more. */
export const TERMINAL_STATES: readonly TaskState[];
/** True when `state` is terminal (succeeded, failed, dead-lettered, cancelled). */
export function isTerminal(state: TaskState): boolean;
/** Start of the idempotency keys the client makes up. */
export const AUTO_IDEMPOTENCY_KEY_PREFIX: string;
/** 127.0.0.1:50051. */
export const DEFAULT_TARGET: string;
/** 50051: the port an address that names a host only gets. */
export const DEFAULT_SCHEDULER_PORT: number;
/** Trailing metadata key in which a standby names the leader. */
export const LEADER_METADATA_KEY: string;
/** SWITCHYARD_TOKEN. */
export const TOKEN_ENV: string;
/** The addresses in "HOST:PORT,HOST:PORT" (or an array), ports defaulted, repeats dropped. */
export function parseAddresses(target: string | string[]): string[];
/** The wire form of a submission, checked client-side (throws InvalidArgument). */
export function buildSubmitRequest(taskName: string, options?: SubmitOptions): Record<string, unknown>;
/**
 * The canonical proto3 JSON mapping of a message the client returned (as protobuf's printers
 * write it: lowerCamelCase, enums by name, 64-bit integers as strings, RFC 3339 timestamps,
 * default values left out), ready for JSON.stringify.
 */
export function protoJSON(message: object): JsonObject;

/** Base of every error the client throws. */
export class SwitchyardError extends Error {
  constructor(message: string, options?: { statusCode?: number; metadata?: unknown });
  /** The gRPC status name, e.g. "NOT_FOUND". */
  readonly code: string;
  /** The gRPC status number. */
  statusCode: number;
  /** The trailing metadata of the failed call (a grpc-js Metadata), or null. */
  metadata: unknown;
}
/** INVALID_ARGUMENT, or a request the client refused before any call. */
export class InvalidArgument extends SwitchyardError {}
/** NOT_FOUND: no such task, queue or worker. */
export class NotFound extends SwitchyardError {}
/** ALREADY_EXISTS. */
export class AlreadyExists extends SwitchyardError {}
/** RESOURCE_EXHAUSTED: payload too large, queue full. */
export class ResourceExhausted extends SwitchyardError {}
/** FAILED_PRECONDITION: not allowed in the current state. */
export class FailedPrecondition extends SwitchyardError {}
/** ABORTED: a concurrent change won. */
export class Aborted extends SwitchyardError {}
/** OUT_OF_RANGE. */
export class OutOfRange extends SwitchyardError {}
/** UNAUTHENTICATED: no token, or one the scheduler does not know. */
export class Unauthenticated extends SwitchyardError {}
/** PERMISSION_DENIED: the token's role may not make this call. */
export class PermissionDenied extends SwitchyardError {}
/** UNAVAILABLE: no scheduler could serve the call. */
export class Unavailable extends SwitchyardError {}
/** DEADLINE_EXCEEDED: the call or the watch ran out of time. */
export class DeadlineExceeded extends SwitchyardError {}
/** CANCELLED: cancelled on the client side. */
export class Cancelled extends SwitchyardError {}
/** UNIMPLEMENTED: the scheduler is older than this client. */
export class Unimplemented extends SwitchyardError {}
/** INTERNAL, UNKNOWN, DATA_LOSS: a server-side bug or corruption. */
export class InternalError extends SwitchyardError {}
