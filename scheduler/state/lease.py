"""The leader lease in Redis (scripts/lease.lua): who leads, with which fencing token.

Not part of the engine's `State`: only `scheduler/leadership.py` takes, renews and hands back
the lease; the engine only writes through the fence the lease sets (connection.Fence).
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.state.connection import Connection, StorePart, guarded


@dataclass(frozen=True)
class LeaseView:
    """The lease as one call saw it."""

    held: bool
    """True when the caller holds it (just taken or renewed)."""
    token: str
    """The fencing token of the lease ('' when nobody leads)."""
    holder: str
    """The holding process ('' when nobody leads)."""
    leader_address: str
    """Where the leader serves gRPC ('' when nobody leads)."""
    instance: str
    """Id of the store's data set: a different one than before means the data was lost."""
    instance_recorded: bool
    """True when this call found no instance id and recorded the one it offered."""


class RedisLease(StorePart):
    """Take, renew and hand back the leader lease (one script call each)."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        self._script = connection.lease_script
        self._lease_keys = [self._keys.leader, self._keys.leader_epoch, self._keys.instance]

    @guarded
    async def claim(self, holder: str, address: str, ttl_seconds: float, new_instance: str) -> LeaseView:
        """Renew the lease when `holder` holds it, take it when nobody does; see who holds it."""
        reply = await self._script(
            keys=self._lease_keys, args=["claim", holder, address, max(1, int(ttl_seconds * 1000)), new_instance]
        )
        return _view(reply)

    @guarded
    async def release(self, holder: str, new_instance: str) -> None:
        """Hand the lease back at once when `holder` holds it (a standby takes over without waiting)."""
        await self._script(keys=self._lease_keys, args=["release", holder, "", 1, new_instance])


def _view(reply: list[str]) -> LeaseView:
    held, token, holder, address, instance, recorded = (str(x) for x in reply)
    return LeaseView(held == "1", token, holder, address, instance, recorded == "1")
