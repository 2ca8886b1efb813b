"""Does the Celery app consume the Redis the scheduler dispatches to? The agent's start-up check.

The scheduler writes each hand-out's Celery message into its own Redis (the state Redis the
welcome names), in the same script that commits the hand-out. A Celery app whose broker is another
Redis — another server, port or database — would never see one of those messages, and every
hand-out to it would wait for the scheduler's start deadline. So the agent compares the two before
its Celery worker consumes anything, and refuses to start on a mismatch.

Two URLs name the same Redis when their transport (plain, TLS or Unix socket), host, port and
database agree; credentials and options are ignored. Hosts agree when written alike (any case),
when they are `localhost` and a loopback address, or when they resolve to a common address. Both
kombu's forms (`redis://h:p/db`, `redis+socket:///path?virtual_host=db`) and redis-py's
(`?db=N`, `unix:///path?db=N`) are read. Of several `;`-separated failover URLs the first is
judged; another transport (`amqp://...`, or no broker_url at all: Celery's default) is different; a
Sentinel URL names the Sentinels, not the Redis, and is reported as not checked.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

DEFAULT_PORT = 6379
_PLAIN, _TLS, _SOCKET = "redis", "rediss", "unix"
_SCHEMES = {"redis": _PLAIN, "rediss": _TLS, "unix": _SOCKET, "redis+socket": _SOCKET, "socket": _SOCKET}
_UNJUDGED = {"sentinel"}
"""Schemes whose URL names Sentinels rather than the Redis they point to."""
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}

CELERY_DEFAULT_BROKER = "amqp://guest@localhost:5672//"
"""What Celery connects to when the app sets no broker_url."""


class Verdict(enum.Enum):
    """The outcome of comparing the broker with the state Redis."""

    SAME = "same"
    DIFFERENT = "different"
    UNKNOWN = "unknown"
    """The broker URL cannot be compared (Sentinel): not checked."""


@dataclass(frozen=True)
class RedisLocation:
    """Where a Redis URL points, with everything that does not change *which* Redis left out."""

    transport: str
    """redis, rediss (TLS) or unix."""
    host: str
    """Lower-cased host name or address, or the socket path for unix."""
    port: int
    """TCP port; 0 for a Unix socket."""
    db: int


def redis_location(url: str) -> RedisLocation | None:
    """Where `url` points, or None when it is not a Redis URL (another transport, Sentinel, junk)."""
    first = url.split(";", 1)[0].strip()
    try:
        parts = urlsplit(first)
        port = parts.port
    except ValueError:
        return None
    transport = _SCHEMES.get(parts.scheme.lower())
    if transport is None:
        return None
    query = parse_qs(parts.query)
    db_text = (query.get("db") or query.get("virtual_host") or [""])[0]
    if transport == _SOCKET:
        path = parts.path or parts.netloc
        if not path:
            return None
        location_host, location_port = path, 0
    else:
        location_host, location_port = _normal_host(parts.hostname or "localhost"), port or DEFAULT_PORT
        # kombu and redis-py both read the database from the path ("/2") when no ?db= says otherwise.
        db_text = db_text or parts.path.strip("/")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        return None
    return RedisLocation(transport, location_host, location_port, db)


def redact(url: str) -> str:
    """`url` without its password (and user), for logs and messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None and parts.username is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unreadable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def resolve_host(host: str) -> frozenset[str]:
    """Addresses `host` resolves to (empty when it does not resolve)."""
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except (OSError, UnicodeError):
        return frozenset()


def compare_broker(
    broker_url: str,
    state_redis_url: str,
    resolve: Callable[[str], frozenset[str]] = resolve_host,
) -> tuple[Verdict, str]:
    """Whether the Celery broker is the state Redis, with a one-line explanation.

    `resolve` maps a host name to its addresses; it is only called for hosts that differ as
    written, so a local setup never waits for DNS.
    """
    broker_url = broker_url or CELERY_DEFAULT_BROKER
    shown = f"the Celery app's broker {redact(broker_url)}"
    scheme = urlsplit(broker_url.split(";", 1)[0].strip()).scheme.lower()
    if scheme in _UNJUDGED:
        return Verdict.UNKNOWN, f"{shown} is a Sentinel URL; not checked against {redact(state_redis_url)}"
    broker = redis_location(broker_url)
    state = redis_location(state_redis_url)
    if state is None:
        return Verdict.UNKNOWN, f"the state Redis URL {redact(state_redis_url)} cannot be read; the broker was not checked"
    if broker is not None and _same(broker, state, resolve):
        return Verdict.SAME, f"{shown} is the scheduler's Redis"
    return Verdict.DIFFERENT, (
        f"{shown} is not the Redis the scheduler dispatches to ({redact(state_redis_url)}): point "
        "the app's broker_url at that Redis, or, if it is the same server under another address, "
        "pass that address as --state-redis-url"
    )


def _same(a: RedisLocation, b: RedisLocation, resolve: Callable[[str], frozenset[str]]) -> bool:
    if (a.transport, a.port, a.db) != (b.transport, b.port, b.db):
        return False
    if a.host == b.host:
        return True
    if a.transport == _SOCKET:
        return False
    addresses_a, addresses_b = resolve(a.host), resolve(b.host)
    return bool(addresses_a & addresses_b)


def _normal_host(host: str) -> str:
    """Lower-cased host, with `localhost` and the loopback addresses written one way."""
    host = host.lower().strip("[]")
    if host in _LOOPBACK_NAMES:
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_loopback and (address.version == 6 or str(address) == "127.0.0.1"):
        return "127.0.0.1"
    return str(address)
