"""The scheduler's HTTP listener (`--metrics-listen`): `/metrics` for Prometheus, and a read-only
JSON API for operators and scripts that use `curl`.

    GET /metrics                the Prometheus exposition (any path outside /api/ answers it too,
                                as the listener always did)
    GET /api/v1/health          {"status": "ok"|"degraded"|"down", "leader": bool,
                                 "workers_connected": n, "queued": n, "active": n,
                                 "queues": {name: {"pending": n, "status": "ok"|"paused"|"no_workers"}},
                                 "warnings": [...]}   (engine/health.py says what each means)
    GET /api/v1/queues          ListQueuesResponse
    GET /api/v1/workers         ListWorkersResponse
    GET /api/v1/tasks           ListTasksResponse; ?state=running (repeatable, or comma-separated),
                                &queue=Q &worker=W &name=TASK_NAME &limit=N (1-500, default 50)
                                &page_token=T (next_page_token of the previous page)
    GET /api/v1/tasks/{id}      GetTaskResponse

Bodies other than health are the gRPC API's own response messages in protobuf's JSON mapping
(`json_format.MessageToJson`, field names as in the .proto, fields at their default value
included), so the two interfaces cannot drift; that mapping writes 64-bit integers (uint64
counters such as a queue's `pending`) as JSON strings and enums by name (`TASK_STATE_RUNNING`).
The health body is plain JSON: it has no gRPC twin (gRPC clients use grpc.health.v1).

Errors are JSON too, with the gRPC status code's name and the HTTP status it maps to:
`{"code": "NOT_FOUND", "message": "..."}` (404), INVALID_ARGUMENT (400), UNAVAILABLE (503)...
Only the leader answers the API: a standby (or a scheduler whose state store is unreachable)
answers 503 UNAVAILABLE with `leader_address`, the leading scheduler's gRPC address when known
(its API is on that host's metrics port), and /api/v1/health answers it with status `down`.
`/metrics` answers on every scheduler. Nothing here changes state.

With tokens on (`--auth-tokens`), every /api/v1/ endpoint but health needs the header
`Authorization: Bearer <token>` of a client or admin token: 401 UNAUTHENTICATED (with
`WWW-Authenticate: Bearer`) without a valid one, 403 PERMISSION_DENIED for an agent token.
/metrics and /api/v1/health stay open: Prometheus and probes carry no token (the health body
tells counts and queue names, not tasks). With client certificates but no tokens, the other
endpoints answer 401: this listener asks no client certificate, so it has no one to trust.
With `--tls-cert` the listener speaks HTTPS with the scheduler's certificate (re-read when it
changes), so tokens never cross the network in clear.

The listener is a small threaded WSGI server, like prometheus_client's own: /metrics is
rendered on the request's thread, and an API request runs its engine reads on the scheduler's
event loop (the engine is not thread-safe), waiting at most `REQUEST_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, make_wsgi_app
from switchyard.v1 import scheduler_pb2

from scheduler.api import convert
from scheduler.api.auth import AccessPolicy
from scheduler.api.servicers import EngineSource
from scheduler.api.status import status_of
from scheduler.engine import Engine
from scheduler.engine.task_list import TaskQuery, states_from_names
from scheduler.errors import InvalidArgument, NotFound, NotLeader

log = logging.getLogger("switchyard.scheduler.api.http")

REQUEST_TIMEOUT_SECONDS = 10.0
"""Longest an API request waits for the engine before answering 504 DEADLINE_EXCEEDED."""

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""gRPC status -> HTTP status, as grpc-gateway maps them."""

ENDPOINTS = ("/api/v1/health", "/api/v1/queues", "/api/v1/workers", "/api/v1/tasks", "/api/v1/tasks/{id}")
TASK_PARAMETERS = ("state", "queue", "worker", "name", "limit", "page_token")
"""The query parameters /api/v1/tasks takes."""

Reply = tuple[int, Message | dict[str, Any]]
"""An HTTP status and the body: a proto message or plain JSON data."""
Respond = Callable[[str, list[tuple[str, str]]], Any]


class ApiError(Exception):
    """A request the API refuses, with the gRPC code it maps to."""

    def __init__(self, code: grpc.StatusCode, message: str, **extra: str) -> None:
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra

    def reply(self) -> Reply:
        """The error as an HTTP status and a JSON body."""
        return HTTP_STATUS.get(self.code, 500), {"code": self.code.name, "message": self.message, **self.extra}


