"""The environment the agent gives its Celery worker (docs/wire-contract.md): each name once.

The agent sets these variables when it starts the worker (the state Redis and key prefix arrive
a moment later, through the start-up handshake); the Celery-side modules read them.
A Celery worker started without an agent has none of them, and each reader then behaves as
plain Celery would (no pid files, no runtime labels), except that a Switchyard message fails
loudly because it cannot be fenced without the state Redis.
"""

from __future__ import annotations

import os
from pathlib import Path

from switchyard.wire import TOKEN_ENV, TOKEN_FILE_ENV

WORKER_ID = "SWITCHYARD_WORKER_ID"
"""The worker id; also the default of the agent's own --worker-id."""
STATE_REDIS_URL = "SWITCHYARD_STATE_REDIS_URL"
"""Redis holding fences, stored payloads and the lifecycle stream (from the scheduler's welcome).
Under an agent it is set by the start-up handshake, not at exec (`worker_agent.handshake`)."""
KEY_PREFIX = "SWITCHYARD_KEY_PREFIX"
"""Prefix of every Switchyard key in that Redis (from the scheduler's welcome, like the URL)."""
AGENT_CHANNEL_FD = "SWITCHYARD_AGENT_CHANNEL_FD"
"""Descriptor of the worker's end of the start-up channel to its agent (`worker_agent.handshake`)."""
RUN_DIR = "SWITCHYARD_RUN_DIR"
"""The agent's private directory: pid files of running attempts and runtime labels."""
AGENT_PID = "SWITCHYARD_AGENT_PID"
"""The agent's pid, so the worker can stop when its agent dies."""
TASK_EVENTS = "SWITCHYARD_TASK_EVENTS"
"""`1` turns Celery task events on from the worker's start, `0` keeps them off; unset leaves
Celery's own setting (off unless `-E`; Flower turns them on by itself)."""


AGENT_SECRETS = (TOKEN_ENV, TOKEN_FILE_ENV)
"""The agent's own credentials: removed from the environment it gives the Celery worker, whose
tasks run user code that has no business holding the worker's scheduler token."""


def run_dir() -> Path | None:
    """The agent's run directory, or None in a process the agent did not start."""
    value = os.environ.get(RUN_DIR, "")
    return Path(value) if value else None
