"""Worker labels that change at runtime, e.g. `model=whisper-large` once a model is loaded.

    from worker_agent.labels import set_label
    set_label("model", "whisper-large")      # inside a task, after loading the model

The labels live in `$SWITCHYARD_RUN_DIR/labels.json`, which the agent reads before every
heartbeat and hello; a change reaches the scheduler within one heartbeat and feeds soft label
affinity (and required labels). Outside an agent (no SWITCHYARD_RUN_DIR) these calls do nothing,
so tasks stay runnable under plain Celery. An operator may edit the file by hand too.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from switchyard.wire import worker_labels_problem

from worker_agent.environment import run_dir as agent_run_dir

LABELS_FILE = "labels.json"
AGENT_LABELS_FILE = "agent-labels.json"
"""The agent's --labels, written once at start so `set_label` can check the set the scheduler gets."""


def read_runtime_labels(run_dir: Path) -> dict[str, str]:
    """Labels set at runtime (empty when none, or when the file is unreadable)."""
    return _read(run_dir / LABELS_FILE)


def worker_labels(agent_labels: Mapping[str, str], runtime_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels the worker carries: the agent's --labels, overlaid with those set at runtime."""
    return {**agent_labels, **runtime_labels}


def write_agent_labels(run_dir: Path, labels: dict[str, str]) -> None:
    """Record the agent's own --labels for `set_label` (the agent calls this once, at start)."""
    _write(run_dir, labels, AGENT_LABELS_FILE)


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def _write(run_dir: Path, labels: dict[str, str], name: str = LABELS_FILE) -> None:
    # Write-then-rename so the agent never reads half a file.
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".labels-")
    with os.fdopen(fd, "w") as handle:
        json.dump(labels, handle, sort_keys=True)
    os.replace(tmp, run_dir / name)


def set_label(key: str, value: str) -> None:
    """Add or change one runtime label of this worker; ValueError when the scheduler would
    refuse it (a key against the rule, a value too long, too many labels with the agent's
    --labels counted in)."""
    run_dir = agent_run_dir()
    labels = read_runtime_labels(run_dir) if run_dir is not None else {}
    labels[key] = value
    every = worker_labels(_read(run_dir / AGENT_LABELS_FILE), labels) if run_dir is not None else labels
    problem = worker_labels_problem(every)
    if problem is not None:
        raise ValueError(f"set_label({key!r}, ...): {problem}")
    if run_dir is not None:
        _write(run_dir, labels)


def remove_label(key: str) -> None:
    """Drop one runtime label (a label given with --labels stays)."""
    run_dir = agent_run_dir()
    if run_dir is None:
        return
    labels = read_runtime_labels(run_dir)
    if labels.pop(key, None) is not None:
        _write(run_dir, labels)
