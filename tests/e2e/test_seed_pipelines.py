"""One end-to-end test per seed pipeline config in deploy/examples/.

Each test starts the scheduler on that file, starts the workers the pipeline needs (real
`switchyard-agent` + prefork Celery workers of `tests.support.seed_app`, GPUs simulated),
submits the pipeline's task types as its seed project would (task name, content type, GPU
memory, explicit queue or priority where the seed does) and checks, for each: the queue it was
classified into, that it succeeded, and the worker (and worker type) it really ran on, as
recorded by the task body itself in `seed:runs`.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.redis_server import wait_until
from tests.support.stack import REPO_ROOT, S, Stack, worker_type_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SEED_APP = "tests.support.seed_app"
EXAMPLES = REPO_ROOT / "deploy" / "examples"

GPU_INTENSIVE = pb.TASK_CLASS_GPU_INTENSIVE
CPU = pb.TASK_CLASS_CPU
MIXED = pb.TASK_CLASS_MIXED
IO = pb.TASK_CLASS_IO


def config(name: str) -> str:
    return str(EXAMPLES / name)


@dataclass
class Case:
    """One submission of a pipeline task and where it must end up."""

    tag: str
    task_name: str
    queue: str
    workers: set[str]
    """Workers it may run on (usually exactly one)."""
    task_class: int | None = None
    priority: int | None = None
    seconds: float = 0.05
    fields: dict[str, Any] = field(default_factory=dict)
    """Other SubmitTaskRequest fields: content_type, gpu_memory_mb, queue, priority, ..."""


def seed_runs(stack: Stack) -> list[dict[str, Any]]:
    return [json.loads(r) for r in stack.redis.lrange("seed:runs", 0, -1)]


def seed_done(stack: Stack) -> list[dict[str, Any]]:
    return [json.loads(r) for r in stack.redis.lrange("seed:done", 0, -1)]


def submit_case(stack: Stack, case: Case) -> pb.SubmitTaskResponse:
    reply = stack.submit(case.task_name, [case.seconds, case.tag], **case.fields)
    assert reply.queue == case.queue, f"{case.tag}: classified into {reply.queue!r}: {reply}"
    if case.task_class is not None:
        assert reply.task_class == case.task_class, (
            f"{case.tag}: class {pb.TaskClass.Name(reply.task_class)}: {reply}"
        )
    if case.priority is not None:
        assert reply.priority == case.priority, f"{case.tag}: priority {reply.priority}: {reply}"
    assert reply.reason, f"{case.tag}: the decision carries no reason"
    return reply


def check_ran_where_expected(
    stack: Stack, cases: Iterable[Case], finished: Mapping[str, pb.Task], ids: Mapping[str, str]
) -> None:
    """Scheduler's record and the task body's own record agree on the expected worker."""
    runs: dict[str, list[str]] = defaultdict(list)
    for record in seed_runs(stack):
        runs[record["tag"]].append(record["worker"])
    for case in cases:
        task = finished[ids[case.tag]]
        assert task.state == S.TASK_STATE_SUCCEEDED, (case.tag, task)
        assert task.queue == case.queue, (case.tag, task.queue)
        assert task.worker_id in case.workers, (
            f"{case.tag} ({case.task_name}, queue {case.queue}) ran on {task.worker_id!r}, "
            f"expected one of {sorted(case.workers)}"
        )
        assert runs[case.tag] == [task.worker_id], (
            f"{case.tag}: user code ran on {runs[case.tag]}, scheduler says {task.worker_id!r}"
        )
        result = json.loads(task.result_json)
        assert result["task"] == case.task_name and result["worker"] == task.worker_id, result


def worker_types(stack: Stack) -> dict[str, str]:
    return {wid: worker_type_name(w.worker_type) for wid, w in stack.list_workers().items()}


# ---------------------------------------------------------------------------------- Auteur


@pytest.mark.scheduler_env(SWITCHYARD_CONFIG_FILE=config("auteur.yaml"))
def test_auteur_pipeline(stack: Stack) -> None:
    """STORY-042: VRAM over 8 GB -> gpu.generation on a GPU that fits; thumbnails, analysis and
    storage on CPU workers; urgent work in `priority`."""
    stack.add_worker("gpu16", "gpu", concurrency=2, simulate_gpu="1xT4:16384", app=SEED_APP)
    stack.add_worker("gpu40", "gpu", concurrency=2, simulate_gpu="1xA100:40960", app=SEED_APP)
    stack.add_worker("cpu1", "cpu", concurrency=2, app=SEED_APP)
    stack.wait_workers_connected(["gpu16", "gpu40", "cpu1"])
    types = worker_types(stack)
    assert types == {"gpu16": "gpu", "gpu40": "gpu", "cpu1": "cpu"}, types

    gpus = {"gpu16", "gpu40"}
    cases = [
        # VRAM rule first: more than 8 GB -> gpu.generation whatever the task name.
        Case(
            "gen-12g",
            "auteur.tasks.generate.image",
            "gpu.generation",
            {"gpu40"},
            GPU_INTENSIVE,
            10,
            fields={"gpu_memory_mb": 12000},
        ),
        Case(
            "gen-24g",
            "auteur.tasks.media.generate_video",
            "gpu.generation",
            {"gpu40"},
            GPU_INTENSIVE,
            10,
            fields={"gpu_memory_mb": 24000},
        ),
        Case(
            "style-20g",
            "auteur.tasks.process.style_transfer",
            "gpu.generation",
            {"gpu40"},
            GPU_INTENSIVE,
            10,
            fields={"gpu_memory_mb": 20000},
        ),
        # Any GPU memory up to 8 GB -> gpu.processing.
        Case(
            "style-4g",
            "auteur.tasks.process.style_transfer",
            "gpu.processing",
            gpus,
            GPU_INTENSIVE,
            8,
            fields={"gpu_memory_mb": 4000},
        ),
        # The route map, by task name (module globs and function-name globs).
        Case(
            "gen-byname",
            "auteur.tasks.media.generate_image",
            "gpu.generation",
            gpus,
            GPU_INTENSIVE,
            10,
        ),
        Case("upscale", "auteur.tasks.process.upscale", "gpu.processing", gpus, GPU_INTENSIVE, 8),
        Case("thumb", "auteur.tasks.thumbnail.create", "cpu.thumbnail", {"cpu1"}, CPU, 3),
        Case(
            "thumb-glob", "auteur.tasks.media.generate_thumbnail", "cpu.thumbnail", {"cpu1"}, CPU, 3
        ),
        Case(
            "thumb-user",
            "auteur.tasks.thumbnail.create",
            "cpu.thumbnail",
            {"cpu1"},
            CPU,
            5,
            fields={"user_initiated": True},
        ),
        Case("analysis", "auteur.tasks.analysis.scene", "cpu.analysis", {"cpu1"}, CPU, 5),
        Case("storage", "auteur.tasks.storage.save", "io.storage", {"cpu1"}, IO, 1),
        Case("upload", "auteur.tasks.storage.upload_to_cloud", "io.storage", {"cpu1"}, IO, 1),
        Case("default", "auteur.tasks.misc.report", "cpu.analysis", {"cpu1"}, CPU, 5),
        # Urgent work: queue=priority (priority_task=True in Auteur's router).
        Case(
            "urgent",
            "auteur.tasks.media.generate_image",
            "priority",
            gpus,
            priority=10,
            fields={"queue": "priority"},
        ),
    ]
    ids: dict[str, str] = {}
    finished: dict[str, pb.Task] = {}
    # The memory-sized generation tasks one at a time on an idle fleet: placement is then
    # decided by GPU memory alone (only the 40 GiB device fits 20-24 GB; for 12 GB the spread
    # policy prefers the device with more headroom).
    for case in cases[:3]:
        ids[case.tag] = submit_case(stack, case).task_id
        finished[ids[case.tag]] = stack.wait_state(
            ids[case.tag], S.TASK_STATE_SUCCEEDED, timeout=30
        )
    for case in cases[3:]:
        ids[case.tag] = submit_case(stack, case).task_id
    finished.update(stack.wait_all([ids[c.tag] for c in cases[3:]], timeout=60))
    check_ran_where_expected(stack, cases, finished, ids)
    for case in cases:
        assert types[finished[ids[case.tag]].worker_id] == (
            "gpu" if case.workers <= gpus else "cpu"
        )
    assert finished[ids["gen-24g"]].gpu_memory_mb == 24000

    # Per-device GPU memory is never overcommitted: two 24000 MiB tasks do not fit together on
    # the 40 GiB device (nor at all on the 16 GiB one), so they run one after the other on
    # gpu40 although it has two free slots.
    big = [
        Case(
            f"big-{i}",
            "auteur.tasks.media.generate_video",
            "gpu.generation",
            {"gpu40"},
            seconds=0.6,
            fields={"gpu_memory_mb": 24000},
        )
        for i in range(2)
    ]
    big_ids = {c.tag: submit_case(stack, c).task_id for c in big}
    finished.update(stack.wait_all(big_ids.values(), timeout=30))
    check_ran_where_expected(stack, big, finished, big_ids)
    spans = [(r["ts"], r["end"]) for r in seed_done(stack) if r["tag"].startswith("big-")]
    assert max_overlap(spans) == 1, f"two 24000 MiB tasks ran at once on one 40 GiB GPU: {spans}"

    # rate_limits: "auteur.tasks.generate.*" 10/m (burst 1): gen-12g took the token, so the
    # next generate.* task waits for the bucket to refill (6 s) and says so.
    limited = stack.submit("auteur.tasks.generate.image", [0.05, "rate-limited"])
    assert limited.queue == "gpu.generation"

    def placed_or_held() -> pb.Task | None:
        # The "rate limited" wait reason is what a placement round records when it holds a task
        # back for its rate limit.
        task = stack.get(limited.task_id)
        held = "rate limited" in task.reason.lower()
        return task if held or task.state != S.TASK_STATE_PENDING else None

    task = wait_until(placed_or_held, timeout=10, message="a placement round to decide on the task")
    assert task.state == S.TASK_STATE_PENDING, task
    assert "rate" in task.reason.lower(), task.reason
    stack.cancel(limited.task_id)


# ---------------------------------------------------------------------------------- MoRAG


@pytest.mark.scheduler_env(SWITCHYARD_CONFIG_FILE=config("morag.yaml"))
def test_morag_pipeline(stack: Stack) -> None:
    """Tasks 1 and 6: audio/video/image on GPU workers (gpu_priority), documents/web/text on CPU
    workers (cpu_standard), youtube GPU-preferred (gpu_fallback), bulk work in cpu_batch."""
    stack.add_worker("gpu1", "gpu", concurrency=2, simulate_gpu="1xA100:40960", app=SEED_APP)
    stack.add_worker("cpu1", "cpu", concurrency=3, app=SEED_APP)
    stack.wait_workers_connected(["gpu1", "cpu1"])
    assert worker_types(stack) == {"gpu1": "gpu", "cpu1": "cpu"}

    cases = [
        Case(
            "audio",
            "morag.worker.process_audio_task",
            "gpu_priority",
            {"gpu1"},
            GPU_INTENSIVE,
            8,
            fields={"content_type": "audio"},
        ),
        Case(
            "video",
            "morag.worker.process_video_task",
            "gpu_priority",
            {"gpu1"},
            GPU_INTENSIVE,
            8,
            fields={"content_type": "video"},
        ),
        Case(
            "image",
            "morag.worker.process_image_task",
            "gpu_priority",
            {"gpu1"},
            GPU_INTENSIVE,
            8,
            fields={"content_type": "image"},
        ),
        Case(
            "ingest-audio",
            "morag.ingest_tasks.ingest_audio_task",
            "gpu_priority",
            {"gpu1"},
            GPU_INTENSIVE,
            8,
        ),  # routed by name, no content type
        Case(
            "ingest-video-user",
            "morag.ingest_tasks.ingest_video_task",
            "gpu_priority",
            {"gpu1"},
            GPU_INTENSIVE,
            10,
            fields={"user_initiated": True},
        ),
        Case(
            "document",
            "morag.worker.process_document_task",
            "cpu_standard",
            {"cpu1"},
            CPU,
            3,
            fields={"content_type": "document"},
        ),
        Case(
            "web",
            "morag.worker.process_web_task",
            "cpu_standard",
            {"cpu1"},
            CPU,
            3,
            fields={"content_type": "web"},
        ),
        Case(
            "ingest-document",
            "morag.ingest_tasks.ingest_document_task",
            "cpu_standard",
            {"cpu1"},
            CPU,
            3,
        ),
        Case(
            "text",
            "morag.worker.process_text_task",
            "cpu_standard",
            {"cpu1"},
            CPU,
            3,
            fields={"content_type": "text"},
        ),  # no rule: content type decides
        Case(
            "urgent-doc",
            "morag.worker.process_document_task",
            "cpu_standard",
            {"cpu1"},
            CPU,
            10,
            fields={"content_type": "document", "priority": 10},
        ),
        Case(
            "bulk",
            "morag.worker.process_document_task",
            "cpu_batch",
            {"cpu1"},
            priority=1,
            fields={"content_type": "document", "queue": "cpu_batch"},
        ),
    ]
    ids = {c.tag: submit_case(stack, c).task_id for c in cases}
    finished = stack.wait_all(ids.values(), timeout=60)
    check_ran_where_expected(stack, cases, finished, ids)

    # Youtube: GPU preferred. With the GPU worker idle it takes the GPU (it would wait up to
    # preferred_gpu_wait_seconds=30 for one before a CPU worker).
    youtube = Case(
        "youtube",
        "morag.worker.process_youtube_task",
        "gpu_fallback",
        {"gpu1"},
        MIXED,
        5,
        fields={"content_type": "youtube"},
    )
    ids["youtube"] = submit_case(stack, youtube).task_id
    finished[ids["youtube"]] = stack.wait_state(ids["youtube"], S.TASK_STATE_SUCCEEDED, timeout=30)
    check_ran_where_expected(stack, [youtube], finished, ids)

    # gpu=required work never runs on the CPU worker, even when it waits.
    busy = [
        submit_case(
            stack,
            Case(
                f"gpu-busy-{i}",
                "morag.worker.process_video_task",
                "gpu_priority",
                {"gpu1"},
                seconds=1.5,
            ),
        ).task_id
        for i in range(2)
    ]
    for task_id in busy:
        stack.wait_state(task_id, S.TASK_STATE_RUNNING, timeout=30)
    waiting = submit_case(
        stack,
        Case(
            "gpu-waits",
            "morag.worker.process_audio_task",
            "gpu_priority",
            {"gpu1"},
            fields={"content_type": "audio"},
        ),
    )
    # A CPU task runs on the idle cpu1: the round that handed it out had the GPU task pending and
    # cpu1 free in view, and left the GPU task where it was.
    assert stack.run_probe("morag.worker.process_document_task", content_type="document").worker_id == "cpu1"
    task = stack.get(waiting.task_id)
    assert task.state == S.TASK_STATE_PENDING, task
    assert task.reason, "a pending task's GetTask says why it waits"
    done = stack.wait_all([*busy, waiting.task_id], timeout=30)
    assert {t.worker_id for t in done.values()} == {"gpu1"}


# ---------------------------------------------------------------------------------- MoRAG basic


@pytest.mark.scheduler_env(SWITCHYARD_CONFIG_FILE=config("morag-basic.yaml"))
def test_morag_basic_pipeline(stack: Stack) -> None:
    """Task 04: one queue per content kind plus `celery`; one worker (concurrency 4) serves all;
    failures retry after a fixed 60 s (three times), then end failed."""
    stack.add_worker("worker1", "cpu", concurrency=4, app=SEED_APP)
    stack.wait_workers_connected(["worker1"])

    one = {"worker1"}
    cases = [
        Case(
            "document",
            "morag.tasks.document_tasks.process_document",
            "document_processing",
            one,
            CPU,
            5,
            fields={"content_type": "document"},
        ),
        Case(
            "audio",
            "morag.tasks.audio_tasks.process_audio",
            "audio_processing",
            one,
            MIXED,
            5,
            fields={"content_type": "audio"},
        ),
        Case(
            "video",
            "morag.tasks.video_tasks.process_video",
            "video_processing",
            one,
            MIXED,
            5,
            fields={"content_type": "video"},
        ),
        Case(
            "web",
            "morag.tasks.web_tasks.process_url",
            "web_processing",
            one,
            CPU,
            5,
            fields={"content_type": "web"},
        ),
        Case("health", "morag.tasks.health_check", "celery", one, CPU, 5),
    ]
    cases += [
        Case(
            f"doc-{i}",
            "morag.tasks.document_tasks.process_document",
            "document_processing",
            one,
            seconds=0.5,
        )
        for i in range(4)
    ]
    ids = {c.tag: submit_case(stack, c).task_id for c in cases}
    finished = stack.wait_all(ids.values(), timeout=60)
    check_ran_where_expected(stack, cases, finished, ids)
    # The worker's four slots really ran four documents at once.
    spans = [(r["ts"], r["end"]) for r in seed_done(stack) if r["tag"].startswith("doc-")]
    assert max_overlap(spans) >= 2, spans

    # The retry policy: a failure is retried after 60 s +- 10 % (held by the scheduler).
    failing = stack.submit(
        "seed.always_fail", ["morag-basic failure"], {"tag": "fail"}, content_type="document"
    )
    assert failing.queue == "celery"  # not a morag.tasks.* name: the default queue
    task = stack.wait_state(failing.task_id, S.TASK_STATE_RETRYING, timeout=30)
    failed_at = next(r["end"] for r in seed_done(stack) if r["tag"] == "fail")
    delay = task.next_attempt_at.ToNanoseconds() / 1e9 - failed_at
    assert task.retry_policy == "default" and task.failures == 1, task
    assert 54.0 - 0.5 <= delay <= 66.0 + 1.0, f"first retry in {delay:.1f}s, expected 60 s +- 10 %"


def max_overlap(spans: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at one moment (ends sort before starts at the same instant)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, delta in edges:
        current += delta
        most = max(most, current)
    return most


# ---------------------------------------------------------------------------------- miStudio

MISTUDIO_LIMITS = {
    "high_priority": 8,
    "datasets": 4,
    "processing": 4,
    "training": 1,
    "extraction": 2,
    "low_priority": 2,
}


@pytest.mark.scheduler_env(SWITCHYARD_CONFIG_FILE=config("mistudio.yaml"))
def test_mistudio_pipeline_respects_per_queue_concurrency(stack: Stack) -> None:
    """Six queues routed by task module; each queue's max_tasks_per_worker caps how many of its
    tasks one worker runs at once (the "minimal" profile: one worker serves all six)."""
    stack.add_worker("hyb1", "hybrid", concurrency=6, simulate_gpu="1xA100:40960", app=SEED_APP)
    stack.wait_workers_connected(["hyb1"])

    one = {"hyb1"}
    routing = [
        Case("download", "src.workers.dataset_tasks.download_dataset_task", "datasets", one, IO, 7),
        Case(
            "tokenize", "src.workers.dataset_tasks.tokenize_dataset_task", "processing", one, CPU, 7
        ),
        Case("train", "src.workers.training_tasks.train_sae_task", "training", one, MIXED, 5),
        Case(
            "extract",
            "src.workers.extraction_tasks.extract_features_task",
            "extraction",
            one,
            MIXED,
            5,
        ),
        Case(
            "quick", "src.workers.quick_tasks.update_metadata_task", "high_priority", one, CPU, 10
        ),
        Case("cleanup", "src.workers.maintenance_tasks.cleanup_task", "low_priority", one, CPU, 3),
    ]
    ids = {c.tag: submit_case(stack, c).task_id for c in routing}
    finished = stack.wait_all(ids.values(), timeout=60)
    check_ran_where_expected(stack, routing, finished, ids)

    # Many tasks of the limited queues at once; the limits (1 + 2 + 2 = 5) are below the
    # worker's 6 slots, so only the per-queue limits can hold them back.
    burst = (
        [
            Case(
                f"train-{i}",
                "src.workers.training_tasks.train_sae_task",
                "training",
                one,
                seconds=0.6,
            )
            for i in range(3)
        ]
        + [
            Case(
                f"extract-{i}",
                "src.workers.extraction_tasks.extract_features_task",
                "extraction",
                one,
                seconds=0.6,
            )
            for i in range(4)
        ]
        + [
            Case(
                f"cleanup-{i}",
                "src.workers.maintenance_tasks.cleanup_task",
                "low_priority",
                one,
                seconds=0.6,
            )
            for i in range(4)
        ]
    )
    queue_of: dict[str, str] = {}
    burst_ids: dict[str, str] = {}
    for case in burst:
        burst_ids[case.tag] = submit_case(stack, case).task_id
        queue_of[burst_ids[case.tag]] = case.queue

    # Sample the scheduler's view of the worker while work is pending.
    most: dict[str, int] = defaultdict(int)
    most_in_flight = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        worker = stack.list_workers()["hyb1"]
        per_queue: dict[str, int] = defaultdict(int)
        for task_id in worker.task_ids:
            if task_id in queue_of:
                per_queue[queue_of[task_id]] += 1
        for queue, count in per_queue.items():
            most[queue] = max(most[queue], count)
        most_in_flight = max(most_in_flight, len(worker.task_ids))
        states = [stack.get(t).state for t in burst_ids.values()]
        if all(s == S.TASK_STATE_SUCCEEDED for s in states):
            break
        time.sleep(0.05)
    finished = stack.wait_all(burst_ids.values(), timeout=5)
    check_ran_where_expected(stack, burst, finished, burst_ids)

    for queue, count in most.items():
        assert count <= MISTUDIO_LIMITS[queue], (
            f"{count} {queue} tasks in flight on hyb1 at once; the limit is {MISTUDIO_LIMITS[queue]}"
        )
    assert most_in_flight <= 5, f"{most_in_flight} burst tasks in flight; queue limits allow 5"
    # The task bodies' own start/end times: what really ran at once, per queue.
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in seed_done(stack):
        for case in burst:
            if record["tag"] == case.tag:
                spans[case.queue].append((record["ts"], record["end"]))
    for queue, queue_spans in spans.items():
        overlap = max_overlap(queue_spans)
        assert overlap <= MISTUDIO_LIMITS[queue], f"{overlap} {queue} tasks ran at once on hyb1"
        # The limit is reached, not just respected (there were more tasks than the limit).
        assert overlap == MISTUDIO_LIMITS[queue], (
            f"{queue}: at most {overlap} ran at once with free slots; limit {MISTUDIO_LIMITS[queue]}"
        )
