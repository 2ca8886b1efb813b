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
judged; another transport (`amqp://...`, or no broker_url at all: Celery's default) is different.

A Sentinel-managed state Redis (`redis+sentinel://S1,S2/MASTER/DB`, `switchyard.redis_urls`) is
the same as a Celery broker on kombu's Sentinel transport (`sentinel://S1;sentinel://S2/DB` with
the transport option `master_name`) when the master name and the database agree and the two name
at least one Sentinel in common (hosts compared as above): a group of Sentinels monitors one
primary under one name. A Sentinel-managed Redis on one side and a single server on the other
are different: after a failover they would part.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from switchyard.redis_urls import (
    RedisUrlError,
    SentinelTarget,
    celery_broker,
    celery_broker_target,
    display_url,
    is_celery_sentinel_url,
    is_sentinel_url,
    parse_sentinel_url,
)

DEFAULT_PORT = 6379
_PLAIN, _TLS, _SOCKET = "redis", "rediss", "unix"
_SCHEMES = {"redis": _PLAIN, "rediss": _TLS, "unix": _SOCKET, "redis+socket": _SOCKET, "socket": _SOCKET}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}

CELERY_DEFAULT_BROKER = "amqp://guest@localhost:5672//"
"""What Celery connects to when the app sets no broker_url."""


class Verdict(enum.Enum):
    """The outcome of comparing the broker with the state Redis."""

    SAME = "same"
    DIFFERENT = "different"
    UNKNOWN = "unknown"
    """The state Redis URL cannot be read: not checked."""


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
    """`url` without its password (and user), for logs and messages; each part of a
    `;`-separated failover URL on its own."""
    if is_sentinel_url(url):
        return display_url(url)
    if ";" in url:
        return ";".join(redact(part) for part in url.split(";"))
    try:
        parts = urlsplit(url)
        # redis-py also reads a password from the query (`?password=...`): it goes too.
        query_items = parts.query.split("&") if parts.query else []
        query = "&".join(item for item in query_items if item.partition("=")[0].lower() != "password")
        if parts.password is None and parts.username is None and query == parts.query:
            return url
        netloc = parts.netloc
        if parts.password is not None or parts.username is not None:
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unreadable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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
    broker_transport_options: Mapping[str, Any] | None = None,
) -> tuple[Verdict, str]:
    """Whether the Celery broker is the state Redis, with a one-line explanation.

    `resolve` maps a host name to its addresses; it is only called for hosts that differ as
    written, so a local setup never waits for DNS. `broker_transport_options` are the app's
    (a Sentinel broker's `master_name` is there).
    """
    broker_url = broker_url or CELERY_DEFAULT_BROKER
    if is_sentinel_url(state_redis_url) or is_celery_sentinel_url(broker_url):
        return _compare_sentinel(broker_url, broker_transport_options, state_redis_url, resolve)
    shown = f"the Celery app's broker {redact(broker_url)}"
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


def _compare_sentinel(
    broker_url: str,
    transport_options: Mapping[str, Any] | None,
    state_redis_url: str,
    resolve: Callable[[str], frozenset[str]],
) -> tuple[Verdict, str]:
    """compare_broker when either side goes through Sentinels."""
    shown = f"the Celery app's broker {redact(broker_url)}"
    if not is_sentinel_url(state_redis_url):
        return Verdict.DIFFERENT, (
            f"{shown} goes through Sentinels, but the scheduler dispatches to the single Redis "
            f"{redact(state_redis_url)}: give the scheduler (redis_url) and this agent (--state-redis-url) "
            "the redis+sentinel:// URL of the same Sentinels, or point broker_url at that Redis"
        )
    try:
        state = parse_sentinel_url(state_redis_url)
    except RedisUrlError as exc:
        return Verdict.UNKNOWN, f"the state Redis URL cannot be read ({exc}); the broker was not checked"
    # What the app should say, credentials left out (they are the user's to add).
    wanted = celery_broker(state.display())
    advice = (f"set the app's broker_url = {wanted.broker_url!r} and broker_transport_options = "
              f"{{'master_name': {state.master_name!r}}} (switchyard.redis_urls.celery_broker(URL) gives both)")
    where = f"the Sentinel-managed Redis the scheduler dispatches to ({state.display()})"
    if not is_celery_sentinel_url(broker_url):
        return Verdict.DIFFERENT, f"{shown} is not {where}: {advice}"
    try:
        broker = celery_broker_target(broker_url, transport_options)
    except RedisUrlError as exc:
        return Verdict.DIFFERENT, f"{exc}; it must be {where}: {advice}"
    problems = []
    if broker.master_name != state.master_name:
        problems.append(f"master {broker.master_name!r} is not {state.master_name!r}")
    if broker.db != state.db:
        problems.append(f"database {broker.db} is not {state.db}")
    if not _common_sentinel(broker, state, resolve):
        problems.append("it names none of the same Sentinels")
    if problems:
        return Verdict.DIFFERENT, f"{shown} (master {broker.master_name!r}) is not {where}: {'; '.join(problems)}; {advice}"
    return Verdict.SAME, f"{shown} (master {broker.master_name!r}) is the scheduler's Sentinel-managed Redis"


def _common_sentinel(a: SentinelTarget, b: SentinelTarget, resolve: Callable[[str], frozenset[str]]) -> bool:
    """True when the two name at least one Sentinel in common."""
    for host_a, port_a in a.sentinels:
        for host_b, port_b in b.sentinels:
            if port_a == port_b and _same(RedisLocation(_PLAIN, _normal_host(host_a), port_a, 0),
                                          RedisLocation(_PLAIN, _normal_host(host_b), port_b, 0), resolve):
                return True
    return False


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
