"""The one place that builds and wires the scheduler: settings, store, dispatcher, engine, servers."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from switchyard.v1 import agent_pb2, agent_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

from scheduler.api import keda
from scheduler.api.auth import AccessPolicy, AuthInterceptor, TokenFile
from scheduler.api.decoding import safe_decoding
from scheduler.api.grpc_metrics import MetricsInterceptor
from scheduler.api.http_api import HttpApi
from scheduler.api.registration import HandlerWrapper, WrappingRegistrar
from scheduler.api.servicers import AgentGatewayServicer, SchedulerServicer
from scheduler.api.tls import ServingCertificate
from scheduler.config import ConfigError, load_settings
from scheduler.dispatch import CeleryMessages
from scheduler.engine import Engine, cancel_and_wait
from scheduler.leadership import Leadership, advertised
from scheduler.metrics import Metrics
from scheduler.settings import Settings
from scheduler.state.connection import ReplicaWait, RoundTrips
from scheduler.state.store import RedisState

log = logging.getLogger("switchyard.scheduler.main")
_T = TypeVar("_T")

SERVICE_NAMES = (
    scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"].full_name,
    keda.SERVICE_NAME,
)


class StartupError(Exception):
    """The scheduler cannot start; the message says what to change (printed as one line)."""


def split_host_port(address: str) -> tuple[str, int]:
    """HOST:PORT (an empty host means every interface; port 0 asks the system for a free one)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {address!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True)
class Security:
    """What protects the listeners: the serving certificate (TLS), the token file and the
    access policy built on them (scheduler/api/auth.py, scheduler/api/tls.py)."""

    certificate: ServingCertificate | None
    tokens: TokenFile | None
    policy: AccessPolicy

    @classmethod
    def from_settings(cls, settings: Settings) -> Security:
        """Read the certificate and token files; ConfigError (one line) when they do not load."""
        certificate = (ServingCertificate(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
                       if settings.tls_cert_file else None)
        tokens = TokenFile(settings.auth_tokens_file) if settings.auth_tokens_file else None
        policy = AccessPolicy(tokens, client_certificates=bool(certificate and certificate.client_certificates_required),
                              keda_scaler_open=settings.keda_scaler_open)
        return cls(certificate, tokens, policy)

    @property
    def secured(self) -> bool:
        """TLS on, and callers authenticated (by token or client certificate)."""
        return self.certificate is not None and self.policy.enabled

    def missing(self) -> str:
        """What a network-facing scheduler still lacks, in flag names."""
        lacking = []
        if self.certificate is None:
            lacking.append("TLS (--tls-cert, --tls-key)")
        if not self.policy.enabled:
            lacking.append("authentication (--auth-tokens, or --tls-client-ca)")
        return " and ".join(lacking)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) reaches this machine only: every address it
    resolves to is a loopback one. A name that does not resolve counts as not loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def exposure_problem(settings: Settings, security: Security) -> str | None:
    """Why the scheduler must not start as configured: a listener on a non-loopback address
    without TLS and authentication, unless `insecure` says to accept it. None when it may."""
    if security.secured or settings.insecure:
        return None
    exposed = [f"{flag} {address}" for flag, address in (("--listen", settings.listen),
                                                         ("--metrics-listen", settings.metrics_listen))
               if address and not is_loopback(split_host_port(address)[0])]
    if not exposed:
        return None
    return (f"refusing to listen on a network address ({', '.join(exposed)}) without {security.missing()}: "
            "configure them (docs/security.md), listen on 127.0.0.1, or pass --insecure to accept a "
            "scheduler anyone who reaches it can use")


def security_summary(security: Security) -> str:
    """How the listeners are protected, for the start-up log line (file names only)."""
    if security.certificate is None:
        transport = "no TLS"
    else:
        transport = "TLS" + (" with client certificates required" if security.certificate.client_certificates_required
                             else "")
    tokens = (f"tokens from {security.tokens.path} ({len(security.tokens.entries)})" if security.tokens is not None
              else "no tokens")
    return f"{transport}, {tokens}"


