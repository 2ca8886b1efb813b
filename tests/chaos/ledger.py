"""The client-side ledger every chaos test keeps, and the one check they all end with.

A submission counts once SubmitTask (or SubmitBatch) answered OK: from then on the scheduler
owes the client that task. A call that failed (the scheduler died under it, Redis was down) is
not owed, even if the scheduler happened to commit it; the ledger counts such calls as
`refused` and never checks them.

The final check, for every acknowledged task:

* the scheduler still knows it (a lost task is one it acknowledged and forgot);
* it reached a terminal state, exactly one: read again once every report written so far has
  been applied, it has not moved;
* at most one success, counted on the worker side from what the e2e Celery app recorded
  (`e2e:done`, one record per run of user code that reached its end, named
  `<task_id>-<attempt>`): a task that succeeded ran to the end on the worker and attempt the
  scheduler names, and no other attempt of it ran to the end, except on a worker the test
  itself killed or cut off, before that fault ended. A worker fault makes a second run
  legitimate (the protocol is at-least-once: a worker cut off after finishing user code but
  before its report landed is indistinguishable from one that never finished); the check counts
  those runs and reports them. A worker restarted under the same id after its kill is a new
  worker: its runs get no such allowance.
"""

from __future__ import annotations

import collections
import inspect
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from switchyard.v1 import scheduler_pb2

from tests.support.stack import TERMINAL_STATES, S, Stack, state_name

SETTLE_POLL_SECONDS = 0.2
_STACK_FIELDS = frozenset(
    inspect.signature(Stack.submit_request).parameters) - {"self", "task_name", "args", "kwargs"}
"""SubmitTaskRequest fields `Stack.submit_request` takes itself (maps go in whole, not by setattr)."""


@dataclass(frozen=True)
class Ack:
    """One acknowledged submission."""

    task_id: str
    tag: str
    acked_at: float
    """Wall-clock time the OK came back (the Redis test measures its loss window with it)."""


@dataclass
class Verdict:
    """What the final check found; `problems` empty means the ledger balances."""

    acknowledged: int
    refused: int
    by_state: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    """Acknowledged task ids the scheduler no longer knows."""
    reruns_after_worker_fault: int = 0
    """Extra runs of user code to the end, on workers the test killed or cut off (tolerated)."""
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        states = ", ".join(f"{name.removeprefix('TASK_STATE_').lower()} {count}"
                           for name, count in sorted(self.by_state.items()))
        return (f"ledger: {self.acknowledged} acknowledged ({states}), {self.refused} refused, "
                f"{len(self.lost)} lost, {self.reruns_after_worker_fault} re-run(s) after a worker "
                f"fault, {len(self.problems)} problem(s)")


def split_celery_id(celery_id: str) -> tuple[str, int | None]:
    """`<task_id>-<attempt>` (the wire contract's Celery id) as (task_id, attempt)."""
    task_id, sep, attempt = celery_id.rpartition("-")
    if not sep or not attempt.isdigit():
        return celery_id, None
    return task_id, int(attempt)


