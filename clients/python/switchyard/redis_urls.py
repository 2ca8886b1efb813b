"""Redis URLs, plain or Sentinel-managed: reading them, showing them, and connecting with them.

One setting names the Redis that holds Switchyard's state and carries its Celery messages (the
scheduler's `redis_url`, the agent's `--state-redis-url`, the URL the scheduler's welcome tells
agents). It takes redis-py's own forms (`redis://`, `rediss://`, `unix://`) or, for a Redis
whose primary is chosen by Sentinel, the `redis+sentinel://` form other libraries share
(Redis-Sentinel-Url, redisvl, Prefect/docket):

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER_NAME[/DB]
        [?sentinel_username=U&sentinel_password=P]

HOST:PORT are the Sentinels (port 26379 when left out), MASTER_NAME the name they monitor the
primary under (`sentinel monitor MASTER_NAME ...`), DB the database (0 when left out). The
credentials before `@` are the Redis servers'; `sentinel_username`/`sentinel_password` those of
the Sentinels, when they require any.

A Redis that speaks TLS is reached with `rediss://`; its TLS options are query parameters, the
names redis-py and kombu both read (`TLS_QUERY_OPTIONS`), so one URL serves the scheduler, the
agent's Celery worker and its broker alike (docs/security.md):

    rediss://:PASSWORD@redis.internal:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/tls/redis-ca.crt
        [&ssl_certfile=/etc/tls/client.crt&ssl_keyfile=/etc/tls/client.key]

`check_url` refuses a TLS option on a `redis://` URL (it would be ignored: no TLS at all), an
unknown `ssl_*` option (a typo would silently weaken the check) and a TLS file that does not
exist. The certificate is verified unless `ssl_cert_reqs=none` says otherwise; `celery_broker`
writes `ssl_cert_reqs=required` into a broker URL that says nothing, because kombu would
otherwise connect without verifying. TLS to a Sentinel-managed Redis is not supported yet.

Everything that connects with such a URL goes through this module: the scheduler's asyncio
client (`async_client`), the worker side's synchronous clients (`sync_client`), and the Celery
app's broker settings for the same Redis (`celery_broker`, and `celery_broker_target` to read
them back for the agent's broker check). `display_url` is the form for logs and messages: it
never contains a password.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
"""The URL scheme of a Sentinel-managed Redis."""
PLAIN_SCHEMES = ("redis", "rediss", "unix")
"""redis-py's own URL schemes (one server, found at the address the URL names)."""
DEFAULT_SENTINEL_PORT = 26379
CELERY_SENTINEL_SCHEME = "sentinel"
"""kombu's scheme for one Sentinel of a `;`-separated broker URL."""
SENTINEL_QUERY_OPTIONS = ("sentinel_username", "sentinel_password")
"""The only options a `redis+sentinel://` URL takes."""
TLS_QUERY_OPTIONS = {
    "ssl_cert_reqs": "whether the server's certificate is verified: required (the default), optional or none",
    "ssl_ca_certs": "PEM file of the CA(s) the server's certificate must chain to (default: the system's)",
    "ssl_ca_path": "directory of CA certificates, instead of or besides ssl_ca_certs",
    "ssl_certfile": "this client's certificate (PEM), for a Redis with tls-auth-clients yes",
    "ssl_keyfile": "the private key (PEM) of ssl_certfile",
    "ssl_check_hostname": "true or false: whether the certificate must name the host dialled",
}
"""The TLS options a `rediss://` URL may carry, and what each does."""
TLS_FILE_OPTIONS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")
"""TLS options that name a file or directory (which must exist)."""
CERT_REQS_VALUES = ("required", "optional", "none")
URL_FORMS = (
    "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://..., unix:///PATH[?db=DB] or "
    "redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER_NAME[/DB]"
)


class RedisUrlError(ValueError):
    """A Redis URL that cannot be read; the message says what is wrong and the forms accepted."""


class Kind(enum.Enum):
    """How a URL finds its Redis."""

    PLAIN = "plain"
    SENTINEL = "sentinel"


