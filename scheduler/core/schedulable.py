"""Could any worker ever run this task? The check that refuses submissions that would wait forever.

The scheduler's configuration describes queues and classification, not worker profiles; the
workers are whatever agents connect. So "a worker the configuration allows" is judged against
the workers the scheduler knows: every worker that ever registered with this Redis (its
registration, rewritten at each hello, keeps its type, labels and GPU sizes) and the live fleet
(fresher labels, set at runtime). Admission gathers them; this module only decides.

A submission is refused, with the reason, when:

* its content type is one classification does not know (neither the configured content types
  nor any rule names it) and nothing else decides its class (an explicit `gpu`, a GPU-memory
  request, a rule that matches it by name) -- it would silently become CPU work; the reason
  offers the closest known content types;
* it requires a GPU with more memory than the largest GPU of any known GPU worker -- judged only
  when at least one GPU worker is known and the sizes of every one are (a GPU pool scaled to
  zero, or never started yet, leaves the task merely waiting, as it should);
* it requires a label (key=value) that no known worker has -- judged only when some worker is
  known at all.

A caller that expects such a worker to join says so with `allow_unschedulable`. A task that is
merely waiting (every capable worker busy, draining, quarantined or disconnected) is accepted.

The checks stop at the first worker that settles the question, so a task some worker fits costs
little however large the fleet; only a refusal looks at every known worker (to say why).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.core.classify import ClassificationRules
from scheduler.core.model import Classification, GpuNeed, Submission, WorkerType

GPU_WORKER_TYPES = frozenset({WorkerType.GPU, WorkerType.HYBRID})
"""Worker types that can run GPU work."""

CLOSE_MATCHES = 3
"""At most this many "did you mean" suggestions."""


@dataclass(frozen=True)
class KnownWorker:
    """What one known worker could offer a task when idle."""

    worker_id: str
    worker_type: WorkerType
    gpu_memory_mb: tuple[int, ...] | None = None
    """Total memory of each of its GPUs, MiB (empty: it has none); None when not known."""
    labels: Mapping[str, str] = field(default_factory=dict)


def known_content_types(rules: ClassificationRules) -> list[str]:
    """Every content type classification knows: the configured ones and those rules name."""
    named = {content for rule in rules.rules for content in rule.content_types}
    return sorted(set(rules.content_classes) | named)


def unschedulable_reason(submission: Submission, decision: Classification, rules: ClassificationRules,
                         workers: Iterable[KnownWorker]) -> str | None:
    """Why no known worker could ever run this task, or None when one could (or cannot be ruled out).

    `decision` is the submission's classification; `workers` every worker the scheduler knows (a
    collection, or any iterable that starts afresh each time it is iterated: it may be iterated
    several times).
    """
    return (
        unknown_content_type(submission, rules)
        or _gpu_memory_problem(submission, decision, workers)
        or _label_problem(submission, workers)
    )


def unknown_content_type(submission: Submission, rules: ClassificationRules) -> str | None:
    """Why the content type cannot be classified, or None when it can (or need not be)."""
    content = submission.content_type.strip().lower()
    if not content:
        return None
    known = known_content_types(rules)
    if content in known:
        return None
    if submission.gpu is not GpuNeed.UNSPECIFIED or submission.gpu_memory_mb > 0:
        return None
    rule = next((r for r in rules.rules
                 if r.matches(submission.task_name, content, submission.gpu_memory_mb)), None)
    if rule is not None and (rule.task_class is not None or rule.gpu is not None):
        return None
    close = difflib.get_close_matches(content, known, n=CLOSE_MATCHES)
    suggestion = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return (
        f"content type {submission.content_type!r} is not one classification knows; {suggestion}"
        f"known content types: {', '.join(known)}. Use one of them, say gpu=none/preferred/required, "
        "or set allow_unschedulable to submit it as cpu work (the default class)"
    )


def _gpu_memory_problem(submission: Submission, decision: Classification,
                        workers: Iterable[KnownWorker]) -> str | None:
    needed = submission.gpu_memory_mb
    if not needed or decision.gpu is not GpuNeed.REQUIRED:
        return None  # GPU memory only binds a task that must run on a GPU
    largest, owner = 0, ""
    for worker in workers:
        if worker.worker_type not in GPU_WORKER_TYPES:
            continue
        if worker.gpu_memory_mb is None:
            return None  # a GPU worker of unknown size: it may fit
        for size in worker.gpu_memory_mb:
            if size >= needed:
                return None
            if size > largest:
                largest, owner = size, worker.worker_id
    if not owner:
        return None  # no GPU worker known (yet): the task waits for one
    return (
        f"asks for {needed} MiB of GPU memory on one device, more than any known GPU has (the "
        f"largest: {largest} MiB, on {owner}); ask for less, or set allow_unschedulable if a "
        "larger GPU worker will join"
    )


def _label_problem(submission: Submission, workers: Iterable[KnownWorker]) -> str | None:
    if not submission.labels or next(iter(workers), None) is None:
        return None  # no worker known at all: nothing to judge by
    for key, value in sorted(submission.labels.items()):
        if any(w.labels.get(key) == value for w in workers):
            continue
        values = sorted({w.labels[key] for w in workers if key in w.labels})
        if values:
            hint = f"known values of {key!r}: {', '.join(values)}"
        else:
            keys = sorted({k for w in workers for k in w.labels})
            close = difflib.get_close_matches(key, keys, n=CLOSE_MATCHES)
            hint = f"no known worker has a label {key!r}" + (
                f"; did you mean {' or '.join(repr(k) for k in close)}?" if close else "")
        return (
            f"requires label {key}={value}, which no known worker has ({hint}); set "
            "allow_unschedulable if a worker with it will join"
        )
    return None