class Ledger:
    """Acknowledged submissions of one test; thread-safe (load generators submit from threads)."""

    def __init__(self) -> None:
        self.acks: dict[str, Ack] = {}
        self.refused = 0
        self.refusals: collections.Counter[str] = collections.Counter()
        """Status code names of refused calls."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.acks)

    def acknowledge(self, task_id: str, tag: str = "") -> None:
        """Record an OK from SubmitTask/SubmitBatch (a deduplicated answer names a task already owed)."""
        with self._lock:
            self.acks.setdefault(task_id, Ack(task_id, tag, time.time()))

    def forget(self, task_id: str) -> None:
        """The client had the task deleted (a purged dead letter): nothing is owed any more."""
        with self._lock:
            self.acks.pop(task_id, None)

    def refuse(self, code: grpc.StatusCode | None) -> None:
        """Record a submission that did not come back OK."""
        with self._lock:
            self.refused += 1
            self.refusals[code.name if code is not None else "NO_STATUS"] += 1

    def submit(self, stack: Stack, task_name: str = "e2e.sleep", args: Sequence[Any] = (),
               tag: str = "", timeout: float = 10.0, **fields: Any) -> str | None:
        """SubmitTask; the task id when acknowledged, None when the call failed. `fields` are
        any other SubmitTaskRequest fields (retry_policy, time limits ...)."""
        request = stack.submit_request(task_name, args, kwargs=fields.pop("kwargs", None),
                                       **{k: fields.pop(k) for k in list(fields) if k in _STACK_FIELDS})
        for name, value in fields.items():
            setattr(request, name, value)
        try:
            reply = stack.stub.SubmitTask(request, timeout=timeout)
        except grpc.RpcError as err:
            self.refuse(err.code() if isinstance(err, grpc.Call) else None)
            return None
        self.acknowledge(reply.task_id, tag)
        return str(reply.task_id)

    def submit_batch(self, stack: Stack, requests: Sequence[scheduler_pb2.SubmitTaskRequest],
                     tags: Sequence[str], timeout: float = 10.0) -> list[str] | None:
        """SubmitBatch (all or nothing); the task ids when acknowledged, None when the call failed."""
        try:
            reply = stack.stub.SubmitBatch(scheduler_pb2.SubmitBatchRequest(tasks=requests), timeout=timeout)
        except grpc.RpcError as err:
            self.refuse(err.code() if isinstance(err, grpc.Call) else None)
            return None
        ids = [result.task_id for result in reply.results]
        for task_id, tag in zip(ids, tags, strict=True):
            self.acknowledge(task_id, tag)
        return ids

    # ------------------------------------------------------------------ the end of a test

    def settle(self, stack: Stack, timeout: float = 60.0, *, allow_lost: bool = False,
               ids: Iterable[str] | None = None) -> dict[str, scheduler_pb2.Task | None]:
        """Wait until every acknowledged task is terminal (or, with `allow_lost`, unknown to the
        scheduler); returns each one's final task, None for a lost one. Polls the scheduler
        through outages (UNAVAILABLE is retried until the deadline)."""
        waiting = set(self.acks if ids is None else ids)
        finals: dict[str, scheduler_pb2.Task | None] = {}
        last: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while waiting:
            for task_id in sorted(waiting):
                try:
                    task = stack.stub.GetTask(scheduler_pb2.GetTaskRequest(task_id=task_id), timeout=5).task
                except grpc.RpcError as err:
                    if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.NOT_FOUND:
                        if allow_lost:
                            finals[task_id] = None
                            waiting.discard(task_id)
                        last[task_id] = "NOT_FOUND"
                        continue
                    last[task_id] = "unreachable"
                    break  # the scheduler is away: poll again later
                last[task_id] = state_name(task.state)
                if task.state in TERMINAL_STATES:
                    finals[task_id] = task
                    waiting.discard(task_id)
            if not waiting:
                break
            if time.monotonic() > deadline:
                stuck = collections.Counter(last.get(t, "never read") for t in waiting)
                sample = sorted(waiting)[:5]
                raise AssertionError(
                    f"{len(waiting)} of {len(self.acks)} acknowledged task(s) not terminal after "
                    f"{timeout}s (by last state: {dict(stuck)}; e.g. {sample}):\n{stack.log_tails()}"
                )
            time.sleep(SETTLE_POLL_SECONDS)
        return finals

    def verify(self, stack: Stack, finals: Mapping[str, scheduler_pb2.Task | None], *,
               faulted_workers: Mapping[str, float] | None = None, allow_lost: bool = False,
               expected: Callable[[Ack], Collection[int]] | None = None,
               reread: bool = True) -> Verdict:
        """The final check (see the module docstring). `expected` gives the terminal states an
        acknowledged task may end in (any terminal state when omitted). `faulted_workers` maps
        each worker the test killed or cut off to the wall-clock time its last fault ended (the
        kill, or the heal of a cut). `reread` waits until every report written so far is applied
        and reads each task again."""
        verdict = Verdict(acknowledged=len(self.acks), refused=self.refused)
        if reread:
            stack.wait_reports_applied(timeout=30)
        done_by_task: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for record in stack.done():
            task_id, attempt = split_celery_id(str(record.get("celery_id") or ""))
            done_by_task[task_id].append({**record, "attempt": attempt})
        for task_id, ack in sorted(self.acks.items()):
            final = finals.get(task_id)
            if final is None:
                verdict.lost.append(task_id)
                if not allow_lost:
                    verdict.problems.append(f"task {task_id} ({ack.tag}) was acknowledged, then lost")
                continue
            name = state_name(final.state)
            verdict.by_state[name] = verdict.by_state.get(name, 0) + 1
            if final.state not in TERMINAL_STATES:
                verdict.problems.append(f"task {task_id} ({ack.tag}) is {name}, not terminal")
                continue
            allowed = expected(ack) if expected is not None else TERMINAL_STATES
            if final.state not in allowed:
                wanted = sorted(state_name(s) for s in allowed)
                verdict.problems.append(
                    f"task {task_id} ({ack.tag}) ended {name}, expected one of {wanted}: "
                    f"reason={final.reason!r} error={final.error!r}")
            if reread:
                again = stack.get(task_id)
                if (again.state, again.attempt, again.worker_id) != (final.state, final.attempt, final.worker_id):
                    verdict.problems.append(
                        f"task {task_id} ({ack.tag}) moved after ending: {name} attempt {final.attempt} on "
                        f"{final.worker_id!r} -> {state_name(again.state)} attempt {again.attempt} on "
                        f"{again.worker_id!r}")
            self._check_successes(verdict, ack, final, done_by_task.get(task_id, []), faulted_workers or {})
        return verdict

    @staticmethod
    def _check_successes(verdict: Verdict, ack: Ack, final: scheduler_pb2.Task,
                         dones: list[dict[str, Any]], faulted_workers: Mapping[str, float]) -> None:
        counted = None
        if final.state == S.TASK_STATE_SUCCEEDED:
            counted = next((d for d in dones if d["attempt"] == final.attempt
                            and d["worker"] == final.worker_id), None)
            if counted is None:
                verdict.problems.append(
                    f"task {ack.task_id} ({ack.tag}) succeeded as attempt {final.attempt} on "
                    f"{final.worker_id!r}, but its user code never finished there "
                    f"(finished: {[(d['worker'], d['attempt']) for d in dones]})")
        others = [d for d in dones if d is not counted]
        def before_fault(done: dict[str, Any]) -> bool:
            fault_ended = faulted_workers.get(done["worker"])
            return fault_ended is not None and float(done["ts"]) <= fault_ended

        tolerated = [d for d in others if before_fault(d)]
        verdict.reruns_after_worker_fault += len(tolerated)
        untolerated = [d for d in others if not before_fault(d)]
        if (counted is not None and untolerated) or (counted is None and len(untolerated) > 1):
            verdict.problems.append(
                f"task {ack.task_id} ({ack.tag}) ran to the end more than once with no worker fault "
                f"to explain it: {[(d['worker'], d['attempt']) for d in dones]}, final "
                f"{state_name(final.state)} attempt {final.attempt} on {final.worker_id!r}")


def assert_balanced(verdict: Verdict, stack: Stack | None = None) -> None:
    """Fail with every problem (and the process logs) unless the ledger balances."""
    print(verdict.summary())
    if verdict.problems:
        shown = "\n  ".join(verdict.problems[:30])
        more = f"\n  ... and {len(verdict.problems) - 30} more" if len(verdict.problems) > 30 else ""
        logs = f"\n{stack.log_tails()}" if stack is not None else ""
        raise AssertionError(f"{verdict.summary()}\n  {shown}{more}{logs}")
