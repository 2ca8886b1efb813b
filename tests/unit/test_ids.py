"""Hot-path random ids (scheduler/ids.py): well formed, never repeated, and a forked child never
hands out its parent's next ids."""

from __future__ import annotations

import os
import uuid

from scheduler.ids import random_hex, random_uuid


def test_ids_are_well_formed_and_distinct_across_many_refills() -> None:
    hexes = [random_hex() for _ in range(3000)]  # several 256-id draws
    assert all(len(h) == 32 and int(h, 16) >= 0 for h in hexes)
    assert len(set(hexes)) == len(hexes)
    uuids = [random_uuid() for _ in range(1000)]
    assert all(str(uuid.UUID(u)) == u and uuid.UUID(u).version == 4 for u in uuids)
    assert len(set(uuids)) == len(uuids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    random_hex()  # the pool holds unused bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, random_hex().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != random_hex()
