"""Acceptance items 6 and 7: failover loses nothing, and fencing keeps stale attempts harmless.

Workers are killed the way machines die: SIGKILL to the agent, the Celery worker and its pool
children at once. Fencing is proven by freezing a worker's whole process group (SIGSTOP) until
the scheduler has given its work to someone else, then letting it run again (SIGCONT).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.redis_server import wait_until
from tests.support.stack import TEST_SCHEDULER_ENV, S, Stack

pytestmark = [pytest.mark.slow]

HEARTBEAT_TIMEOUT = float(TEST_SCHEDULER_ENV["SWITCHYARD_HEARTBEAT_TIMEOUT_SECONDS"])
GRACE = float(TEST_SCHEDULER_ENV["SWITCHYARD_LOST_GRACE_SECONDS"])
# Lost after at most timeout + grace; the margin covers dispatch, a 3 s task and a slow machine.
FAILOVER_DEADLINE = HEARTBEAT_TIMEOUT + GRACE + 20


@pytest.mark.timeout(120)
def test_killed_worker_task_finishes_elsewhere_with_attempt_2(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.add_worker("w2", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1", "w2"])

    task_id = stack.submit("e2e.sleep", [3, "victim"], content_type="text").task_id
    first = stack.wait_state(task_id, S.TASK_STATE_RUNNING, timeout=30)
    assert first.attempt == 1
    doomed, survivor = first.worker_id, ({"w1", "w2"} - {first.worker_id}).pop()

    stack.workers[doomed].kill()
    stack.wait_worker_status(
        doomed,
        [pb.WORKER_STATUS_LOST, pb.WORKER_STATUS_UNREACHABLE],
        timeout=HEARTBEAT_TIMEOUT + GRACE + 10,
    )
    final = stack.wait_state(task_id, S.TASK_STATE_SUCCEEDED, timeout=FAILOVER_DEADLINE)
    assert final.worker_id == survivor, final
    assert final.attempt == 2, final
    assert json.loads(final.result_json) == {"tag": "victim", "worker": survivor}

    done = [r for r in stack.done() if r["tag"] == "victim"]
    assert [r["worker"] for r in done] == [survivor], "the killed attempt cannot have finished"
    lost = stack.list_workers().get(doomed)
    assert lost is None or lost.status == pb.WORKER_STATUS_LOST, lost


@pytest.mark.timeout(240)
def test_twenty_worker_kills_lose_no_task(stack: Stack) -> None:
    in_flight_target, kills_wanted = 20, 20
    live: list[str] = []
    killed: list[str] = []
    spawned = 0
    task_ids: list[str] = []

    def spawn() -> None:
        nonlocal spawned
        spawned += 1
        worker_id = f"k{spawned:02d}"
        stack.add_worker(worker_id, "cpu", concurrency=2)
        live.append(worker_id)

    def top_up() -> None:
        stats = stack.queues()["cpu_standard"]
        for _ in range(max(0, in_flight_target - int(stats.pending + stats.processing))):
            tag = f"t{len(task_ids):03d}"
            task_ids.append(stack.submit("e2e.sleep", [3, tag], content_type="text").task_id)

    def busy_live_worker() -> str | None:
        try:
            workers = stack.list_workers()
        except Exception:
            return None
        for worker_id in live:
            info = workers.get(worker_id)
            if info is not None and info.status == pb.WORKER_STATUS_CONNECTED and info.task_ids:
                return worker_id
        return None

    for _ in range(3):
        spawn()
    stack.wait_workers_connected(live)
    top_up()
    while len(killed) < kills_wanted:
        # A mid-task kill: the victim holds some of our tasks right now.
        doomed = wait_until(
            busy_live_worker,
            timeout=60,
            interval=0.1,
            message=f"a busy live worker for kill {len(killed) + 1}",
        )
        stack.workers[doomed].kill()
        live.remove(doomed)
        killed.append(doomed)
        spawn()
        top_up()
        # Pacing, not a check (nothing is asserted after it): the replacement starts and the
        # moved and topped-up work is placed before the next victim is picked, so the kills do
        # not outrun the fleet.
        time.sleep(0.5)

    final = stack.wait_all(task_ids, S.TASK_STATE_SUCCEEDED, timeout=150)
    assert len(final) == len(task_ids) >= in_flight_target
    done_tags = {r["tag"] for r in stack.done()}
    missing = [f"t{i:03d}" for i in range(len(task_ids)) if f"t{i:03d}" not in done_tags]
    assert not missing, f"tasks reported succeeded but never ran to the end: {missing}"
    moved = [t for t in final.values() if t.attempt >= 2]
    assert moved, "no task was ever moved by a kill"
    for task in final.values():
        assert json.loads(task.result_json)["worker"] == task.worker_id, task

    def not_lost() -> list[str]:
        workers = stack.list_workers()
        return [k for k in killed if k in workers and workers[k].status != pb.WORKER_STATUS_LOST]

    wait_until(
        lambda: not not_lost(),
        timeout=HEARTBEAT_TIMEOUT + GRACE + 10,
        message="every killed worker LOST",
    )


@pytest.mark.timeout(150)
@pytest.mark.scheduler_env(SWITCHYARD_DISPATCH_PREFETCH="1")
def test_frozen_worker_comes_back_and_changes_nothing(stack: Stack) -> None:
    """Fencing: a worker SIGSTOPped until its work moved on, then SIGCONTed, changes nothing.

    Prefetch 1 lets the scheduler put one more task in the frozen worker's own Celery queue
    than it has slots: a stale, never-started message, purged from that queue when the worker
    is declared lost, or refused at its claim if the worker had taken it in before it froze.
    """
    # At INFO the worker logs the claims it refuses: one of the events waited on below.
    frozen = stack.add_worker("frozen", "cpu", concurrency=1, extra_celery_args=["--loglevel", "INFO"])
    stack.wait_workers_connected(["frozen"])

    running = stack.submit("e2e.sleep", [6, "stale-running"], content_type="text").task_id
    assert stack.wait_state(running, S.TASK_STATE_RUNNING, timeout=30).worker_id == "frozen"
    queued = stack.submit("e2e.sleep", [0.2, "stale-queued"], content_type="text").task_id
    # The hand-out script queued its message as it recorded the dispatch.
    queued_task = stack.wait_state(queued, S.TASK_STATE_DISPATCHED, timeout=15)
    assert queued_task.worker_id == "frozen" and queued_task.attempt == 1

    # RUNNING is recorded at the claim, just before user code: freeze only once user code runs.
    wait_until(
        lambda: "stale-running" in [r["tag"] for r in stack.runs()],
        timeout=10,
        message="user code of the first task to start",
    )
    frozen.freeze()
    # Frozen, the worker takes nothing more from its queue: if the message is not there now, the
    # worker holds it (only the purge at its loss empties the queue from now on).
    queued_taken_in = stack.celery_queue_len("frozen") == 0
    # The replacement starts while the frozen worker's lease runs out.
    stack.add_worker("rescuer", "cpu", concurrency=1)
    stack.wait_worker_status(
        "frozen", [pb.WORKER_STATUS_LOST], timeout=HEARTBEAT_TIMEOUT + GRACE + 20
    )

    finals = stack.wait_all([running, queued], S.TASK_STATE_SUCCEEDED, timeout=60)
    for task in finals.values():
        assert task.worker_id == "rescuer" and task.attempt == 2, task
    snapshot = {
        tid: (t.state, t.worker_id, t.attempt, t.result_json, t.error) for tid, t in finals.items()
    }

    thawed_at = time.time()
    frozen.thaw()
    # The events that end the stale work. The thawed attempt of `running` finds its sleep over,
    # ends at once (unless its agent stops it first) and reports; the scheduler drops the report.
    # The queued task's stale message is gone from the frozen worker's queue (purged at its loss),
    # or, taken in before the freeze, is claimed now and refused.
    scheduler_log = stack.scheduler_log_path
    dropped = re.compile(rf"dropped stale \S+ report of {running} attempt 1 from frozen")
    wait_until(
        lambda: dropped.search(scheduler_log.read_text(errors="replace")) is not None,
        timeout=30,
        message="the scheduler to drop the thawed attempt's report",
    )
    if queued_taken_in:
        wait_until(
            lambda: f"stale attempt 1 of task {queued}" in frozen.log_path.read_text(errors="replace"),
            timeout=30,
            message="the thawed worker to be refused the queued task's stale attempt",
        )
    else:
        wait_until(lambda: stack.celery_queue_len("frozen") == 0, timeout=30,
                   message="the frozen worker's queue to be purged")
    for tid in (running, queued):
        task = stack.get(tid)
        now = (task.state, task.worker_id, task.attempt, task.result_json, task.error)
        assert now == snapshot[tid], f"task {tid} changed after the stale worker came back: {snapshot[tid]} -> {now}"

    late_starts = [r for r in stack.runs() if r["worker"] == "frozen" and r["ts"] >= thawed_at]
    assert not late_starts, f"stale attempts started on the thawed worker: {late_starts}"
    queued_runs = [r for r in stack.runs() if r["tag"] == "stale-queued"]
    assert [(r["worker"], r["attempt"]) for r in queued_runs] == [("rescuer", 2)], queued_runs
    running_done = [r["worker"] for r in stack.done() if r["tag"] == "stale-running"]
    assert "rescuer" in running_done
