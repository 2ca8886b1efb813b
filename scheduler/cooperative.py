"""Cooperative yielding for loops over big batches: one asyncio loop serves every call, lease
renewal and heartbeat, so a loop over thousands of items must let it run now and then.

    for index, item in enumerate(items):
        if index and not index % YIELD_EVERY:
            await breathe()

(the check inline: a coroutine call per item would cost more than the work it spaces out).
"""

from __future__ import annotations

import asyncio

YIELD_EVERY = 500
"""Items of a big batch handled between two yields to the event loop: a SubmitBatch of 10,000
tasks must not hold the loop for a second (lease renewals, heartbeats and other calls wait)."""


async def breathe() -> None:
    """Let the event loop run other work once."""
    await asyncio.sleep(0)