def server_options(settings: Settings) -> list[tuple[str, int]]:
    # Payloads up to max_payload_bytes must fit, plus room for the rest of the message; never unlimited.
    limit = settings.max_payload_bytes + 1024 * 1024
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Agents ping every 10 s; allow it, and ping them too so half-open streams die.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC sets SO_REUSEPORT by default: a second scheduler on the same port would start
        # silently and take half the traffic. Refuse instead.
        ("grpc.so_reuseport", 0),
    ]


@dataclass
class Scheduler:
    """A running scheduler: gRPC server plus its side of the leader lease (and, while it leads,
    the engine)."""

    leadership: Leadership
    state: RedisState
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer  # type: ignore[name-defined]
    lease_loop: asyncio.Task[None]
    watches: list[asyncio.Task[None]] = field(default_factory=list)
    """Background checks of the security files (the token file's poll)."""

    @property
    def engine(self) -> Engine | None:
        """The engine of the current term (None while this scheduler does not lead)."""
        return self.leadership.engine

    async def wait_serving(self, timeout: float) -> None:
        """Wait until this scheduler leads and serves; StartupError after `timeout` seconds."""
        async def serving() -> None:
            while not self.leadership.serving:
                await self.leadership.wait_changed()
        try:
            await asyncio.wait_for(serving(), timeout)
        except TimeoutError:
            raise StartupError(f"not serving after {timeout:.0f}s ({self.leadership.role}; "
                               f"state in {self.state.location})") from None

    async def stop(self, grace: float = 5.0) -> None:
        """Stop serving first, hand the lease back (a standby takes over at once), then close."""
        await self.leadership.resign()
        await cancel_and_wait([self.lease_loop, *self.watches])
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.state.close()


async def start(settings: Settings, metrics: Metrics | None = None, *, wait_serving: float | None = 30.0,
                security: Security | None = None) -> Scheduler:
    """Start serving gRPC at once (NOT_SERVING until this scheduler leads), then take part in the
    leader election. With `wait_serving`, return only once leading (tests, a lone scheduler);
    the returned port is the bound one (listen on :0 works). `security` defaults to what the
    settings name (ConfigError when its files do not load; StartupError when a network address
    would be served without TLS and authentication)."""
    metrics = metrics or Metrics()
    security = security or Security.from_settings(settings)
    problem = exposure_problem(settings, security)
    if problem is not None:
        raise StartupError(problem)
    state = RedisState(settings.redis_url, settings.key_prefix,
                       ReplicaWait(settings.submit_wait_replicas, settings.submit_wait_timeout_seconds))
    metrics.count_submit_replica_timeouts(lambda: state.replica_timeouts)
    # Each handler is wrapped once as it is registered (api/registration.py), innermost first:
    # requests that do not decode are answered INVALID_ARGUMENT (api/decoding.py), callers are
    # admitted, and metrics see every call first, so refusals are counted with their code
    # (Unauthenticated, PermissionDenied).
    wrappers: list[HandlerWrapper] = [safe_decoding]
    if security.policy.enabled:
        wrappers.append(AuthInterceptor(security.policy).wrap)
    wrappers.append(MetricsInterceptor(metrics).wrap)
    server = grpc.aio.server(options=server_options(settings))
    try:
        if security.certificate is not None:
            port = server.add_secure_port(settings.listen, security.certificate.grpc_credentials())
        else:
            port = server.add_insecure_port(settings.listen)
    except RuntimeError:
        port = 0
    if port == 0:
        await state.close()
        raise StartupError(f"cannot listen on {settings.listen}: the address is in use or not valid "
                           "(is another scheduler running? choose another --listen)")
    address = settings.advertise_address or advertised(settings.listen, port)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_updates: set[asyncio.Task[None]] = set()

    def on_serving(serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        metrics.leader.set(1 if serving else 0)
        for name in ("", *SERVICE_NAMES):
            update = asyncio.create_task(health_servicer.set(name, status))
            health_updates.add(update)
            update.add_done_callback(health_updates.discard)

    leadership = Leadership(
        state, lambda: Engine(settings, state, CeleryMessages(), metrics), address,
        settings.leader_lease_seconds, on_serving,
    )
    # Read at scrape time: up once a lease claim has answered, down while the last one failed.
    metrics.state_store_up.source = lambda: leadership.outage is None and bool(leadership.instance)
    registrar = WrappingRegistrar(server, wrappers)
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerServicer(leadership), registrar)  # type: ignore[no-untyped-call]
    agent_pb2_grpc.add_AgentGatewayServicer_to_server(AgentGatewayServicer(leadership), registrar)  # type: ignore[no-untyped-call]
    keda.add_to_server(leadership, registrar)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    if settings.reflection:
        # What reflection.enable_server_reflection does for an aio server, through the registrar.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(  # type: ignore[attr-defined]
                (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)),
            registrar)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    running = Scheduler(leadership, state, server, port, health_servicer,
                        asyncio.create_task(leadership.run(), name="leadership"))
    if security.tokens is not None:
        running.watches.append(asyncio.create_task(security.tokens.watch(), name="token-file-watch"))
    if wait_serving is not None:
        try:
            await running.wait_serving(wait_serving)
        except StartupError:
            await running.stop(0)
            raise
    return running


