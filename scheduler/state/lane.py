"""The hot path's own Redis connection: script calls pipelined on one socket, each reply read
straight off it.

redis-py sends a command through its retry wrapper, its pool, a health check, a packer that
encodes argument by argument, and a reply read that awaits the socket once per command. A
minimal gRPC service making one Redis call per request spent 87 µs of CPU per request more with
redis-py than with this; in the scheduler, whose group commit has about one call in flight,
a SubmitTask costs some 25 µs (6-7%) less (docs/benchmarks.md). Every state-changing operation
of the hot path is one fenced script call (`connection.FencedScript`) and any number of them
may be in flight at once: they are written here back to back on one connection, and one reader
task hands the replies, which Redis sends in the order it received the calls, to their callers.

The lifecycle stream's blocking read has a lane of its own (it would hold up every call
behind it). What stays with redis-py: pipelines (reads, and a submission's replica `WAIT`,
which blocks its connection by design), the leader lease (its renewal must never queue behind
a big SubmitBatch) and everything off the hot path. The connection itself is one taken from
redis-py's pool, so it is opened the pool's way: TLS, credentials, database, and for a
Sentinel URL the current primary.

Failures read as redis-py's own, so `connection.guarded` words them as before: a call whose
connection breaks, or whose reply takes longer than the socket timeout (one watchdog timer per
connection, not one timer per call), fails with `ConnectionError` / `TimeoutError`, and so do
the calls behind it on that connection; the next call opens a new one. Calls are not retried
here: a script that was written may have run, and its caller decides (every hot-path loop
retries its round; a client retries its submission, with an idempotency key if it has one).
A `READONLY` reply (a primary demoted by a failover) also drops the connection, so the next
call asks the Sentinels for the new primary.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

import hiredis
from redis import exceptions as redis_errors
from redis._parsers.base import BaseParser

log = logging.getLogger("switchyard.scheduler.state")

READ_CHUNK = 1 << 16
"""Bytes asked of the socket per read (the replies of many calls arrive in one)."""

_MORE = object()
"""What the reply reader returns while a reply is not complete yet."""


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in Redis's protocol (RESP): str as UTF-8, int and float as their digits
    (`repr`), bytes as they are. Packed by hiredis in C (a script call with a batch's arguments
    costs a third of packing it in Python)."""
    try:
        packed: bytes = hiredis.pack_command(args)
    except TypeError:
        wrong = [type(arg).__name__ for arg in args if type(arg) not in _PACKABLE]
        if not wrong:
            raise
        raise redis_errors.DataError(f"a Redis argument must be str, bytes, int or float, not {wrong[0]}") from None
    return packed


_PACKABLE = (str, bytes, int, float)
"""What a command's arguments may be (bool, a subclass of int, is not: Redis has no booleans)."""


class Sent:
    """A command `Lane.send` wrote: its reply to come, and the connection it went out on."""

    __slots__ = ("future", "opened")

    def __init__(self, future: asyncio.Future[Any], opened: _Open) -> None:
        self.future, self.opened = future, opened


class _Open:
    """One opened connection: redis-py's (given back to the pool when dropped), its streams,
    the reply reader and the task reading replies."""

    __slots__ = ("connection", "reader", "replies", "task", "writer")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        # redis-py's asyncio connection keeps its streams in these two attributes (4.2 to 8.x).
        self.reader: asyncio.StreamReader = connection._reader
        self.writer: asyncio.StreamWriter = connection._writer
        encoder = connection.encoder
        options: dict[str, Any] = {"protocolError": redis_errors.InvalidResponse,
                                   "replyError": BaseParser.parse_error, "notEnoughData": _MORE}
        if encoder.decode_responses:
            options.update(encoding=encoder.encoding, errors=encoder.encoding_errors)
        self.replies = hiredis.Reader(**options)
        self.task: asyncio.Task[None] | None = None


