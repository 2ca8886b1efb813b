"""The only module that publishes to Celery: hands an attempt to a worker's own queue.

Publishing is synchronous kombu I/O, so it runs on one dedicated thread behind async methods;
the engine awaits them. Messages are ordinary Celery protocol-2 task messages (JSON, never
pickle) carrying the Switchyard headers of docs/wire-contract.md, on the worker's own
queue/exchange/routing key (`switchyard.wire.worker_queue`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from celery import Celery
from kombu import Exchange, Queue  # type: ignore[attr-defined]
from switchyard.wire import (
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    HEADER_ATTEMPT,
    HEADER_PAYLOAD_REF,
    HEADER_TASK_ID,
    HEADER_WORKER_ID,
    worker_queue,
)

log = logging.getLogger("switchyard.scheduler.dispatch")


@dataclass(frozen=True)
class HandOut:
    """One attempt to publish."""

    task_id: str
    attempt: int
    worker_id: str
    task_name: str
    args_json: str | None
    """None when the payload travels by reference (stored once in Redis)."""
    kwargs_json: str | None
    soft_time_limit: float | None = None
    """Seconds before Celery raises SoftTimeLimitExceeded in the task."""
    hard_time_limit: float | None = None
    """Seconds before Celery kills the task's process."""


class Dispatcher(Protocol):
    """What the engine needs of a dispatcher (tests/support/fakes.py has an in-memory one)."""

    async def publish(self, hand_outs: Sequence[HandOut]) -> list[str]:
        """Publish each hand-out; returns the ids of the tasks that were published."""
        ...

    async def purge_worker_queue(self, worker_id: str) -> int:
        """Drop what waits in a lost worker's queue; returns how many messages."""
        ...


class CeleryDispatcher:
    """Publishes hand-outs to Celery and purges the queues of lost workers."""

    def __init__(self, broker_url: str, visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS) -> None:
        self.app = Celery("switchyard-scheduler", broker=broker_url, set_as_current=False)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
            broker_transport_options={"visibility_timeout": visibility_timeout},
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sy-dispatch")
        self._queues: dict[str, Queue] = {}

    def _queue(self, worker_id: str) -> Queue:
        name = worker_queue(worker_id)
        queue = self._queues.get(name)
        if queue is None:
            queue = Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]
            self._queues[name] = queue
        return queue

    async def publish(self, hand_outs: Sequence[HandOut]) -> list[str]:
        """Publish each hand-out; returns the task ids that were published."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._publish, list(hand_outs))

    def _publish(self, hand_outs: list[HandOut]) -> list[str]:
        published: list[str] = []
        with self.app.producer_or_acquire() as producer:
            for item in hand_outs:
                queue = self._queue(item.worker_id)
                by_reference = item.args_json is None
                args: Any = [] if by_reference else json.loads(item.args_json or "[]")
                kwargs: Any = {} if by_reference else json.loads(item.kwargs_json or "{}")
                try:
                    self.app.send_task(
                        item.task_name,
                        args=args,
                        kwargs=kwargs,
                        task_id=f"{item.task_id}-{item.attempt}",
                        queue=queue,
                        declare=[queue],
                        serializer="json",
                        producer=producer,
                        soft_time_limit=item.soft_time_limit,
                        time_limit=item.hard_time_limit,
                        headers={
                            HEADER_TASK_ID: item.task_id,
                            HEADER_ATTEMPT: item.attempt,
                            HEADER_WORKER_ID: item.worker_id,
                            HEADER_PAYLOAD_REF: "1" if by_reference else "0",
                        },
                    )
                except Exception:  # the record stays committed; restart re-publishes it
                    log.exception("publishing %s attempt %s to %s failed",
                                  item.task_id, item.attempt, item.worker_id)
                    continue
                published.append(item.task_id)
        return published

    async def purge_worker_queue(self, worker_id: str) -> int:
        """Drop messages still waiting in a lost worker's queue (their attempts are fenced anyway)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._purge, worker_id)

    def _purge(self, worker_id: str) -> int:
        try:
            with self.app.connection_for_write() as conn:
                return int(self._queue(worker_id).bind(conn.default_channel).purge() or 0)  # type: ignore[no-untyped-call]
        except Exception:
            log.warning("could not purge the queue of lost worker %s", worker_id, exc_info=True)
            return 0

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.app.close()