@dataclass(frozen=True)
class SentinelTarget:
    """A Sentinel-managed Redis: where to ask, for which primary, and how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    """(host, port) of each Sentinel, in the order given."""
    master_name: str
    db: int = 0
    username: str | None = None
    """The Redis servers' user (ACL); None for the default user."""
    password: str | None = field(default=None, repr=False)
    """The Redis servers' password."""
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    def display(self) -> str:
        """The URL without credentials, for logs and messages."""
        hosts = ",".join(_host_port(host, port) for host, port in self.sentinels)
        return f"{SENTINEL_SCHEME}://{hosts}/{quote(self.master_name, safe='')}/{self.db}"


def kind(url: str) -> Kind:
    """PLAIN or SENTINEL, by the URL's scheme (the rest is not read)."""
    scheme = url.partition("://")[0].strip().lower()
    return Kind.SENTINEL if scheme == SENTINEL_SCHEME else Kind.PLAIN


def is_sentinel_url(url: str) -> bool:
    """True for a `redis+sentinel://` URL."""
    return kind(url) is Kind.SENTINEL


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a `redis+sentinel://` URL; RedisUrlError names what is wrong with it."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() != SENTINEL_SCHEME:
        raise RedisUrlError(f"{_shown(url)} is not a {SENTINEL_SCHEME}:// URL")
    rest, _, query_text = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts_text = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    sentinels = tuple(_sentinel_address(item, url) for item in hosts_text.split(","))
    names = [unquote(part) for part in path.split("/")] if path else []
    if names and names[-1] == "":
        names.pop()  # a trailing slash
    if not names or not names[0]:
        raise RedisUrlError(f"{_shown(url)} names no master: add /MASTER_NAME (the name the Sentinels "
                            f"monitor the primary under), e.g. {SENTINEL_SCHEME}://host:26379/mymaster/0")
    if len(names) > 2:
        raise RedisUrlError(f"{_shown(url)}: the path must be /MASTER_NAME or /MASTER_NAME/DB")
    db = 0
    if len(names) == 2:
        if not names[1].isdigit():
            raise RedisUrlError(f"{_shown(url)}: the database {names[1]!r} must be a number (/MASTER_NAME/DB)")
        db = int(names[1])
    query = parse_qs(query_text, keep_blank_values=True)
    unknown = sorted(set(query) - set(SENTINEL_QUERY_OPTIONS))
    if unknown:
        raise RedisUrlError(f"{_shown(url)}: unknown option(s) {', '.join(unknown)}; a {SENTINEL_SCHEME}:// "
                            f"URL takes only {', '.join(SENTINEL_QUERY_OPTIONS)}")
    return SentinelTarget(
        sentinels=sentinels, master_name=names[0], db=db, username=username, password=password,
        sentinel_username=(query.get("sentinel_username") or [""])[-1] or None,
        sentinel_password=(query.get("sentinel_password") or [""])[-1] or None,
    )