class Lane:
    """Commands pipelined on one Redis connection taken from `pool`, opened on first use and
    again after a failure; `on_write` is called once per command written (round-trip count).

    A caller cancelled while its command is in flight leaves the command to run (its reply is
    dropped); with `drop_on_cancel` the connection is closed instead, which is what a lane of
    blocking reads needs (Redis unblocks a read whose connection closes)."""

    def __init__(self, pool: Any, reply_timeout: float, on_write: Callable[[], None] = lambda: None,
                 *, drop_on_cancel: bool = False) -> None:
        self._pool = pool
        self._drop_on_cancel = drop_on_cancel
        self._reply_timeout = reply_timeout
        self._on_write = on_write
        self._open: _Open | None = None
        self._opening: asyncio.Future[None] | None = None
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._giving_back: set[asyncio.Task[None]] = set()
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply (an error reply is raised as redis-py's
        exception for it: ResponseError, NoScriptError, ReadOnlyError ...)."""
        (sent,) = await self.send(args)
        return await self.reply(sent)

    async def send(self, *commands: tuple[Any, ...]) -> list[Sent]:
        """Write `commands` in one write (one round trip); their replies, in order, are awaited
        with `reply` (or given up with `abandon`). Redis runs them in order on this connection,
        so a blocking read sent after a script waits for nothing but new entries."""
        packed = b"".join([pack(command) for command in commands])
        while (opened := self._open) is None:  # (re)open; the one just opened may be gone again
            if self._closed:
                raise redis_errors.ConnectionError("the scheduler has closed its Redis connection")
            await self._connect()
        loop = asyncio.get_running_loop()
        now = loop.time()
        sent = []
        for _command in commands:
            future: asyncio.Future[Any] = loop.create_future()
            self._waiting.append((future, now))
            sent.append(Sent(future, opened))
        self._on_write()
        writer = opened.writer
        writer.write(packed)
        if self._watchdog is None:
            self._watchdog = loop.call_at(now + self._reply_timeout, self._watch)
        if writer.transport.get_write_buffer_size():
            try:
                await writer.drain()  # bounded by the watchdog, which drops a stuck connection
            except OSError as exc:
                self._drop(opened, redis_errors.ConnectionError(f"Error while writing to socket: {exc}"))
        return sent

    async def reply(self, sent: Sent) -> Any:
        """The reply to a command `send` wrote."""
        future = sent.future
        try:
            return await future
        except asyncio.CancelledError:
            # (Cancelling the caller cancels `future` too: no reply had come.)
            if future.cancelled() or not future.done():
                self._cancelled(sent, "a blocking read was cancelled")
            raise

    def abandon(self, sent: Sent) -> None:
        """Nobody will await this reply: forget it, and on a lane of blocking reads drop the
        connection while the command is still in flight (as when its caller is cancelled)."""
        future = sent.future
        if future.done():
            if not future.cancelled():
                future.exception()  # retrieved: an error nobody awaits is not worth a warning
            return
        future.cancel()
        self._cancelled(sent, "a blocking read was given up")

    def _cancelled(self, sent: Sent, why: str) -> None:
        if self._drop_on_cancel:
            # A blocking read whose caller is gone would stay blocked in Redis and take the
            # next stream entries for nobody: closing its connection unblocks it.
            self._drop(sent.opened, redis_errors.ConnectionError(why))

    async def aclose(self) -> None:
        """Fail what is in flight and give the connection back; later calls fail (a loop that
        retries must not open a connection the closed store no longer owns: a blocking read
        left on it would take stream entries that nobody then handles)."""
        self._closed = True
        if self._open is not None:
            self._drop(self._open, redis_errors.ConnectionError("the scheduler is closing its Redis connection"))
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)

    # --- opening and dropping ----------------------------------------------------------------

    async def _connect(self) -> None:
        """Open a connection, or wait for the one being opened (its failure is every waiter's)."""
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.ensure_future(self._take())
            opening.add_done_callback(self._opened)
        await asyncio.shield(opening)

    def _opened(self, opening: asyncio.Future[None]) -> None:
        if self._opening is opening:
            self._opening = None
        if not opening.cancelled():
            opening.exception()  # retrieved: each waiter got it already

    async def _take(self) -> None:
        connection = await self._pool.get_connection()
        try:
            if self._closed:  # closed while this connection was being opened
                await connection.disconnect(nowait=True)
                raise redis_errors.ConnectionError("the scheduler has closed its Redis connection")
            opened = _Open(connection)
        except BaseException:
            await self._pool.release(connection)
            raise
        opened.task = asyncio.get_running_loop().create_task(self._read(opened))
        self._open = opened

    def _drop(self, opened: _Open, error: BaseException) -> asyncio.Task[None] | None:
        """Close `opened` (when still current), fail every call in flight on it with `error`;
        the task that gives its connection back to the pool."""
        if self._open is not opened:
            return None
        self._open = None
        waiting, self._waiting = self._waiting, collections.deque()
        for future, _sent in waiting:
            if not future.done():
                future.set_exception(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if opened.task is not None and opened.task is not asyncio.current_task():
            opened.task.cancel()
        giving_back = asyncio.get_running_loop().create_task(self._give_back(opened.connection))
        self._giving_back.add(giving_back)
        giving_back.add_done_callback(self._giving_back.discard)
        return giving_back

    async def _give_back(self, connection: Any) -> None:
        try:
            await connection.disconnect(nowait=True)
        finally:
            await self._pool.release(connection)

    # --- replies ------------------------------------------------------------------------------

    async def _read(self, opened: _Open) -> None:
        replies, waiting = opened.replies, self._waiting
        try:
            while True:
                data = await opened.reader.read(READ_CHUNK)
                if not data:
                    raise redis_errors.ConnectionError("Connection closed by server.")
                replies.feed(data)
                while (reply := replies.gets()) is not _MORE:
                    if not waiting:
                        raise redis_errors.InvalidResponse("Redis sent a reply nobody asked for")
                    future, _sent = waiting.popleft()
                    if isinstance(reply, redis_errors.ResponseError):
                        if not future.done():
                            future.set_exception(reply)
                        if isinstance(reply, redis_errors.ReadOnlyError):
                            raise redis_errors.ConnectionError("Redis is a read-only replica now (failover)")
                    elif not future.done():
                        future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except redis_errors.RedisError as exc:
            self._drop(opened, exc)
        except OSError as exc:
            self._drop(opened, redis_errors.ConnectionError(f"Error while reading from socket: {exc}"))

    def _watch(self) -> None:
        """Drop the connection when its oldest call has waited longer than the reply timeout."""
        self._watchdog = None
        if not self._waiting or self._open is None:
            return
        loop = asyncio.get_running_loop()
        due = self._waiting[0][1] + self._reply_timeout
        if loop.time() >= due:
            log.warning("Redis has not answered for %g s: dropping the connection", self._reply_timeout)
            self._drop(self._open, redis_errors.TimeoutError("Timeout reading from socket"))
        else:
            self._watchdog = loop.call_at(due, self._watch)
