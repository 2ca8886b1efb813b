"""`python -m worker_agent.celery_boot -A MODULE worker ...`: Celery's own CLI with Switchyard hooks.

The agent runs the user's worker through this module instead of the `celery` script so that
`worker_agent.celery_hooks` connects its signals before Celery loads the user's app; the
arguments are Celery's, unchanged.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import worker_agent.celery_hooks  # noqa: F401  (connects the Celery signals on import)
from worker_agent import environment

_PR_SET_PDEATHSIG = 1


def stop_with_agent() -> None:
    """Ask Linux to send this worker SIGTERM (warm shutdown) when the agent that started it dies.

    Without it, a SIGKILLed agent would leave an orphan worker consuming a queue whose worker
    the scheduler has declared lost. Fencing keeps that safe, but the orphan wastes the machine.
    Only armed under an agent (SWITCHYARD_AGENT_PID), and only on Linux.
    """
    agent_pid = os.environ.get(environment.AGENT_PID)
    if not agent_pid or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The agent may have died before prctl took effect; then nobody would ever signal us.
    if os.getppid() != int(agent_pid):
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """Run Celery's command line with `argv` (default: this process's arguments)."""
    from celery.bin.celery import main as celery_main

    stop_with_agent()
    sys.argv = ["celery", *(sys.argv[1:] if argv is None else argv)]
    exit_code = celery_main()
    return int(exit_code or 0)


if __name__ == "__main__":
    sys.exit(main())
