"""What the end-to-end Celery apps (`e2e_app`, `seed_app`) share: their broker and how they record.

Both are ordinary user apps: JSON only, no result backend, on the broker named by
CELERY_BROKER_URL (the agent's worker inherits it), with the transport options in
CELERY_BROKER_TRANSPORT_OPTIONS (JSON; a Sentinel broker's `master_name`). They record where user
code ran in that same Redis, through one client per process.
"""

from __future__ import annotations

import json
import os

import redis
from celery import Celery
from switchyard.redis_urls import celery_broker_redis_url, sync_client

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
BROKER_TRANSPORT_OPTIONS = json.loads(os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS") or "{}")

_client: redis.Redis | None = None
_client_pid: int | None = None


def json_app(name: str) -> Celery:
    """A Celery app on BROKER_URL that speaks JSON only and keeps no results."""
    app = Celery(name, broker=BROKER_URL)
    app.conf.update(
        broker_transport_options=dict(BROKER_TRANSPORT_OPTIONS),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_backend=None,
    )
    return app


def broker_redis() -> redis.Redis:
    """This process's client of the broker's Redis: prefork children must not share the parent's socket."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = sync_client(celery_broker_redis_url(BROKER_URL, BROKER_TRANSPORT_OPTIONS), decode_responses=True)
        _client_pid = os.getpid()
    return _client
