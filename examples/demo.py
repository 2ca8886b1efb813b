"""The local Switchyard demo: a whole fleet on one machine, a mixed workload, and a verdict.

    .venv/bin/python examples/demo.py [--keep-running] [--config FILE] [--timeout S]

Starts, each on free loopback ports: a private ``redis-server`` (in a temporary directory),
``switchyard-scheduler``, and two agents running the unmodified Celery app
``examples.media_app`` -- ``gpu-1`` (a simulated 1x A100 40 GB, type gpu) and ``cpu-1`` (type
cpu), two Celery slots each. It submits a mixed media workload through the Python client, waits
for every task, and prints where each ran and why, then the queue and worker statistics.

Exit status 0 only if every task succeeded, was classified as documented, and ran where its
class belongs: GPU-intensive work on ``gpu-1``, CPU work on ``cpu-1`` (mixed work may run on
either). Every process is stopped on exit, Ctrl-C and errors included; logs go to
``.demo/logs/``. ``--keep-running`` leaves the stack up to poke at with the ``switchyard`` CLI.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchyard import SchedulerClient, SubmitResult, SwitchyardError, TaskView, Unavailable
from switchyard.cli.render import format_queues, format_table, format_workers

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `examples` importable
    sys.path.insert(0, str(ROOT))

from examples.local_stack import Stack, StackError, child_env, free_port  # noqa: E402

LOG_DIR = ROOT / ".demo" / "logs"

GPU_WORKER = "gpu-1"
CPU_WORKER = "cpu-1"
CELERY_WORKER = ["celery", "-A", "examples.media_app", "worker", "-P", "prefork", "-c", "2", "--loglevel", "WARNING"]

# The class each content type gets, as docs/configuration.md (`content_types`) documents it: the
# scheduler's defaults, which are the first seed pipeline's (MoRAG task 1).
EXPECTED_CLASS = {
    "audio": "gpu_intensive",
    "video": "gpu_intensive",
    "image": "gpu_intensive",
    "document": "cpu",
    "web": "cpu",
    "text": "cpu",
    "youtube": "mixed",
}
# Where each class must run in this two-worker fleet; mixed work may go to either.
ALLOWED_WORKERS = {"gpu_intensive": {GPU_WORKER}, "cpu": {CPU_WORKER}, "mixed": {GPU_WORKER, CPU_WORKER}}


class DemoError(StackError):
    """The demo cannot go on; the message says why and where to look."""


@dataclass(frozen=True)
class Job:
    """One task of the demo workload."""

    label: str
    task_name: str
    content_type: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    user_initiated: bool = False
    gpu_memory_mb: int = 0

    def submit_arguments(self) -> dict[str, Any]:
        return {
            "task_name": self.task_name,
            "kwargs": self.kwargs,
            "content_type": self.content_type,
            "priority": self.priority,
            "user_initiated": self.user_initiated,
            "gpu_memory_mb": self.gpu_memory_mb,
        }


WORKLOAD: list[Job] = [
    Job("transcribe podcast", "media.transcribe_audio", "audio", {"path": "podcast.mp3"}),
    Job("process video", "media.process_video", "video", {"path": "keynote.mp4"}),
    Job("analyze image", "media.analyze_image", "image", {"path": "whiteboard.jpg"}),
    Job("parse document", "docs.parse_document", "document", {"path": "annual-report.pdf"}),
    Job("scrape web page", "web.scrape", "web", {"url": "https://example.org/news"}),
    Job("summarize text", "text.summarize", "text", {"text": "Switchyard places Celery tasks on the right worker."}),
    Job("process youtube", "media.process_youtube", "youtube", {"url": "https://youtu.be/abc"}),
    # Submitted as one atomic batch:
    Job("URGENT transcribe (user)", "media.transcribe_audio", "audio", {"path": "voicemail.wav", "seconds": 0.6},
        priority=9, user_initiated=True),
    Job("URGENT parse (prio 9)", "docs.parse_document", "document", {"path": "contract.pdf", "seconds": 0.5}, priority=9),
    Job("video, 16 GiB VRAM", "media.process_video", "video", {"path": "4k-master.mov"}, gpu_memory_mb=16384),
    Job("image, 8 GiB VRAM", "media.analyze_image", "image", {"path": "satellite.tif"}, gpu_memory_mb=8192),
    Job("summarize (user)", "text.summarize", "text", {"text": "A person is waiting for this."}, user_initiated=True),
    Job("scrape docs", "web.scrape", "web", {"url": "https://example.org/docs"}),
    Job("youtube playlist item", "media.process_youtube", "youtube", {"url": "https://youtu.be/xyz"}),
]
INDIVIDUAL = 7  # the first INDIVIDUAL jobs go through SubmitTask, the rest through SubmitBatch


def start_fleet(stack: Stack, redis_url: str, config: str | None) -> str:
    grpc_port, metrics_port = free_port(), free_port()
    scheduler_target = f"127.0.0.1:{grpc_port}"
    argv = [
        stack.executable("switchyard-scheduler"),
        "--redis-url", redis_url,
        "--listen", scheduler_target,
        "--metrics-listen", f"127.0.0.1:{metrics_port}",
        "--heartbeat-interval-seconds", "1",
        "--heartbeat-timeout-seconds", "5",
        "--lost-grace-seconds", "5",
        "--log-level", "INFO",
    ]
    if config:
        argv += ["--config", config]
    stack.start("scheduler", argv, child_env())
    print(f"scheduler   {scheduler_target} (metrics http://127.0.0.1:{metrics_port}/metrics)")

    agent_env = child_env(CELERY_BROKER_URL=redis_url)
    agent = stack.executable("switchyard-agent")
    stack.start(
        GPU_WORKER,
        [agent, "--scheduler", scheduler_target, "--worker-id", GPU_WORKER, "--type", "gpu",
         "--simulate-gpu", "1xA100:40960", "--", *CELERY_WORKER],
        agent_env,
    )
    stack.start(
        CPU_WORKER,
        [agent, "--scheduler", scheduler_target, "--worker-id", CPU_WORKER, "--type", "cpu", "--", *CELERY_WORKER],
        agent_env,
    )
    print(f"agents      {GPU_WORKER} (simulated 1x A100 40 GiB, 2 slots), {CPU_WORKER} (cpu, 2 slots)")
    return scheduler_target


def wait_for_workers(stack: Stack, client: SchedulerClient, timeout: float) -> None:
    def both_connected() -> bool:
        try:
            statuses = {worker.worker_id: worker.status for worker in client.workers()}
        except Unavailable:
            return False
        return statuses.get(GPU_WORKER) == "connected" and statuses.get(CPU_WORKER) == "connected"

    stack.wait_for(f"{GPU_WORKER} and {CPU_WORKER} to connect (ListWorkers)", both_connected, timeout)


def submit_workload(client: SchedulerClient) -> list[tuple[Job, SubmitResult]]:
    submitted = [(job, client.submit(**job.submit_arguments())) for job in WORKLOAD[:INDIVIDUAL]]
    batch = WORKLOAD[INDIVIDUAL:]
    submitted += list(zip(batch, client.submit_batch([job.submit_arguments() for job in batch]), strict=True))
    return submitted


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def judge(job: Job, task: TaskView) -> list[str]:
    """What is wrong with how this task went; empty when it went as it should."""
    problems = []
    if task.state != "succeeded":
        problems.append(f"{task.state}: {task.error or task.reason}")
    expected_class = EXPECTED_CLASS[job.content_type]
    if task.task_class != expected_class:
        problems.append(f"classified {task.task_class}, expected {expected_class}")
    allowed = ALLOWED_WORKERS.get(task.task_class, set())
    if task.worker_id not in allowed:
        problems.append(f"ran on {task.worker_id or 'no worker'}, expected {' or '.join(sorted(allowed)) or '?'}")
    reported = task.result.get("worker_id") if isinstance(task.result, dict) else None
    if task.succeeded and reported != task.worker_id:
        problems.append(f"the task itself reports worker {reported!r}, the scheduler says {task.worker_id!r}")
    return problems


def report(results: list[tuple[Job, SubmitResult, TaskView]]) -> list[str]:
    """Print the results table; return the problems found."""
    headers = ["TASK", "CONTENT", "CLASS", "QUEUE", "PRIO", "WORKER", "ATTEMPT", "WAIT", "RUN", "STATE", "OK", "SCHEDULER'S REASON"]
    rows = []
    problems = []
    for job, submitted, task in results:
        found = judge(job, task)
        problems += [f"{job.label} ({task.task_id}): {problem}" for problem in found]
        rows.append([
            job.label, job.content_type, task.task_class, task.queue, str(task.priority), task.worker_id or "-",
            str(task.attempt), _seconds(task.wait_seconds), _seconds(task.run_seconds), task.state,
            "no" if found else "yes", submitted.reason or task.reason or "-",
        ])
    print(format_table(headers, rows))
    return problems


def run_demo(options: argparse.Namespace, stack: Stack) -> int:
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    print("Switchyard local demo")
    redis_url = stack.start_redis()
    print(f"redis       {redis_url}")
    target = start_fleet(stack, redis_url, options.config)

    with SchedulerClient(target, timeout=10) as client:
        wait_for_workers(stack, client, options.startup_timeout)
        print("both workers connected\n")
        print(format_workers(client.workers()))
        print()

        started = time.monotonic()
        submitted = submit_workload(client)
        print(f"submitted {len(submitted)} tasks ({INDIVIDUAL} one by one, {len(submitted) - INDIVIDUAL} as one batch); waiting...\n")
        deadline = started + options.timeout
        results = []
        for job, result in submitted:
            stack.check_alive()
            task = client.wait(result.task_id, timeout=max(1.0, deadline - time.monotonic()))
            results.append((job, result, task))
        elapsed = time.monotonic() - started

        problems = report(results)
        print(f"\nall {len(results)} tasks finished in {elapsed:.1f}s\n")
        print("queues (ListQueues)")
        print(format_queues(client.queues()))
        print()
        print("workers (ListWorkers)")
        print(format_workers(client.workers()))
        print()

        if problems:
            print("VERDICT: FAIL")
            for problem in problems:
                print(f"  - {problem}")
            print(f"logs: {LOG_DIR}")
        else:
            print(
                "VERDICT: PASS - every task succeeded; GPU-intensive work ran on "
                f"{GPU_WORKER}, CPU work on {CPU_WORKER}, mixed work where a slot was free"
            )

        if options.keep_running:
            print(f"\nthe stack keeps running; try:\n  export SWITCHYARD_SCHEDULER={target}")
            print("  .venv/bin/switchyard queues\n  .venv/bin/switchyard workers")
            print("  .venv/bin/switchyard submit media.analyze_image --content-type image --wait")
            print(f"logs: {LOG_DIR}\nCtrl-C stops everything.")
            while True:
                stack.check_alive()
                time.sleep(1)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up after the run (Ctrl-C stops it)")
    parser.add_argument("--config", metavar="FILE", help="scheduler queue/rules file (default: the scheduler's built-in queues)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds to wait for the workload (default 120)")
    parser.add_argument("--startup-timeout", type=float, default=60.0, metavar="S", help="seconds to wait for the fleet (default 60)")
    options = parser.parse_args(argv)

    if shutil.which("redis-server") is None:
        print("error: redis-server is not on PATH; run `make deps-check` (or apt-get install redis-server)", file=sys.stderr)
        return 1
    stack = Stack(prefix="switchyard-demo-", log_dir=LOG_DIR, error=DemoError, poll_interval=0.2,
                  logs_phrase="logs are in")
    return stack.run(lambda: run_demo(options, stack), (DemoError, SwitchyardError))


if __name__ == "__main__":
    sys.exit(main())
