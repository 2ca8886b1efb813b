"""Who may call what: bearer tokens with roles, client certificates, and agents bound to their worker id.

Callers send `authorization: Bearer <token>` metadata. The token file (`--auth-tokens FILE`)
lists tokens by name, role and the SHA-256 of the token, never the token itself::

    tokens:
      - {name: ci, role: client, sha256: "<64 hex digits>"}
      - {name: ops, role: admin, sha256: "<64 hex digits>"}
      - {name: gpu-1, role: agent, worker_id: gpu-1, sha256: "<64 hex digits>"}

A presented token is hashed and compared with every entry's digest in constant time
(`hmac.compare_digest`, no early exit). The file is polled once a second (`stat`, following
symlinks, so a Kubernetes secret's symlink swap is seen) and re-read when it changed; a file that
no longer parses keeps the previous tokens in force (logged once), since locking every caller
out because of a half-written file is worse. A token that leaves the file, or whose role or
worker id changes, is revoked: its next call is refused, and its open streams end with
UNAUTHENTICATED; an agent's worker is then declared lost and its tasks fail over at once.

What each role may call (`ROLES_BY_METHOD`, one entry per RPC; a unit test fails when an RPC is
missing, and until it is added an RPC is admin-only):

* client: submit (SubmitTask, SubmitBatch), read (GetTask, ListTasks, ListQueues, ListWorkers,
  ListDeadLetters), watch (WatchTask), explain (ExplainPlacement), cancel (CancelTask), and the
  KEDA external scaler (read-only demand numbers);
* admin: everything a client may, plus pause and resume, drain, undrain and unquarantine,
  dead-letter replay and purge. Not AgentGateway.Connect: an admin token names no worker, and
  only a credential bound to a worker id may receive that worker's tasks;
* agent: AgentGateway.Connect only, and only as the worker id its token names (checked against
  the hello, the first message of the stream: `connect_problem`).

The gRPC health service is always open (probes, load balancers). Reflection needs a valid token
of any role. KEDA sends no token: with tokens on, the ExternalScaler service also admits a
caller that presented a verified client certificate (mTLS), or anyone with `--keda-scaler-open`.

Client certificates (`--tls-client-ca`): the TLS handshake itself refuses a caller without one.
The identity of a certificate is its subject's common name (CN). With tokens on, tokens decide
roles and worker ids and the certificate only authenticates the connection. Without tokens,
every certificate holder may call every RPC (there are no roles to give it), but an agent
connects only as the worker id its certificate's CN names.

Missing, malformed or unknown token: UNAUTHENTICATED. A valid token with the wrong role or
worker id: PERMISSION_DENIED. Messages say what is missing and never repeat what was sent;
token names (not secrets) may appear in messages and logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from externalscaler import externalscaler_pb2
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from switchyard.v1 import agent_pb2, scheduler_pb2
from switchyard.wire import AUTHORIZATION_METADATA_KEY, TOKEN_ENV

from scheduler.api.status import status_of
from scheduler.api.tls import file_stamp
from scheduler.config.errors import ConfigError
from scheduler.config.yaml_lines import FileReader, LineMap, kind, read_yaml
from scheduler.errors import PermissionDenied, Unauthenticated

log = logging.getLogger("switchyard.scheduler.api.auth")

Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]  # generic in the type stubs only

TOKEN_FILE_POLL_SECONDS = 1.0
"""How often the token file is checked for changes."""


class Role(enum.StrEnum):
    """What a token may do (see the module docstring)."""

    CLIENT = "client"
    ADMIN = "admin"
    AGENT = "agent"


# --- the access table -------------------------------------------------------------------------

_SCHEDULER = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name
_AGENT_GATEWAY = agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"].full_name
_EXTERNAL_SCALER = externalscaler_pb2.DESCRIPTOR.services_by_name["ExternalScaler"].full_name
_CLIENT_OR_ADMIN = frozenset({Role.CLIENT, Role.ADMIN})
_ADMIN = frozenset({Role.ADMIN})
_AGENT = frozenset({Role.AGENT})


def _methods(service: str, roles: frozenset[Role], names: Iterable[str]) -> dict[str, frozenset[Role]]:
    return {f"/{service}/{name}": roles for name in names}


ROLES_BY_METHOD: dict[str, frozenset[Role]] = {
    **_methods(_SCHEDULER, _CLIENT_OR_ADMIN, (
        "SubmitTask", "SubmitBatch", "GetTask", "WatchTask", "CancelTask", "ListTasks", "ListQueues",
        "ListWorkers", "ExplainPlacement", "ListDeadLetters")),
    **_methods(_SCHEDULER, _ADMIN, (
        "PauseQueue", "ResumeQueue", "DrainWorker", "UndrainWorker", "UnquarantineWorker",
        "RetryDeadLetter", "PurgeDeadLetters")),
    **_methods(_AGENT_GATEWAY, _AGENT, ("Connect",)),
    **_methods(_EXTERNAL_SCALER, _CLIENT_OR_ADMIN, ("IsActive", "StreamIsActive", "GetMetricSpec", "GetMetrics")),
}
"""The roles that may call each RPC of the Scheduler, AgentGateway and ExternalScaler services."""

OPEN_SERVICES = frozenset({health.SERVICE_NAME})
"""Services anyone may call: the standard health check (probes carry no credentials)."""
ANY_TOKEN_SERVICES = frozenset({reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"})
"""Services any valid token may call, whatever its role: server reflection."""
CERTIFICATE_SERVICES = frozenset({_EXTERNAL_SCALER})
"""Services a caller with a verified client certificate may call without a token (KEDA)."""
HTTP_ROLES = _CLIENT_OR_ADMIN
"""Roles that may read the HTTP JSON API (its endpoints are all reads)."""


def service_of(method: str) -> str:
    """`/switchyard.v1.Scheduler/SubmitTask` -> `switchyard.v1.Scheduler`."""
    return method.lstrip("/").rpartition("/")[0]


def roles_for(method: str) -> frozenset[Role]:
    """The roles that may call `method` (full gRPC method path); admin only for one not classified."""
    return ROLES_BY_METHOD.get(method, _ADMIN)


# --- the token file -------------------------------------------------------------------------

_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class TokenEntry:
    """One token of the file: who it is, what it may do, and the SHA-256 of the token."""

    name: str
    role: Role
    worker_id: str
    digest: bytes


class _TokenFileReader(FileReader):
    """The config reader, with errors that say "token file"."""

    def error(self, line: int, path: str, message: str) -> ConfigError:
        where = f"token file {self.file} line {line}"
        return ConfigError(f"{where}: {path}: {message}" if path else f"{where}: {message}")


def parse_token_file(path: str) -> tuple[TokenEntry, ...]:
    """Read and check the token file; ConfigError naming the line and key of the first problem.

    A `sha256` value that is not 64 hex digits is never shown in the error: it may be a token
    pasted in clear."""
    try:
        with open(path, encoding="utf-8"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path} (--auth-tokens): {exc.strerror or exc}") from None
    generic, data = read_yaml(path)
    r = _TokenFileReader(generic.file)
    if not isinstance(data, LineMap):
        raise r.error(getattr(data, "line", 1), "", "the top level must be a mapping with the key 'tokens'")
    r.keys(data, "", ("tokens",), required=("tokens",))
    items = r.sequence(data["tokens"], data.key_lines["tokens"], "tokens", "a list of tokens")
    entries: list[TokenEntry] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    roles = ", ".join(role.value for role in Role)
    for index, (item, line) in enumerate(zip(items, items.item_lines, strict=True)):
        where = f"tokens[{index}]"
        entry = r.mapping(item, line, where, "a mapping {name, role, sha256[, worker_id]}")
        r.keys(entry, where, ("name", "role", "worker_id", "sha256"), required=("name", "role", "sha256"))
        name = r.text(entry, "name", where, "", empty_ok=False)
        role_text = r.text(entry, "role", where, "")
        try:
            role = Role(role_text)
        except ValueError:
            raise r.error(entry.key_lines["role"], f"{where}.role", f"{kind(role_text)} must be one of {roles}") from None
        worker_id = r.text(entry, "worker_id", where, "")
        if role is Role.AGENT and not worker_id:
            raise r.error(entry.line, where, f"token {name!r} has role agent and needs worker_id: the "
                                             "worker it may connect as")
        if role is not Role.AGENT and "worker_id" in entry:
            raise r.error(entry.key_lines["worker_id"], f"{where}.worker_id",
                          f"only agent tokens name a worker; {name!r} has role {role.value}")
        digest_text = entry["sha256"]
        if not isinstance(digest_text, str) or not _HEX_DIGEST.match(digest_text):
            raise r.error(entry.key_lines["sha256"], f"{where}.sha256",
                          "must be the SHA-256 of the token as 64 hex digits (printf %s \"$TOKEN\" | "
                          "sha256sum); the value is not shown here, in case it is a token in clear")
        digest = bytes.fromhex(digest_text)
        if name in names:
            raise r.error(line, f"{where}.name", f"name {name!r} is already used on line {names[name]}")
        if digest in digests:
            raise r.error(entry.key_lines["sha256"], f"{where}.sha256",
                          f"the same token is listed on line {digests[digest]}; give each caller its own token")
        names[name], digests[digest] = line, line
        entries.append(TokenEntry(name, role, worker_id, digest))
    return tuple(entries)


class TokenFile:
    """The tokens in force, re-read from the file when it changes (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._stamp: object = file_stamp((path,))
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {path} (--auth-tokens): {exc.strerror or exc}") from None
        self._entries = parse_token_file(path)
        self._refused_stamp: object = None
        self._revocations: dict[TokenEntry, asyncio.Event] = {}
        self.reloads = 0
        """Times new content was taken into use (tests wait on it)."""

    @property
    def entries(self) -> tuple[TokenEntry, ...]:
        """The tokens in force now."""
        return self._entries

    def identify(self, token: str) -> TokenEntry | None:
        """The entry whose digest is the token's, compared with every entry in constant time."""
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: TokenEntry | None = None
        for entry in self._entries:  # no early exit: the time taken does not say which entry matched
            if hmac.compare_digest(entry.digest, presented):
                found = entry
        return found

    def revocation(self, entry: TokenEntry) -> asyncio.Event:
        """An event set when `entry` stops being in force (already set when it is not now)."""
        event = self._revocations.get(entry)
        if event is None:
            event = asyncio.Event()
            if entry in self._entries:
                self._revocations[entry] = event
            else:
                event.set()
        return event

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True when new tokens are in force. A file that cannot
        be read or parsed leaves the current tokens in force (logged once per change)."""
        try:
            stamp: object = file_stamp((self.path,))
        except OSError as exc:
            stamp = ("unreadable", exc.errno)
            problem = f"cannot read the token file {self.path}: {exc.strerror or exc}"
        else:
            if stamp == self._stamp:
                return False
            try:
                entries = parse_token_file(self.path)
            except ConfigError as exc:
                problem = str(exc)
            else:
                self._take(entries)
                self._stamp, self._refused_stamp = stamp, None
                return True
        if stamp != self._refused_stamp:
            log.error("%s; the tokens loaded before stay in force until the file is fixed", problem)
            self._refused_stamp = stamp
        return False

    def _take(self, entries: tuple[TokenEntry, ...]) -> None:
        before = {entry.name for entry in self._entries}
        after = {entry.name for entry in entries}
        self._entries = entries
        self.reloads += 1
        kept = set(entries)
        revoked = [entry for entry in self._revocations if entry not in kept]
        for entry in revoked:
            self._revocations.pop(entry).set()
        changed = sorted({entry.name for entry in revoked} & after)
        log.info("token file %s reloaded: %d token(s)%s%s%s", self.path, len(entries),
                 f"; added {', '.join(sorted(after - before))}" if after - before else "",
                 f"; removed {', '.join(sorted(before - after))}" if before - after else "",
                 f"; changed {', '.join(changed)}" if changed else "")

    async def watch(self, interval: float = TOKEN_FILE_POLL_SECONDS) -> None:
        """Poll the file for changes until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload_if_changed()
            except Exception:  # never let the watch die: the next change must still be seen
                log.exception("checking the token file %s failed", self.path)


# --- callers and the policy ---------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who a call comes from: a token's entry, or a client certificate's common name."""

    token: TokenEntry | None = None
    certificate_cn: str | None = None

    def describe(self) -> str:
        """How messages name the caller (never with a secret)."""
        if self.token is not None:
            return f"token {self.token.name!r} (role {self.token.role.value})"
        if self.certificate_cn is not None:
            return f"the client certificate CN={self.certificate_cn!r}"
        return "an anonymous caller"


ANONYMOUS = Caller()

_HOW_TO_SEND = (f"send metadata '{AUTHORIZATION_METADATA_KEY}: Bearer <token>' (the Python client, the CLI "
                f"and the agent read it from --token-file or {TOKEN_ENV})")


def bearer_token(values: Sequence[str]) -> str | None:
    """The token of the authorization metadata (None when there is none); Unauthenticated when
    it is not exactly one 'Bearer <token>'."""
    if not values:
        return None
    if len(values) > 1:
        raise Unauthenticated(f"send one '{AUTHORIZATION_METADATA_KEY}' metadata entry, not {len(values)}")
    scheme, _sep, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(f"the '{AUTHORIZATION_METADATA_KEY}' metadata must read 'Bearer <token>'; {_HOW_TO_SEND}")
    return token


class AccessPolicy:
    """Decides, for each call, who the caller is and whether it may call the method."""

    def __init__(self, tokens: TokenFile | None, *, client_certificates: bool = False,
                 keda_scaler_open: bool = False) -> None:
        self.tokens = tokens
        self.client_certificates = client_certificates
        self.keda_scaler_open = keda_scaler_open

    @property
    def enabled(self) -> bool:
        """Whether callers are authenticated at all (tokens, or client certificates)."""
        return self.tokens is not None or self.client_certificates

    def is_open(self, method: str) -> bool:
        """Whether `method` needs no credentials at all."""
        service = service_of(method)
        return (not self.enabled or service in OPEN_SERVICES
                or (self.keda_scaler_open and service == _EXTERNAL_SCALER))

    def admit(self, method: str, authorization: Sequence[str], certificate_cn: str | None) -> Caller:
        """The caller of `method`, or Unauthenticated / PermissionDenied saying what is missing."""
        if self.is_open(method):
            return ANONYMOUS
        service = service_of(method)
        tokens = self.tokens
        if tokens is None:
            # Client certificates only: the handshake already verified the caller's certificate.
            return Caller(certificate_cn=certificate_cn or "")
        token = bearer_token(authorization)
        if token is None:
            if certificate_cn is not None and service in CERTIFICATE_SERVICES:
                return Caller(certificate_cn=certificate_cn)
            raise Unauthenticated(f"{method.lstrip('/')} needs a token: {_HOW_TO_SEND}")
        entry = tokens.identify(token)
        if entry is None:
            raise Unauthenticated("the token sent is not valid on this scheduler (not in its token file: revoked, "
                                  "mistyped, or meant for another scheduler); ask an admin for a valid one")
        if service in ANY_TOKEN_SERVICES:
            return Caller(token=entry)
        allowed = roles_for(method)
        if entry.role not in allowed:
            needs = " or ".join(sorted(role.value for role in allowed))
            raise PermissionDenied(f"token {entry.name!r} has role {entry.role.value}; {method.lstrip('/')} "
                                   f"needs role {needs}")
        return Caller(token=entry)

    def admit_http(self, authorization: str | None) -> Caller:
        """The caller of an HTTP API endpoint (all are reads: client or admin)."""
        if not self.enabled:
            return ANONYMOUS
        if self.tokens is None:
            raise Unauthenticated("the HTTP API authenticates by token only, and this scheduler has no token file "
                                  "(--auth-tokens); use the gRPC API with a client certificate instead")
        token = bearer_token([authorization] if authorization else [])
        if token is None:
            raise Unauthenticated("this endpoint needs a token: send the header 'Authorization: Bearer <token>'")
        entry = self.tokens.identify(token)
        if entry is None:
            raise Unauthenticated("the token sent is not valid on this scheduler (not in its token file: revoked, "
                                  "mistyped, or meant for another scheduler); ask an admin for a valid one")
        if entry.role not in HTTP_ROLES:
            raise PermissionDenied(f"token {entry.name!r} has role {entry.role.value}; the HTTP API needs role "
                                   "admin or client")
        return Caller(token=entry)

    def revocation(self, caller: Caller) -> asyncio.Event | None:
        """An event set when the caller's token is revoked; None when it can't be (no token)."""
        if caller.token is None or self.tokens is None:
            return None
        return self.tokens.revocation(caller.token)


# --- the caller of the current call -----------------------------------------------------------

_current: contextvars.ContextVar[tuple[Caller, asyncio.Event | None] | None] = contextvars.ContextVar(
    "switchyard_caller", default=None)


def current_caller() -> Caller | None:
    """The caller of the call being served (None when the scheduler authenticates nobody)."""
    found = _current.get()
    return found[0] if found is not None else None


def call_revoked() -> bool:
    """Whether the token of the call being served has been revoked since the call began."""
    found = _current.get()
    return found is not None and found[1] is not None and found[1].is_set()


def connect_problem(worker_id: str) -> str | None:
    """Why the current caller may not connect as `worker_id` (None when it may)."""
    caller = current_caller()
    if caller is None:
        return None
    if caller.token is not None:
        if caller.token.worker_id != worker_id:
            return (f"token {caller.token.name!r} is bound to worker {caller.token.worker_id!r}; "
                    f"it may not connect as {worker_id!r}")
        return None
    if caller.certificate_cn is not None and caller.certificate_cn != worker_id:
        return (f"the client certificate names worker {caller.certificate_cn!r} (its CN); it may not "
                f"connect as {worker_id!r}")
    return None


def certificate_cn(context: Context) -> str | None:
    """The verified client certificate's common name, or None when the caller presented none."""
    names = list(context.auth_context().get("x509_common_name") or ())
    if not names:
        return None
    name: object = names[0]
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


# --- the interceptor ----------------------------------------------------------------------------


async def _abort(context: Context, exc: Exception) -> None:
    status = status_of(exc)
    assert status is not None
    await context.abort(*status)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Admits or refuses every call before the servicer sees it, unary and streaming alike,
    and ends a stream whose token is revoked while it is open; as an interceptor, or as a
    handler wrapper applied at registration (`wrap`)."""

    def __init__(self, policy: AccessPolicy) -> None:
        self._policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        return handler if handler is None else self.wrap(handler_call_details.method, handler)

    def wrap(self, method: str, handler: Handler) -> Handler:
        """The handler behind the admission check: what `intercept_service` does on each call,
        done once where the method is registered (scheduler/api/registration.py)."""
        if self._policy.is_open(method):
            return handler
        h: Any = handler
        if h.unary_unary is not None:
            return h._replace(unary_unary=self._unary(h.unary_unary, method))  # type: ignore[no-any-return]
        if h.stream_unary is not None:
            return h._replace(stream_unary=self._unary(h.stream_unary, method))  # type: ignore[no-any-return]
        if h.unary_stream is not None:
            return h._replace(unary_stream=self._stream(h.unary_stream, method))  # type: ignore[no-any-return]
        if h.stream_stream is not None:
            return h._replace(stream_stream=self._stream(h.stream_stream, method))  # type: ignore[no-any-return]
        return handler

    async def _admit(self, method: str, context: Context) -> asyncio.Event | None:
        """Admit the call (abort it otherwise), remember its caller; the caller's revocation event."""
        authorization = [value if isinstance(value, str) else value.decode("utf-8", "replace")
                         for key, value in (context.invocation_metadata() or ())
                         if key == AUTHORIZATION_METADATA_KEY]
        try:
            caller = self._policy.admit(method, authorization, certificate_cn(context))
        except (Unauthenticated, PermissionDenied) as exc:
            log.debug("refused %s: %s", method, exc)
            await _abort(context, exc)
            raise AssertionError("unreachable") from None
        revoked = self._policy.revocation(caller)
        _current.set((caller, revoked))
        return revoked

    def _unary(self, behaviour: Any, method: str) -> Any:
        async def admitted(request: Any, context: Context) -> Any:
            await self._admit(method, context)
            return await behaviour(request, context)
        return admitted

    def _stream(self, behaviour: Any, method: str) -> Any:
        async def admitted(request: Any, context: Context) -> AsyncIterator[Any]:
            revoked = await self._admit(method, context)
            responses = behaviour(request, context)
            if not hasattr(responses, "__aiter__"):  # a servicer that writes with context.write
                await responses
                return
            if revoked is None:
                async for response in responses:
                    yield response
                return
            async for response in _until_revoked(responses, revoked):
                yield response
            if revoked.is_set():
                await _abort(context, Unauthenticated(
                    "the token this stream was opened with was revoked (it left the scheduler's token file, or its "
                    "role or worker changed); reconnect with a valid token"))
        return admitted


async def _until_revoked(responses: AsyncIterator[Any], revoked: asyncio.Event) -> AsyncIterator[Any]:
    """`responses` until they end or `revoked` is set (then the stream's servicer is cancelled
    where it waits, and its clean-up runs before this returns)."""
    revocation = asyncio.ensure_future(revoked.wait())
    following: asyncio.Future[Any] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(responses))
            done, _ = await asyncio.wait({following, revocation}, return_when=asyncio.FIRST_COMPLETED)
            if following not in done:
                return
            try:
                response = following.result()
            except StopAsyncIteration:
                return
            following = None
            yield response
    finally:
        for future in (following, revocation):
            if future is not None and not future.done():
                future.cancel()
        for future in (following, revocation):
            if future is not None:
                try:
                    await future
                except (asyncio.CancelledError, StopAsyncIteration, grpc.aio.AbortError):
                    pass
                except Exception:  # already raised above if it ended the stream; else a clean-up failure
                    log.debug("a stream's servicer failed while it was ended", exc_info=True)
        if hasattr(responses, "aclose"):
            with contextlib.suppress(RuntimeError):
                await responses.aclose()
