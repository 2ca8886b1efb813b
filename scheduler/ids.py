"""Random ids for the hot path: 128 bits from the operating system's CSPRNG, drawn a few KiB at
a time.

`os.urandom(16)` is one getrandom system call per id; on a virtual machine that costs several
microseconds, and a task takes two ids on its way (its own and its Celery message's delivery
tag). Drawing 256 ids' worth per call keeps the ids exactly as unpredictable (task ids are
handed to callers, who must not be able to guess anyone else's) at a sliver of the cost. A
forked child starts on fresh bytes, never on its parent's.
"""

from __future__ import annotations

import os

_BATCH = 16 * 256


class _Pool:
    __slots__ = ("bytes", "next")

    def __init__(self) -> None:
        self.bytes = b""
        self.next = 0

    def take(self) -> bytes:
        start = self.next
        if start + 16 > len(self.bytes):
            self.bytes, start = os.urandom(_BATCH), 0
        self.next = start + 16
        return self.bytes[start:start + 16]

    def forget(self) -> None:
        self.bytes, self.next = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def random_hex() -> str:
    """128 random bits as 32 lowercase hex digits (a task id)."""
    return _pool.take().hex()


def random_uuid() -> str:
    """A random (version 4) UUID in its canonical text form, as `str(uuid.uuid4())`."""
    h = _pool.take().hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