def check_url(url: str) -> None:
    """Raise RedisUrlError when `url` is not a Redis URL this module can connect with."""
    scheme = url.partition("://")[0].strip().lower()
    if scheme == SENTINEL_SCHEME:
        parse_sentinel_url(url)
        return
    if "://" not in url or scheme not in PLAIN_SCHEMES:
        hint = " (TLS to a Sentinel-managed Redis is not supported yet)" if scheme == "rediss+sentinel" else ""
        raise RedisUrlError(f"{_shown(url)} is not a Redis URL{hint}: use {URL_FORMS}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (reading it validates it)
    except ValueError as exc:
        raise RedisUrlError(f"{_shown(url)}: {exc}") from None
    _check_tls_options(url, scheme, parse_qs(parts.query, keep_blank_values=True))


def _check_tls_options(url: str, scheme: str, query: Mapping[str, list[str]]) -> None:
    """RedisUrlError for TLS options that would be ignored, misspelt or point at nothing."""
    tls_options = [name for name in query if name.startswith("ssl_")]
    if tls_options and scheme != "rediss":
        raise RedisUrlError(f"{_shown(url)} has TLS options ({', '.join(sorted(tls_options))}) but no TLS: "
                            f"write rediss:// for a Redis that speaks TLS")
    unknown = sorted(set(tls_options) - set(TLS_QUERY_OPTIONS))
    if unknown:
        raise RedisUrlError(f"{_shown(url)}: unknown TLS option(s) {', '.join(unknown)}; a rediss:// URL takes "
                            f"{', '.join(TLS_QUERY_OPTIONS)}")
    cert_reqs = (query.get("ssl_cert_reqs") or [""])[-1]
    if cert_reqs and cert_reqs not in CERT_REQS_VALUES:
        raise RedisUrlError(f"{_shown(url)}: ssl_cert_reqs must be one of {', '.join(CERT_REQS_VALUES)}; "
                            f"got {cert_reqs!r}")
    if bool(query.get("ssl_certfile")) != bool(query.get("ssl_keyfile")):
        raise RedisUrlError(f"{_shown(url)}: a client certificate needs both ssl_certfile and ssl_keyfile")
    for name in TLS_FILE_OPTIONS:
        path = (query.get(name) or [""])[-1]
        if path and not os.path.exists(path):
            raise RedisUrlError(f"{_shown(url)}: {name} {path} does not exist")


def display_url(url: str) -> str:
    """`url` as logs and messages may show it: no user, no password, no query options.

    `redis://u:pw@host:6379/0?password=pw` shows as `redis://host:6379/0`; a Sentinel URL as
    `redis+sentinel://h1:26379,h2:26379/mymaster/0`. An unreadable URL shows as a placeholder
    rather than risk printing a password.
    """
    if is_sentinel_url(url):
        try:
            return parse_sentinel_url(url).display()
        except RedisUrlError:
            return "<unreadable redis+sentinel URL>"
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unreadable Redis URL>"
    netloc = _host_port(host, port) if port is not None else (f"[{host}]" if ":" in host else host)
    return f"{parts.scheme}://{netloc}{parts.path}"


def password_of(url: str) -> str:
    """The Redis password `url` carries ('' for none): for scrubbing it out of error texts."""
    if is_sentinel_url(url):
        try:
            return parse_sentinel_url(url).password or ""
        except RedisUrlError:
            return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return unquote(parts.password or "") or (parse_qs(parts.query).get("password") or [""])[-1]


# --- clients ---------------------------------------------------------------------------------


class _TakeFreeAtOnce:
    """Mixed into a BlockingConnectionPool: a free connection is taken, and given back, at once.

    redis-py sends every command through the pool's condition, its timeout, an event dispatch
    and wait-time and connection-count bookkeeping (about a tenth of the scheduler's CPU per task
    under load). Here a connected, clean connection is taken without them, and given back
    without them when nobody waits and nothing is due at release (a reconnect, a re-auth, pool
    maintenance). Everything else takes redis-py's own path: a caller that has to wait or needs
    a new connection, everyone while a caller waits (a connection released to a waiter is the
    waiter's: the fast path must not starve it), a connection with unread data or a closed one.
    Attributes this redis-py does not have count as "take the slow path".
    """

    _available_connections: list[Any]
    _in_use_connections: set[Any]

    def _someone_waits(self) -> bool:
        # asyncio.Condition keeps its waiters in `_waiters` (CPython 3.11 to 3.14); unknown -> wait.
        return bool(getattr(getattr(self, "_condition", None), "_waiters", True))

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        pool: Any = self
        if not self._available_connections or self._someone_waits():
            return await super().get_connection(*args, **kwargs)  # type: ignore[misc]
        connection = self._available_connections.pop()
        self._in_use_connections.add(connection)
        try:
            # A connected socket with nothing unread is ready (what ensure_connection checks,
            # minus its retry wrapper); any doubt goes through ensure_connection itself.
            if not getattr(connection, "is_connected", False) or await connection.can_read():
                await pool.ensure_connection(connection)
        except BaseException:
            await pool.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        should_reconnect = getattr(connection, "should_reconnect", None)
        if (self._someone_waits() or getattr(self, "_in_maintenance", False)
                or getattr(connection, "_re_auth_token", None) is not None
                or (should_reconnect is not None and should_reconnect())
                or connection not in self._in_use_connections):
            await super().release(connection)  # type: ignore[misc]
            return
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)


class _BlockingConnectionPool(_TakeFreeAtOnce, aioredis.BlockingConnectionPool):
    """redis-py's BlockingConnectionPool, a free connection taken at once (`_TakeFreeAtOnce`)."""


