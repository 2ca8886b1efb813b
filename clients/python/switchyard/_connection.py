"""The client's gRPC plumbing: the channels (keepalive, message size limits), the stubs,
deadlines, following the leader among several schedulers, and the mapping of every
``grpc.RpcError`` to a typed :mod:`switchyard.exceptions` error.

:class:`Connection` is the base the call groups of :class:`~switchyard.client.SchedulerClient`
build on; nothing else in the package touches a channel.

Several schedulers may share one Redis; one leads, the others are standbys that answer every
call with ``UNAVAILABLE`` and name the leader in the ``switchyard-leader`` trailing metadata
(:data:`switchyard.wire.LEADER_METADATA_KEY`). A call that gets ``UNAVAILABLE`` goes to that
leader when it is one of the client's addresses, else to the next address; after every address
has failed once it backs off (exponentially, with jitter) and tries again, until
``failover_timeout`` seconds have passed. The address that last answered is where the next call
goes first. ``DEADLINE_EXCEEDED`` (a scheduler that hangs) is retried the same way, but only for
calls that are safe to repeat; no other status is retried. Those rules live in
:mod:`switchyard._failover` (no I/O), shared with the asyncio client (:mod:`switchyard.aio`);
what each operation sends and returns lives in :mod:`switchyard._calls`.

Every channel, to each of the addresses, is opened the same way (:mod:`switchyard.security`):
TLS when a CA, a client certificate or ``tls=True`` is given, and the bearer token, when there is
one, on every call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc

from switchyard._calls import ResultT, UnaryCall
from switchyard._failover import Failover, should_retry
from switchyard.exceptions import InvalidArgument, SwitchyardError, from_rpc_error
from switchyard.security import BearerTokenInterceptor, open_channel, resolve_tls, resolve_token
from switchyard.v1 import scheduler_pb2_grpc
from switchyard.wire import DEFAULT_SCHEDULER_PORT, LEADER_METADATA_KEY

__all__ = [
    "DEFAULT_FAILOVER_TIMEOUT",
    "DEFAULT_TARGET",
    "Connection",
    "Failover",
    "leader_hint",
    "parse_addresses",
    "with_default_port",
]

DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_SCHEDULER_PORT}"
"""Where the scheduler listens unless told otherwise."""

_TARGET_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")
"""gRPC target strings that are passed through as they are (they carry their own port, if any)."""

DEFAULT_FAILOVER_TIMEOUT = 30.0
"""How long, in seconds, a call keeps trying the schedulers after ``UNAVAILABLE``: long enough
for a standby to take over (5 s by default) or a scheduler to restart."""

log = logging.getLogger("switchyard.client")


def with_default_port(address: str) -> str:
    """``address`` with the scheduler's port (50051) added when it names a host only:
    ``"sched"`` → ``"sched:50051"``, ``"[::1]"`` → ``"[::1]:50051"``. (gRPC itself would dial
    443.) gRPC target strings with a scheme (``dns:``, ``unix:``, ...) are left as they are."""
    if address.startswith(_TARGET_SCHEMES) or "/" in address:
        return address
    if address.startswith("["):
        return address if "]:" in address else f"{address}:{DEFAULT_SCHEDULER_PORT}"
    if address.count(":") > 1:  # a bare IPv6 address
        return f"[{address}]:{DEFAULT_SCHEDULER_PORT}"
    return address if ":" in address else f"{address}:{DEFAULT_SCHEDULER_PORT}"


def parse_addresses(target: str | Sequence[str]) -> tuple[str, ...]:
    """The scheduler addresses in ``target``: ``"HOST:PORT"``, several as
    ``"HOST:PORT,HOST:PORT"``, or a sequence of such strings; a host without a port gets the
    scheduler's, 50051. Blanks and repeats are dropped, the order is kept (it is the order in
    which they are tried)."""
    parts = [target] if isinstance(target, str) else list(target)
    addresses: list[str] = []
    for part in parts:
        for piece in str(part).split(","):
            stripped = piece.strip()
            address = with_default_port(stripped) if stripped else ""
            if address and address not in addresses:
                addresses.append(address)
    if not addresses:
        raise InvalidArgument(
            f"no scheduler address in {target!r}: give HOST:PORT, or several as HOST:PORT,HOST:PORT"
        )
    return tuple(addresses)


def leader_hint(error: grpc.RpcError) -> str | None:
    """The leader's address a standby named in the error's trailing metadata, if any."""
    trailing_metadata = getattr(error, "trailing_metadata", None)
    if not callable(trailing_metadata):
        return None
    for key, value in trailing_metadata() or ():
        if key == LEADER_METADATA_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            return text.strip() or None
    return None


def _channel_options(max_message_mb: int, keepalive_time_s: float) -> list[tuple[str, int]]:
    max_bytes = max_message_mb * 1024 * 1024
    return [
        # Tasks may carry ~10 MiB payloads; gRPC's default 4 MiB receive cap would reject them.
        ("grpc.max_send_message_length", max_bytes),
        ("grpc.max_receive_message_length", max_bytes),
        # A half-open TCP connection can look alive for hours; keepalive pings during calls
        # (watch streams especially) find out. The scheduler must permit this ping rate.
        ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class Connection:
    """Channels to one or several schedulers, and the leader among them.

    ``target`` is ``HOST:PORT``, several schedulers as ``"HOST:PORT,HOST:PORT"`` or a list of
    addresses (any gRPC target string works as one address). ``timeout`` is the deadline, in
    seconds, of every unary call (each attempt); ``max_message_mb`` raises gRPC's send/receive
    limits so large payloads and results fit. ``channel`` replaces the channel the connection
    would open to the first address (the caller then keeps ownership of it).

    ``failover_timeout`` is how long, in seconds, a call keeps trying after ``UNAVAILABLE``: it
    follows a standby's pointer to the leader, tries the other addresses, backs off between
    rounds, and remembers the address that answered for later calls. With 0 it tries each
    address once and never waits. Until the client has reached a scheduler once, a call also
    tries each address only once, so a wrong address or a scheduler that is not running is
    reported at once instead of waited for.
    ``auto_idempotency_keys`` makes ``submit`` give a task without an idempotency key one of its
    own, so that retrying it cannot create a duplicate.

    Security (docs/security.md): ``tls_ca`` (a PEM file) turns TLS on and is the CA the
    schedulers' certificates must chain to; ``tls=True`` turns it on with the system's roots;
    ``tls_cert`` and ``tls_key`` are the client's certificate for mTLS; ``tls_server_name`` the
    name to expect in the schedulers' certificates when it is not the host dialled. ``token``
    (or ``token_file``, read again whenever it changes) is sent on every call as
    ``authorization: Bearer <token>``. Left out, they come from ``SWITCHYARD_TOKEN``,
    ``SWITCHYARD_TOKEN_FILE`` and ``SWITCHYARD_TLS_CA``/``_CERT``/``_KEY``/``_SERVER_NAME``;
    ``tls=False`` ignores the TLS variables. A file that cannot be read, or a malformed token,
    raises :class:`~switchyard.security.CredentialError` (an ``InvalidArgument``) here, before
    any call.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        timeout: float = 10.0,
        max_message_mb: int = 16,
        keepalive_time_s: float = 60.0,
        channel: grpc.Channel | None = None,
        failover_timeout: float = DEFAULT_FAILOVER_TIMEOUT,
        auto_idempotency_keys: bool = True,
        tls: bool | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if failover_timeout < 0:
            raise InvalidArgument(f"failover_timeout must be >= 0 seconds; got {failover_timeout!r}")
        self.addresses: tuple[str, ...] = parse_addresses(target)
        """Every scheduler address given, in the order they are tried."""
        self.target = ",".join(self.addresses)
        """The addresses as one comma-separated string (one address: just it)."""
        self.timeout = timeout
        self.failover_timeout = failover_timeout
        self.auto_idempotency_keys = auto_idempotency_keys
        self._options = _channel_options(max_message_mb, keepalive_time_s)
        self.tls = resolve_tls(tls=tls, ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key,
                               server_name=tls_server_name)
        """The TLS settings every channel uses; None: plaintext."""
        self._tls_credentials = self.tls.credentials() if self.tls is not None else None
        self._token = resolve_token(token, token_file)
        self._lock = threading.Lock()
        self._given_channel = channel
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, scheduler_pb2_grpc.SchedulerStub] = {}
        self._current = self.addresses[0]
        self._reached = False

    @property
    def current_address(self) -> str:
        """Where the next call goes first: the address that answered last (the leader)."""
        return self._current

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channels the connection opened (a channel passed in stays open)."""
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
            self._stubs.clear()
        for channel in channels:
            channel.close()

    # --- plumbing for the call groups ---------------------------------------------------

    def _stub_for(self, address: str) -> scheduler_pb2_grpc.SchedulerStub:
        """The stub for ``address``; its channel opens on first use."""
        with self._lock:
            stub = self._stubs.get(address)
            if stub is None:
                if self._given_channel is not None and address == self.addresses[0]:
                    channel = self._given_channel
                    if self._token is not None:
                        channel = grpc.intercept_channel(channel, BearerTokenInterceptor(self._token))
                else:
                    channel = self._channels[address] = open_channel(
                        address, self._options, self.tls, self._token, credentials=self._tls_credentials)
                stub = self._stubs[address] = scheduler_pb2_grpc.SchedulerStub(channel)  # type: ignore[no-untyped-call]
            return stub

    def _answered(self, address: str) -> None:
        """``address`` served a call: it leads, so later calls start there."""
        self._current = address
        self._reached = True

    def _failover(self, *, announce_at_once: bool = False) -> Failover:
        """A fresh :class:`Failover` for one logical call that has just failed."""
        return Failover(self, announce_at_once=announce_at_once)

    @staticmethod
    def _wait_for_next_try(failover: Failover, failed: str, error: SwitchyardError, hint: str | None) -> str:
        """Where ``failover`` says to try next, after sleeping the backoff it asks for."""
        next_try = failover.next_try(failed, error, hint)
        if next_try.delay > 0:
            time.sleep(next_try.delay)
        return next_try.address

    def _run(self, call: UnaryCall[ResultT]) -> ResultT:
        """Run one operation of :mod:`switchyard._calls` and convert its response."""
        return call.result(self._call(call.rpc, call.request, repeatable=call.repeatable))

    def _call(self, rpc: str, request: Any, timeout: float | None = None, *, repeatable: bool = True) -> Any:
        """One unary call of the ``Scheduler`` method named ``rpc``, following the leader.

        Each attempt has the connection's deadline (or ``timeout``). ``UNAVAILABLE`` is retried
        as :class:`Failover` says; ``DEADLINE_EXCEEDED`` only when ``repeatable`` (the call has
        the same effect however often it runs). Any other failure raises its typed error at once.
        """
        per_attempt = self.timeout if timeout is None else timeout
        address = self._current
        failover: Failover | None = None
        while True:
            method: Callable[..., Any] = getattr(self._stub_for(address), rpc)
            try:
                response = method(request, timeout=per_attempt)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if not should_retry(error, repeatable):
                    self._reached = True  # a scheduler answered, even if with an error
                    raise error from None
                failover = failover or self._failover()
                address = self._wait_for_next_try(failover, address, error, leader_hint(exc))
                continue
            self._answered(address)
            if failover is not None:
                failover.recovered(address)
            return response
