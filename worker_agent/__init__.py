"""Switchyard's worker side: the agent that stands next to every Celery worker.

* `probe` — what the machine offers (NVML GPUs or a simulated profile, CPUs, memory) and its load.
* `stream` — the bidirectional gRPC stream to the scheduler: hello, heartbeats, drain, cancel,
  reconnect with backoff.
* `supervise` — rewriting and running the user's `celery worker` command, local cancel.
* `celery_boot` / `celery_hooks` — the Celery-side half of docs/wire-contract.md (fencing,
  lifecycle events, progress), attached through Celery signals with no change to user code.
* `progress` — `report(progress, message)` for tasks.
* `main` — `switchyard-agent`, the one place that wires the pieces together.
"""

__version__ = "0.1.0"