class _BlockingSentinelConnectionPool(_TakeFreeAtOnce, AsyncSentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool (asks the Sentinels for the primary before each new connection,
    drops connections to a demoted one) with the waiting behaviour of BlockingConnectionPool: a
    caller waits for a free connection instead of failing beyond `max_connections`."""


def _sentinel_options(target: SentinelTarget, connection_options: Mapping[str, Any]) -> dict[str, Any]:
    """Options of the connections to the Sentinels themselves: their credentials, and the
    connect timeout for every wait (a Sentinel answers at once or not at all)."""
    connect_timeout = connection_options.get("socket_connect_timeout") or connection_options.get("socket_timeout")
    options: dict[str, Any] = {"socket_connect_timeout": connect_timeout, "socket_timeout": connect_timeout}
    if target.sentinel_username:
        options["username"] = target.sentinel_username
    if target.sentinel_password:
        options["password"] = target.sentinel_password
    return options


def _server_options(target: SentinelTarget, connection_options: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(connection_options)
    options["db"] = target.db
    if target.username:
        options["username"] = target.username
    if target.password is not None:
        options["password"] = target.password
    return options


def async_client(url: str, *, max_connections: int, pool_timeout: float, **connection_options: Any) -> aioredis.Redis:
    """An asyncio client of the Redis `url` names, over a pool of at most `max_connections` that
    makes callers wait up to `pool_timeout` seconds for a free one.

    `connection_options` are redis-py connection options (decode_responses, socket timeouts,
    health_check_interval ...). For a Sentinel URL the client asks the Sentinels for the primary
    whenever it opens a connection, and a connection to a primary that was demoted (READONLY)
    is dropped and reported as a connection error, so the next command finds the new primary.
    Close it with `aclose_client`.
    """
    if not is_sentinel_url(url):
        pool = _BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout, **connection_options)
        return aioredis.Redis.from_pool(pool)
    target = parse_sentinel_url(url)
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_options(target, connection_options))
    client: aioredis.Redis = sentinel.master_for(
        target.master_name, connection_pool_class=_BlockingSentinelConnectionPool,
        max_connections=max_connections, timeout=pool_timeout, **_server_options(target, connection_options),
    )
    return client


async def aclose_client(client: aioredis.Redis) -> None:
    """Close a client from `async_client`, and its connections to the Sentinels if any."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if manager is not None:
        await manager.aclose()


def sync_client(url: str, **connection_options: Any) -> redis.Redis:
    """A synchronous client of the Redis `url` names (redis-py's default pool); for a Sentinel
    URL it follows a failover like `async_client` does. Close it with `close_client`."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **connection_options)
    target = parse_sentinel_url(url)
    # redis-py's synchronous Sentinel module has no type annotations.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_options(target, connection_options))
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.master_name, **_server_options(target, connection_options))
    return client


def close_client(client: redis.Redis) -> None:
    """Close a client from `sync_client`, and its connections to the Sentinels if any."""
    client.close()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if manager is not None:
        manager.close()


# --- the Celery app's broker -------------------------------------------------------------------


@dataclass(frozen=True)
class CeleryBroker:
    """The Celery settings of a broker on a given Redis: `app.conf.broker_url` and
    `app.conf.broker_transport_options` (merge these into any options of your own)."""

    broker_url: str
    transport_options: dict[str, Any] = field(default_factory=dict)


def celery_broker(url: str) -> CeleryBroker:
    """The Celery broker settings for the Redis `url` names.

    A plain URL is its own broker URL; a `rediss://` one gets `ssl_cert_reqs=required` when it
    does not say, since kombu would otherwise not verify the server (redis-py does by default).
    A Sentinel URL becomes kombu's form: one
    `sentinel://[USER:PASSWORD@]HOST:PORT/DB` per Sentinel, joined by `;`, with the transport
    option `master_name` (and `sentinel_kwargs` carrying the Sentinels' credentials).
    """
    if not is_sentinel_url(url):
        scheme, _, _ = url.strip().partition("://")
        query = parse_qs(url.partition("?")[2].partition("#")[0], keep_blank_values=True)
        if scheme.lower() == "rediss" and "ssl_cert_reqs" not in query:
            url += ("&" if "?" in url else "?") + "ssl_cert_reqs=required"
        return CeleryBroker(url)
    target = parse_sentinel_url(url)
    credentials = ""
    if target.username or target.password is not None:
        credentials = quote(target.username or "", safe="")
        if target.password is not None:
            credentials += ":" + quote(target.password, safe="")
        credentials += "@"
    broker_url = ";".join(f"{CELERY_SENTINEL_SCHEME}://{credentials}{_host_port(host, port)}/{target.db}"
                          for host, port in target.sentinels)
    options: dict[str, Any] = {"master_name": target.master_name}
    sentinel_login = {key: value for key, value in (("username", target.sentinel_username),
                                                    ("password", target.sentinel_password)) if value}
    if sentinel_login:
        options["sentinel_kwargs"] = sentinel_login
    return CeleryBroker(broker_url, options)


def is_celery_sentinel_url(broker_url: str) -> bool:
    """True when a Celery broker URL uses kombu's Sentinel transport (`sentinel://...`)."""
    return broker_url.split(";", 1)[0].strip().partition("://")[0].lower() == CELERY_SENTINEL_SCHEME


def celery_broker_target(broker_url: str, transport_options: Mapping[str, Any] | None) -> SentinelTarget:
    """The Sentinel-managed Redis a Celery app with this `sentinel://...` broker URL and these
    transport options consumes from, read the way kombu reads them (credentials and database
    from the first URL, the master from `master_name`); RedisUrlError when it cannot tell."""
    options = transport_options or {}
    master_name = options.get("master_name")
    if not isinstance(master_name, str) or not master_name:
        raise RedisUrlError("the Celery app's Sentinel broker has no master name: set "
                            "broker_transport_options = {'master_name': NAME}")
    sentinels: list[tuple[str, int]] = []
    first = None
    for item in filter(None, (part.strip() for part in broker_url.split(";"))):
        try:
            parts = urlsplit(item)
            port = parts.port
        except ValueError as exc:
            raise RedisUrlError(f"the Celery broker URL part {_shown(item)} cannot be read: {exc}") from None
        if parts.scheme.lower() != CELERY_SENTINEL_SCHEME:
            continue
        first = first or parts
        sentinels.append((parts.hostname or "127.0.0.1", port or DEFAULT_SENTINEL_PORT))
    if first is None:
        raise RedisUrlError(f"{_shown(broker_url)} names no Sentinel (sentinel://HOST:PORT;...)")
    db_text = first.path.strip("/")
    if db_text and not db_text.isdigit():
        raise RedisUrlError(f"the Celery broker URL's database {db_text!r} must be a number")
    login = options.get("sentinel_kwargs") or {}
    return SentinelTarget(
        sentinels=tuple(sentinels), master_name=master_name, db=int(db_text or 0),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password is not None else None,
        sentinel_username=login.get("username") if isinstance(login, Mapping) else None,
        sentinel_password=login.get("password") if isinstance(login, Mapping) else None,
    )


def celery_broker_redis_url(broker_url: str, transport_options: Mapping[str, Any] | None = None) -> str:
    """The Redis URL (plain, or `redis+sentinel://`) of a Celery app's Redis broker, with its
    credentials: the inverse of `celery_broker`, for tools and tests that read the broker."""
    if not is_celery_sentinel_url(broker_url):
        return broker_url.split(";", 1)[0].strip()
    target = celery_broker_target(broker_url, transport_options)
    credentials = ""
    if target.username or target.password is not None:
        credentials = quote(target.username or "", safe="")
        if target.password is not None:
            credentials += ":" + quote(target.password, safe="")
        credentials += "@"
    hosts = ",".join(_host_port(host, port) for host, port in target.sentinels)
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in (
        ("sentinel_username", target.sentinel_username), ("sentinel_password", target.sentinel_password)) if value)
    url = f"{SENTINEL_SCHEME}://{credentials}{hosts}/{quote(target.master_name, safe='')}/{target.db}"
    return f"{url}?{query}" if query else url


# --- helpers -----------------------------------------------------------------------------------


def _host_port(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _sentinel_address(item: str, url: str) -> tuple[str, int]:
    """(host, port) of one `HOST[:PORT]` of a Sentinel list (`[v6]:PORT` for IPv6)."""
    item = item.strip()
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise RedisUrlError(f"{_shown(url)}: Sentinel address {item!r} is not [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise RedisUrlError(f"{_shown(url)}: a Sentinel address is empty; list them as HOST:PORT,HOST:PORT")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise RedisUrlError(f"{_shown(url)}: Sentinel port {port_text!r} must be a number 1-65535")
    return host.lower(), int(port_text) if port_text else DEFAULT_SENTINEL_PORT


def _shown(url: str) -> str:
    """A URL quoted in an error, without credentials or query options (which may hold a password)."""
    text = url.strip().partition("?")[0].partition("#")[0]
    scheme, sep, rest = text.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return repr(f"{scheme}{sep}{netloc}{slash}{path}")
