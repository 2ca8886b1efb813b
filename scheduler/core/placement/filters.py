"""Placement filters: the registry of checks a worker must pass before it is scored for a task.

Each filter is registered once, by decorating its check, and declares:

* its name: what `Verdict.rejected_by` and the API's `WorkerVerdict.rejected_by` say;
* its check: the reason (in words) the worker fails it, or None when it passes;
* the facts of the task its outcome depends on: a placement round remembers a task that no
  worker took and skips identical ones, and "identical" is derived from these (`memo_key`);
* how hopeful a rejection by it is, and how a task that every worker rejects is said to wait.

Registration order is evaluation order: the first failing filter names the rejection. Adding a
filter is writing one decorated function here; `FILTER_NAMES` (and the list in the comment on
`WorkerVerdict.rejected_by` in protos/switchyard/v1/scheduler.proto, which a test keeps equal
to it) follows.

Filters registered with `per_queue=True` are judged once per queue the task may be served under
(its own, then those its fallback chain reached), with `Trial.queue_class` set to the class of
work the task counts as there; a worker passes them when some queue passes all of them, and is
otherwise rejected as the first queue was.

What a check may read of the worker matters to placement's shape index (shapes.py), which judges
workers a group at a time: a check reads either the worker's *shape* (accepting, quarantined,
the task names it registers, type, whether it has a GPU, labels, and which per-queue limits it
has reached), so `judge_shape` runs it once for a whole group, or, registered with
`capacity=True`, its free capacity (slots, GPU memory on a device), which the index checks
worker by worker itself. A filter that reads anything else needs the index taught about it;
the exactness property test (tests/unit/test_core_placement_exact.py) is what catches a
mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter

from scheduler.core.model import GpuNeed, PendingTask, TaskClass, WorkerView
from scheduler.core.placement.policy import PlacementContext
from scheduler.core.placement.scoring import CLASS_FIT


class Trial:
    """One task judged against one worker: what the filters read, and what they narrowed down.

    `queues` starts as the queues the task may be served under; each run of per-queue filters
    keeps those that passed. While a per-queue filter runs, `queue` is the queue being tried and
    `queue_class` the class of work the task counts as there. Mutable, but private to one
    evaluation of one worker.
    """

    __slots__ = ("ctx", "queue", "queue_class", "queues", "task", "worker")

    def __init__(self, task: PendingTask, worker: WorkerView, ctx: PlacementContext) -> None:
        self.task = task
        self.worker = worker
        self.ctx = ctx
        self.queues = ctx.candidate_queues(task)
        self.queue = task.queue
        self.queue_class = task.task_class


Check = Callable[[Trial], str | None]
"""The reason a worker fails a filter, or None when it passes."""

Waiting = Callable[[PendingTask, Sequence[str]], str]
"""A wait sentence, from the task and the reasons of the workers one filter rejected."""


@dataclass(frozen=True)
class TaskFact:
    """Something about a task (in a round's context) that a filter's outcome depends on."""

    name: str
    """The PendingTask field it is, unless `derive` is given."""
    derive: Callable[[PlacementContext, PendingTask], Hashable] | None = None
    """How it follows from the round's context and the task."""


def _preferred_gpu_wait_over(ctx: PlacementContext, task: PendingTask) -> bool:
    """Whether the task may already be GPU-preferred work on a CPU worker: some queue it may be
    served under holds GPU-preferred work (else the wait is moot), and it waited long enough."""
    mixed = TaskClass.MIXED
    if task.task_class is not mixed and not (ctx.chains and any(
        ctx.class_in(queue, task) is mixed for queue in ctx.candidate_queues(task)[1:]
    )):
        return False
    return ctx.now - task.submitted_at >= ctx.policy.preferred_gpu_wait_seconds


TASK_CLASS = TaskFact("task_class")
GPU_NEED = TaskFact("gpu")
GPU_MEMORY = TaskFact("gpu_memory_mb")
REQUIRED_LABELS = TaskFact("labels")
TASK_NAME = TaskFact("task_name")
CANDIDATE_QUEUES = TaskFact("candidate_queues", PlacementContext.candidate_queues)
PREFERRED_GPU_WAIT_OVER = TaskFact("preferred_gpu_wait_over", _preferred_gpu_wait_over)


def _waiting_as_rejected(_task: PendingTask, reasons: Sequence[str]) -> str:
    return f"waiting: {reasons[0]}"


@dataclass(frozen=True)
class Filter:
    """One registered filter; see the module docstring."""

    name: str
    """What `rejected_by` says when this filter rejects a worker."""
    rejects: Check
    depends_on: tuple[TaskFact, ...]
    """Facts of the task its check and its wait sentence read (besides the worker)."""
    hope: int
    """When no worker takes a task, the rejection with the lowest hope says best what the task
    waits for (a free slot is nearer than a capable worker connecting)."""
    waiting: Waiting = _waiting_as_rejected
    per_queue: bool = False
    """Judged per candidate queue (see the module docstring)."""
    capacity: bool = False
    """Reads the worker's free capacity, which bookings change (see the module docstring)."""


_registered: list[Filter] = []


def _register(name: str, *, depends_on: tuple[TaskFact, ...] = (), hope: int,
              waiting: Waiting = _waiting_as_rejected, per_queue: bool = False,
              capacity: bool = False) -> Callable[[Check], Check]:
    """Add the decorated check to the registry, after those defined above it."""
    def add(check: Check) -> Check:
        _registered.append(Filter(name, check, depends_on, hope, waiting, per_queue, capacity))
        return check
    return add


@_register("draining", hope=6)
def _draining(trial: Trial) -> str | None:
    if trial.worker.accepting:
        return None
    return "not accepting work (draining, unreachable or lost)"


@_register("quarantine", hope=5)
def _quarantine(trial: Trial) -> str | None:
    if not trial.worker.quarantined:
        return None
    return f"quarantined after {trial.worker.recent_failures} recent failure(s)"


def _waiting_for_registration(task: PendingTask, reasons: Sequence[str]) -> str:
    return (f"waiting for a worker whose Celery app registers task {task.task_name!r}: "
            f"{len(reasons)} worker(s) do not")


@_register("registered", depends_on=(TASK_NAME,), hope=8, waiting=_waiting_for_registration)
def _registered_name(trial: Trial) -> str | None:
    # A worker that does not register the name would drop the message ("Received unregistered
    # task") and the task would fail there; an empty list is an agent that did not say.
    name = trial.task.task_name
    if trial.worker.may_run(name):
        return None
    return f"task {name!r} is not registered on this worker"


def _waiting_for_capability(task: PendingTask, _reasons: Sequence[str]) -> str:
    wanted = "GPU" if task.gpu is GpuNeed.REQUIRED else task.task_class.value
    return f"waiting for a worker that runs {wanted} work: none is connected and accepting"


@_register("capability", depends_on=(TASK_CLASS, GPU_NEED, CANDIDATE_QUEUES), hope=7,
           waiting=_waiting_for_capability, per_queue=True)
def _capability(trial: Trial) -> str | None:
    worker, task_class = trial.worker, trial.queue_class
    if worker.worker_type not in CLASS_FIT[task_class]:
        return f"a {worker.worker_type.value} worker does not run {task_class.value} work"
    if trial.task.gpu is GpuNeed.REQUIRED and not worker.has_gpu:
        return "task requires a GPU and the worker has none"
    return None


@_register("fallback_wait", depends_on=(TASK_CLASS, CANDIDATE_QUEUES, PREFERRED_GPU_WAIT_OVER), hope=3,
           per_queue=True)
def _fallback_wait(trial: Trial) -> str | None:
    if trial.queue_class is not TaskClass.MIXED or trial.worker.has_gpu:
        return None
    wait = trial.ctx.policy.preferred_gpu_wait_seconds
    waited = trial.ctx.now - trial.task.submitted_at
    if waited >= wait:
        return None
    return f"GPU preferred: CPU workers only after waiting {wait:g}s (waited {max(0.0, waited):.1f}s)"


@_register("labels", depends_on=(REQUIRED_LABELS,), hope=4)
def _labels(trial: Trial) -> str | None:
    for key, value in trial.task.labels:
        if trial.worker.labels.get(key) != value:
            return f"missing label {key}={value}"
    return None


@_register("gpu_memory", depends_on=(GPU_MEMORY,), hope=2, capacity=True)
def _gpu_memory(trial: Trial) -> str | None:
    needed, worker = trial.task.gpu_memory_mb, trial.worker
    if not needed or not worker.has_gpu:
        return None
    most = max((g.available_mb for g in worker.gpus), default=0)
    if most >= needed:
        return None
    return f"needs {needed} MiB GPU memory on one device, most free is {most} MiB"


def _waiting_for_slot(_task: PendingTask, reasons: Sequence[str]) -> str:
    return f"waiting for a free slot on {len(reasons)} capable worker(s)"


@_register("slots", hope=0, waiting=_waiting_for_slot, capacity=True)
def _slots(trial: Trial) -> str | None:
    worker = trial.worker
    if worker.free_slots(trial.ctx.prefetch) > 0:
        return None
    return f"no free slot ({worker.in_flight}/{worker.slots} busy)"


def _waiting_for_queue_limit(task: PendingTask, reasons: Sequence[str]) -> str:
    return f"waiting: {len(reasons)} capable worker(s) are at the {task.queue} per-worker limit"


@_register("queue_limit", depends_on=(CANDIDATE_QUEUES,), hope=1, waiting=_waiting_for_queue_limit,
           per_queue=True)
def _queue_limit(trial: Trial) -> str | None:
    spec = trial.ctx.queues.get(trial.queue)
    if spec is None or not spec.max_tasks_per_worker:
        return None
    running = trial.worker.in_flight_by_queue.get(trial.queue, 0)
    if running < spec.max_tasks_per_worker:
        return None
    return f"already runs {running} {trial.queue} task(s), the queue's limit per worker"


FILTERS: tuple[Filter, ...] = tuple(_registered)
"""Every filter, in evaluation order."""

FILTER_NAMES: tuple[str, ...] = tuple(f.name for f in FILTERS)
"""What `rejected_by` may say, in evaluation order."""

Rejection = tuple[str, str]
"""(filter name, reason)."""

Stages = tuple[tuple[bool, tuple[Filter, ...]], ...]


def _stages(filters: tuple[Filter, ...]) -> Stages:
    """Runs of consecutive filters judged once, or once per candidate queue."""
    return tuple((per_queue, tuple(group)) for per_queue, group in groupby(filters, key=lambda f: f.per_queue))


_STAGES = _stages(FILTERS)
_SHAPE_STAGES = _stages(tuple(f for f in FILTERS if not f.capacity))


def judge(trial: Trial, stages: Stages = _STAGES) -> Rejection | None:
    """The first filter that rejects the worker, with its reason; None when the worker passes all.

    Afterwards `trial.queues[0]` is the queue the task would be served under on this worker.
    """
    # Loops are written out (no helper per filter): this runs for every task and worker examined.
    for per_queue, filters in stages:
        if per_queue:
            rejected = _judge_per_queue(trial, filters)
            if rejected is not None:
                return rejected
            continue
        for candidate in filters:
            reason = candidate.rejects(trial)
            if reason is not None:
                return candidate.name, reason
    return None


def judge_shape(trial: Trial) -> Rejection | None:
    """`judge` without the capacity filters: what every worker of the trial worker's shape gets."""
    return judge(trial, _SHAPE_STAGES)


def _judge_per_queue(trial: Trial, filters: tuple[Filter, ...]) -> Rejection | None:
    """Keep the queues that pass every filter; with none left, reject as the first queue was."""
    passed: list[str] = []
    first: Rejection | None = None
    for queue in trial.queues:
        trial.queue, trial.queue_class = queue, trial.ctx.class_in(queue, trial.task)
        for candidate in filters:
            reason = candidate.rejects(trial)
            if reason is not None:
                if first is None:
                    first = candidate.name, reason
                break
        else:
            passed.append(queue)
    if len(passed) != len(trial.queues):
        trial.queues = tuple(passed)
    return None if passed else first


_MEMO_FACTS = tuple(dict.fromkeys((GPU_NEED, *(fact for f in FILTERS for fact in f.depends_on))))
_memo_fields = attrgetter(*(fact.name for fact in _MEMO_FACTS if fact.derive is None))
_memo_derived = tuple(fact.derive for fact in _MEMO_FACTS if fact.derive is not None)


def memo_key(task: PendingTask, ctx: PlacementContext) -> tuple[Hashable, ...]:
    """Tasks with equal keys get the same verdict from every worker in a round, and the same
    wait sentence: the facts every filter depends on (and the GPU need `wait_reason` reads)."""
    key: list[Hashable] = [_memo_fields(task)]
    for derive in _memo_derived:  # a loop, not a comprehension: this runs for every pending task
        key.append(derive(ctx, task))
    return tuple(key)
