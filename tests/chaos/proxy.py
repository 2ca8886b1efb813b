"""A loopback TCP proxy that can cut the network silently (a blackhole) and heal it again.

`BlackholeProxy(target_port)` listens on a free 127.0.0.1 port and forwards every connection to
the target, bytes both ways. `cut()` stops forwarding without closing anything: no RST, no FIN,
the sockets stay open and whatever the peers send waits in kernel buffers, so each side sees a
peer that has simply gone quiet, as with a pulled cable or a dropped route. Connections opened
during the cut are accepted but get nowhere. `heal()` resumes forwarding, buffered bytes first,
like TCP retransmission after a partition ends.

Threads, not asyncio: the tests that use it are synchronous and the proxy must keep working
while a test blocks in a gRPC call.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

_POLL_SECONDS = 0.1
_CHUNK = 65536


class BlackholeProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port> until cut; see the module docstring."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0
        """Connections accepted so far (a reconnecting peer shows up here)."""
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    @property
    def address(self) -> str:
        """HOST:PORT to give a client instead of the target's."""
        return f"127.0.0.1:{self.port}"

    def redis_url(self, db: int = 0) -> str:
        """A Redis URL that goes through this proxy (for a proxy in front of redis-server)."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> BlackholeProxy:
        self._acceptor.start()
        return self

    def cut(self) -> None:
        """Stop forwarding in both directions; nothing is closed."""
        self._forwarding.clear()

    def heal(self) -> None:
        """Forward again, starting with what piled up during the cut."""
        self._forwarding.set()

    @property
    def is_cut(self) -> bool:
        return not self._forwarding.is_set()

    def close(self) -> None:
        """Close the listener and every proxied connection."""
        self._closed.set()
        self._forwarding.set()  # wake pumps parked on the cut so they see the close
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    # ------------------------------------------------------------------ internals

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], _POLL_SECONDS)
                if not ready:
                    continue
                client, _addr = self._listener.accept()
            except OSError:
                return  # listener closed
            self.connections += 1
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), name="proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        # During a cut a new connection is accepted (the SYN got through) but goes nowhere yet.
        self._park()
        if self._closed.is_set():
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        upstream.settimeout(None)
        self._track(upstream)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = threading.Event()
        threading.Thread(target=self._pump, args=(upstream, client, done), name="proxy-down",
                         daemon=True).start()
        self._pump(client, upstream, done)

    def _park(self) -> None:
        """Wait while the network is cut (returns at once when forwarding or closed)."""
        while not self._forwarding.wait(_POLL_SECONDS):
            if self._closed.is_set():
                return

    def _pump(self, source: socket.socket, sink: socket.socket, other_done: threading.Event) -> None:
        """Copy source -> sink; passes an end of stream on as a half-close, closes when both ended."""
        clean_end = False
        try:
            while not self._closed.is_set():
                self._park()
                ready, _, _ = select.select([source], [], [], _POLL_SECONDS)
                if not ready:
                    continue
                if self.is_cut:
                    continue  # cut between select and recv: leave the bytes in the kernel
                data = source.recv(_CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    clean_end = True
                    break
                sink.sendall(data)
        except (OSError, ValueError):  # reset, or a socket closed under us (fileno -1)
            pass
        # A reset ends both directions at once; an orderly end waits for the other direction.
        if other_done.is_set() or not clean_end:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
        else:
            other_done.set()
