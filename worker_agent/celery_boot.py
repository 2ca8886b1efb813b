"""`python -m worker_agent.celery_boot -A MODULE worker ...`: Celery's own CLI with Switchyard hooks.

The agent runs the user's worker through this module instead of the `celery` script so that
`worker_agent.celery_hooks` connects its signals before Celery loads the user's app; the
arguments are Celery's, unchanged.
"""

from __future__ import annotations

import sys

import worker_agent.celery_hooks  # noqa: F401  (connects the Celery signals on import)


def main(argv: list[str] | None = None) -> int:
    """Run Celery's command line with `argv` (default: this process's arguments)."""
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", *(sys.argv[1:] if argv is None else argv)]
    exit_code = celery_main()
    return int(exit_code or 0)


if __name__ == "__main__":
    sys.exit(main())