def _error_of(exc: Exception) -> ApiError:
    """The ApiError a domain error (or an outage) becomes; a bug becomes INTERNAL, logged."""
    status = status_of(exc)
    if status is None:
        log.error("HTTP API request failed", exc_info=exc)
        return ApiError(grpc.StatusCode.INTERNAL, "internal error; the scheduler's log has the details")
    code, message = status
    if code is grpc.StatusCode.UNAVAILABLE:
        return ApiError(code, message, leader_address=exc.leader if isinstance(exc, NotLeader) else "")
    return ApiError(code, message)


def _task_query(query: dict[str, list[str]]) -> TaskQuery:
    """/api/v1/tasks' query parameters as a ListTasks query."""
    unknown = sorted(set(query) - set(TASK_PARAMETERS))
    if unknown:
        raise InvalidArgument(f"unknown query parameter(s) {', '.join(unknown)}; /api/v1/tasks takes "
                              f"{', '.join(TASK_PARAMETERS)}")
    names = [name for value in query.get("state", []) for name in value.split(",") if name.strip()]
    limit_text = query.get("limit", [""])[-1].strip()
    if limit_text and not (limit_text.isdigit() and int(limit_text) > 0):
        raise InvalidArgument(f"limit must be a whole number from 1 to 500; got {limit_text!r}")

    def last(name: str) -> str:
        return query.get(name, [""])[-1].strip()

    return TaskQuery(
        states=states_from_names(name.removeprefix("TASK_STATE_").removeprefix("task_state_") for name in names),
        queue=last("queue"), worker_id=last("worker"), task_name=last("name"),
        page_size=int(limit_text) if limit_text else 0, page_token=last("page_token"),
    )


async def _health(engine: Engine) -> Reply:
    report = await engine.health.report()
    body = asdict(report)
    body["warnings"] = list(report.warnings)
    return 200, {"status": body.pop("status"), "leader": True, **body}


def _down(error: ApiError) -> Reply:
    """/api/v1/health of a scheduler that cannot serve (a standby, or its Redis unreachable)."""
    status, body = error.reply()
    assert isinstance(body, dict)
    return status, {"status": "down", "leader": False, "workers_connected": 0, "queued": 0, "active": 0,
                    "queues": {}, "warnings": [error.message], **body}