async def serve(settings: Settings) -> None:
    security = Security.from_settings(settings)
    problem = exposure_problem(settings, security)
    if problem is not None:
        raise StartupError(problem)
    if settings.insecure and not security.secured:
        log.warning("--insecure: serving without %s; anyone who can reach %s%s can submit, cancel, drain, "
                    "purge and connect as any worker", security.missing(), settings.listen,
                    f" or {settings.metrics_listen}" if settings.metrics_listen else "")
    metrics = Metrics()
    metrics.count_round_trips(lambda: RoundTrips.count)
    metrics_at = "off"
    # One HTTP listener serves /metrics and the read-only JSON API (/api/v1/...).
    http_api = HttpApi(metrics.registry, security.policy)
    if settings.metrics_listen:
        host, port = split_host_port(settings.metrics_listen)
        try:
            bound = http_api.serve(host, port, security.certificate.ssl_context if security.certificate else None)
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {settings.metrics_listen}: {exc.strerror or exc} "
                               "(choose another --metrics-listen, or '' to turn metrics off)") from None
        metrics_at = f"{host}:{bound}"
    try:
        running = await start(settings, metrics, wait_serving=None, security=security)
        loop = asyncio.get_running_loop()
        http_api.attach(running.leadership, loop)
        log.info("scheduler serving gRPC on %s (port %d, advertised as %s), metrics on %s, state in %s; %s",
                 settings.listen, running.port, running.leadership.address, metrics_at, running.state.location,
                 security_summary(security))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down: not serving, handing the leader lease back")
        await running.stop()
        log.info("stopped")
    finally:
        http_api.close()


GC_THRESHOLDS = (50_000, 20, 100)
"""The collector's thresholds in the scheduler process (CPython's default: 700, 10, 10)."""


def tune_gc() -> None:
    """Collect garbage cycles less often, and never scan what start-up loaded.

    The scheduler holds every pending task in memory: hundreds of thousands of small objects
    that live until their task is handed out, and a SubmitBatch of 10,000 allocates some
    100,000 more. With CPython's default thresholds the collector ran a young collection every
    700 allocations and scanned the growing pending index again and again: a sixth of the
    CPU of a big SubmitBatch (docs/benchmarks.md). The scheduler makes few reference cycles,
    so young collections every 50,000 allocations lose nothing; `gc.freeze()` moves what is
    alive at start-up (modules, protobuf descriptors, the Celery app) out of every collection.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_on_loop(main: Coroutine[Any, Any, _T], event_loop: str) -> _T:
    """Run `main` on the event loop the `event_loop` setting names.

    uvloop (libuv's loop, as uvicorn runs on) takes less CPU per wake-up, callback and socket
    call than the standard library's loop: a SubmitTask costs the scheduler some 7% less CPU
    and the SubmitTask rate is 7-20% higher on it (docs/benchmarks.md). "auto" takes it where
    it is installed (a dependency on Linux and macOS) and the standard loop elsewhere.
    """
    if event_loop != "asyncio" and importlib.util.find_spec("uvloop") is not None:
        import uvloop  # optional: absent where it does not build (Windows)

        return uvloop.run(main)
    return asyncio.run(main)


def cli(argv: Sequence[str] | None = None) -> int:
    """Console entry point `switchyard-scheduler`."""
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"switchyard-scheduler: configuration error: {exc}", file=sys.stderr)
        return 2
    tune_gc()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        run_on_loop(serve(settings), settings.event_loop)
    except (ConfigError, StartupError) as exc:
        print(f"switchyard-scheduler: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
