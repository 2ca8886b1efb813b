"""Switchyard's worker side: the agent that stands next to every Celery worker.

The agent process (loggers `switchyard.agent.*`):

* `main` — `switchyard-agent`, the one place that wires the pieces together.
* `probe` — what the machine offers (NVML GPUs or a simulated profile, CPUs, memory) and its load.
* `stream` — the bidirectional gRPC stream to the leading scheduler: hello, heartbeats, drain,
  cancel, finding and following the leader among several addresses, reconnect with backoff.
* `supervise` — rewriting and running the user's `celery worker` command, local cancel.
* `broker_check` — whether the Celery app's broker is the Redis the scheduler dispatches to.

Inside the Celery worker (loggers `switchyard.worker.*`), the worker half of
docs/wire-contract.md, attached through Celery signals with no change to user code:

* `celery_boot` — `python -m worker_agent.celery_boot`: Celery's CLI with the hooks installed.
* `celery_hooks` — the Celery integration: settings, task wrapping, fencing, failure reports.
* `state_client` — the state Redis: fenced claim, stored payloads, lifecycle events.
* `report_buffer` — lifecycle reports kept in order in memory while the state Redis is away.
* `attempts` — which attempt a message is, and which attempts run here (pid files).
* `progress` — `report(progress, message)` for tasks; `labels` — runtime worker labels.

Shared by both: `environment` (the variables the agent gives the worker) and `handshake` (the
start-up exchange: the worker names its tasks and broker, the agent answers with the state Redis);
the rules both sides of the wire agree on live in `switchyard.wire`.
"""

__version__ = "0.1.0"