class HttpApi:
    """The WSGI application of the listener, and the server that runs it (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry, policy: AccessPolicy | None = None) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._policy = policy
        self._engines: EngineSource | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: WSGIServer | None = None

    def attach(self, engines: EngineSource, loop: asyncio.AbstractEventLoop) -> None:
        """Answer the API from `engines` (the scheduler's leadership), whose engine runs on `loop`.
        Until then the API answers 503 (the scheduler is starting)."""
        self._engines, self._loop = engines, loop

    # --- the server -------------------------------------------------------------------------

    def serve(self, host: str, port: int, tls: Callable[[], ssl.SSLContext] | None = None) -> int:
        """Listen on host:port (port 0 picks a free one) on a daemon thread; the bound port.
        With `tls` (the current context, asked for each connection) it speaks HTTPS. Raises
        OSError when the address is taken or not valid."""
        family, address = _best_family(host, port)
        server_class = type("HttpApiServer", (_TlsWSGIServer if tls else _ThreadingWSGIServer,),
                            {"address_family": family, "tls": staticmethod(tls) if tls else None})
        server: WSGIServer = make_server(address, port, self, server_class=server_class,
                                         handler_class=_QuietHandler)
        self._server = server
        threading.Thread(target=server.serve_forever, name="http-api", daemon=True).start()
        return int(server.server_port)

    def close(self) -> None:
        """Stop listening (requests under way finish on their own threads)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # --- WSGI ---------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Respond) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path != "/api" and not path.startswith("/api/"):
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            status, body = ApiError(grpc.StatusCode.UNIMPLEMENTED,
                                    f"{method} is not supported: the API is read-only (GET)").reply()
            return self._send(start_response, 405, body, head=False, extra=[("Allow", "GET, HEAD")])
        path = path.rstrip("/")
        if self._policy is not None and path != "/api/v1/health":
            try:
                self._policy.admit_http(environ.get("HTTP_AUTHORIZATION"))
            except Exception as exc:
                status, body = _error_of(exc).reply()
                challenge = [("WWW-Authenticate", 'Bearer realm="switchyard"')] if status == 401 else []
                return self._send(start_response, status, body, head=method == "HEAD", extra=challenge)
        status, body = self._route(path, parse_qs(environ.get("QUERY_STRING", "")))
        return self._send(start_response, status, body, head=method == "HEAD")

    def _route(self, path: str, query: dict[str, list[str]]) -> Reply:
        try:
            if path == "/api/v1/health":
                return self._on_engine(_health, health=True)
            if path == "/api/v1/queues":
                return self._on_engine(self._queues)
            if path == "/api/v1/workers":
                return self._on_engine(self._workers)
            if path == "/api/v1/tasks":
                task_query = _task_query(query)
                return self._on_engine(lambda engine: self._tasks(engine, task_query))
            if path.startswith("/api/v1/tasks/") and path.count("/") == 4:
                task_id = path.rsplit("/", 1)[1]
                return self._on_engine(lambda engine: self._task(engine, task_id))
            raise NotFound(f"no endpoint {path or '/'}; the API has {', '.join(ENDPOINTS)}")
        except ApiError as exc:
            return exc.reply()
        except Exception as exc:
            return _error_of(exc).reply()

    def _send(self, start_response: Respond, status: int, body: Message | dict[str, Any], *, head: bool,
              extra: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
        if isinstance(body, Message):
            text = json_format.MessageToJson(body, preserving_proto_field_name=True,
                                             always_print_fields_with_no_presence=True)
        else:
            text = json.dumps(body, indent=2)
        data = (text + "\n").encode()
        headers = [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(data))),
                   ("Cache-Control", "no-store"), *(extra or [])]
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
        return [] if head else [data]

    # --- answers, run on the scheduler's event loop --------------------------------------------

    def _on_engine(self, answer: Callable[[Engine], Awaitable[Reply]], *, health: bool = False) -> Reply:
        """Run `answer` with the current engine on the scheduler's loop and wait for it."""
        engines, loop = self._engines, self._loop
        if engines is None or loop is None or loop.is_closed():
            error = ApiError(grpc.StatusCode.UNAVAILABLE, "the scheduler is starting; retry in a moment",
                             leader_address="")
            return _down(error) if health else error.reply()

        async def run() -> Reply | ApiError:
            try:
                engine = engines.current()
            except Exception as exc:
                return _error_of(exc)
            try:
                return await answer(engine)
            except Exception as exc:
                return _error_of(exc)

        try:
            future = asyncio.run_coroutine_threadsafe(run(), loop)
        except RuntimeError:  # the loop stopped: the scheduler is shutting down
            error = ApiError(grpc.StatusCode.UNAVAILABLE, "the scheduler is shutting down", leader_address="")
            return _down(error) if health else error.reply()
        try:
            outcome = future.result(REQUEST_TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            outcome = ApiError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"the scheduler did not answer within {REQUEST_TIMEOUT_SECONDS:g}s; retry")
        if isinstance(outcome, ApiError):
            return _down(outcome) if health and outcome.code is grpc.StatusCode.UNAVAILABLE else outcome.reply()
        return outcome

    @staticmethod
    async def _queues(engine: Engine) -> Reply:
        views = await engine.queries.list_queues()
        return 200, scheduler_pb2.ListQueuesResponse(queues=[convert.queue_stats(v) for v in views])

    @staticmethod
    async def _workers(engine: Engine) -> Reply:
        queries = engine.queries
        return 200, scheduler_pb2.ListWorkersResponse(
            workers=[convert.worker_info(w, queries.operator_status(w)) for w in queries.workers()])

    @staticmethod
    async def _tasks(engine: Engine, query: TaskQuery) -> Reply:
        page = await engine.task_list.page(query)
        return 200, convert.task_page(page.tasks, page.next_page_token)

    @staticmethod
    async def _task(engine: Engine, task_id: str) -> Reply:
        view = await engine.queries.get_task(task_id)
        return 200, scheduler_pb2.GetTaskResponse(task=convert.task_message(view))


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests", 499: "Client Closed Request",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
            504: "Gateway Timeout"}


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """A thread per request; threads do not keep the process alive."""

    daemon_threads = True


class _TlsWSGIServer(_ThreadingWSGIServer):
    """HTTPS: each accepted connection is wrapped with the context `tls` gives now (so a rotated
    certificate serves the next connection); the handshake runs on the request's thread."""

    tls: Callable[[], ssl.SSLContext]

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, client = self.socket.accept()
        try:
            return self.tls().wrap_socket(connection, server_side=True, do_handshake_on_connect=False), client
        except BaseException:
            connection.close()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake (a plain-HTTP client, an untrusted certificate) is the client's
        # problem, not a traceback on the scheduler's stderr.
        log.debug("HTTPS connection from %s failed", client_address, exc_info=True)


class _QuietHandler(WSGIRequestHandler):
    """Requests are not logged to stderr (a scrape every few seconds would flood it)."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def _best_family(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family and address to bind for `host` (IPv6 addresses need AF_INET6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, str(sockaddr[0])
