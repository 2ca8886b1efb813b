"""`switchyard-agent`: the one place that wires probe, scheduler stream and Celery supervisor.

    switchyard-agent --scheduler HOST:PORT --worker-id ID [options] -- celery -A MODULE worker [args]

Start-up order matters: the agent connects to the scheduler and waits for its first welcome
(retrying with backoff while the scheduler is unreachable) before it starts Celery, because the
welcome names the state Redis the worker side fences against; a worker consuming before that
could not claim anything. It then heartbeats for as long as Celery runs. When the Celery worker
exits on its own the agent reports `worker_exited` and exits non-zero; on SIGTERM/SIGINT it
warm-stops Celery (running tasks finish), closes the stream and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from switchyard.v1 import agent_pb2, worker_pb2
from switchyard.wire import (
    DEFAULT_KEY_PREFIX,
    LABEL_KEY_RULE,
    WORKER_ID_RULE,
    label_key_problem,
    worker_id_problem,
)

from worker_agent import __version__, environment
from worker_agent.attempts import active_attempts
from worker_agent.labels import read_runtime_labels
from worker_agent.probe import (
    Capabilities,
    GpuProber,
    probe_capabilities,
    sample_load,
    to_capabilities_proto,
    to_load_proto,
)
from worker_agent.stream import DEFAULT_MAX_BACKOFF_SECONDS, AgentStream
from worker_agent.supervise import (
    CeleryWorker,
    CommandError,
    WorkerCommand,
    cancel_attempt,
    rewrite_worker_command,
)

log = logging.getLogger("switchyard.agent.main")

WORKER_TYPES = {
    "cpu": worker_pb2.WORKER_TYPE_CPU,
    "gpu": worker_pb2.WORKER_TYPE_GPU,
    "hybrid": worker_pb2.WORKER_TYPE_HYBRID,
}
# Exit code when the agent itself cannot start (bad arguments, no state Redis).
EXIT_USAGE = 2


class ConfigError(ValueError):
    """The agent's command line or environment is invalid; the message says how to fix it."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent was told at start, validated."""

    scheduler: str
    """gRPC target of the scheduler's AgentGateway, HOST:PORT."""
    worker_id: str
    """Stable worker id; names the worker's own Celery queue (`switchyard.wire.worker_queue`)."""
    celery_command: tuple[str, ...]
    """The user's command after `--`, e.g. ("celery", "-A", "app", "worker", "-c", "2")."""
    worker_type: str | None = None
    """cpu, gpu or hybrid; None means gpu when GPUs are found, else cpu."""
    simulate_gpu: str | None = None
    """--simulate-gpu spec, e.g. 1xA100:40960; None probes real GPUs."""
    labels: dict[str, str] = field(default_factory=dict)
    state_redis_url: str | None = None
    """Overrides the state Redis URL from the scheduler's welcome."""
    reconnect_max_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS
    log_level: str = "INFO"
    stop_grace_seconds: float = 60.0
    """How long a graceful stop lets running tasks finish before killing Celery."""


def parse_labels(text: str) -> dict[str, str]:
    """Parse `k=v,k2=v2` into a dict; raise ConfigError naming the bad item."""
    labels: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or label_key_problem(key) is not None:
            raise ConfigError(
                f"invalid label {item!r}: expected KEY=VALUE with KEY made of {LABEL_KEY_RULE} "
                "(e.g. --labels zone=eu,model=whisper-large)"
            )
        labels[key] = value
    return labels


def parse_args(argv: Sequence[str], environ: dict[str, str] | None = None) -> AgentConfig:
    """Build the agent's config from its command line, with SWITCHYARD_* variables as defaults."""
    environ = dict(os.environ if environ is None else environ)
    args = list(argv)
    if "--" in args:
        split = args.index("--")
        own_args, celery_command = args[:split], args[split + 1:]
    else:
        own_args, celery_command = args, []

    parser = argparse.ArgumentParser(
        prog="switchyard-agent",
        description="Register a Celery worker with the Switchyard scheduler and supervise it.",
        epilog="Example: switchyard-agent --scheduler sched:50051 --worker-id gpu-01 -- "
        "celery -A myapp worker -c 2",
    )
    parser.add_argument("--scheduler", default=environ.get("SWITCHYARD_SCHEDULER"),
                        help="scheduler AgentGateway address HOST:PORT [SWITCHYARD_SCHEDULER]")
    parser.add_argument("--worker-id", default=environ.get(environment.WORKER_ID),
                        help=f"unique, stable worker id [{environment.WORKER_ID}]")
    parser.add_argument("--type", dest="worker_type", choices=sorted(WORKER_TYPES),
                        default=environ.get("SWITCHYARD_WORKER_TYPE") or None,
                        help="worker type; default gpu when GPUs are found, else cpu [SWITCHYARD_WORKER_TYPE]")
    parser.add_argument("--simulate-gpu", default=environ.get("SWITCHYARD_SIMULATE_GPU") or None,
                        metavar="SPEC", help="simulated GPUs, e.g. 1xA100:40960,2xT4:16384 [SWITCHYARD_SIMULATE_GPU]")
    parser.add_argument("--labels", default=environ.get("SWITCHYARD_LABELS", ""),
                        help="labels k=v,k2=v2 that tasks may require [SWITCHYARD_LABELS]")
    parser.add_argument("--state-redis-url", default=None,
                        help="override the state Redis URL the scheduler sends")
    parser.add_argument("--reconnect-max-seconds", type=float, default=DEFAULT_MAX_BACKOFF_SECONDS,
                        help="longest wait between reconnect attempts (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parsed = parser.parse_args(own_args)

    if not parsed.scheduler or ":" not in parsed.scheduler:
        raise ConfigError("--scheduler HOST:PORT is required (or set SWITCHYARD_SCHEDULER)")
    if not parsed.worker_id:
        raise ConfigError(f"--worker-id is required (or set {environment.WORKER_ID})")
    if worker_id_problem(parsed.worker_id) is not None:
        raise ConfigError(f"invalid worker id {parsed.worker_id!r}: use {WORKER_ID_RULE}")
    if parsed.worker_type is not None and parsed.worker_type not in WORKER_TYPES:
        raise ConfigError(f"invalid worker type {parsed.worker_type!r}: expected cpu, gpu or hybrid")
    if not celery_command:
        raise ConfigError("give the Celery worker command after '--', e.g. -- celery -A myapp worker")
    if parsed.reconnect_max_seconds <= 0:
        raise ConfigError("--reconnect-max-seconds must be positive")
    return AgentConfig(
        scheduler=parsed.scheduler,
        worker_id=parsed.worker_id,
        celery_command=tuple(celery_command),
        worker_type=parsed.worker_type,
        simulate_gpu=parsed.simulate_gpu,
        labels=parse_labels(parsed.labels),
        state_redis_url=parsed.state_redis_url,
        reconnect_max_seconds=parsed.reconnect_max_seconds,
        log_level=parsed.log_level.upper(),
    )


def resolve_worker_type(declared: str | None, capabilities: Capabilities) -> worker_pb2.WorkerType:
    """The declared type, or gpu when GPUs (real or simulated) were found, else cpu."""
    if declared is not None:
        return WORKER_TYPES[declared]
    return worker_pb2.WORKER_TYPE_GPU if capabilities.gpus else worker_pb2.WORKER_TYPE_CPU


class Agent:
    """One running agent: owns the prober, the stream, the Celery worker and its run dir."""

    def __init__(self, config: AgentConfig, command: WorkerCommand, prober: GpuProber) -> None:
        self.config = config
        self.command = command
        self.prober = prober
        self.capabilities = probe_capabilities(prober=prober)
        self.worker_type = resolve_worker_type(config.worker_type, self.capabilities)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"sy-agent-{config.worker_id}-"))
        self.worker: CeleryWorker | None = None
        self.stop_requested = asyncio.Event()
        self.stream = AgentStream(
            config.scheduler,
            build_hello=self.build_hello,
            sample_load=self.sample_load,
            on_cancel=self.cancel,
            reconnect_max_seconds=config.reconnect_max_seconds,
            current_labels=self.current_labels,
        )

    def build_hello(self) -> agent_pb2.AgentHello:
        """The hello for a (re)connect, carrying the current Celery pid."""
        return agent_pb2.AgentHello(
            worker_id=self.config.worker_id,
            worker_type=self.worker_type,
            capabilities=to_capabilities_proto(self.capabilities),
            labels=self.current_labels(),
            slots=self.command.slots,
            celery_queue=self.command.queue,
            agent_version=__version__,
            celery_pid=self.worker.pid if self.worker is not None else 0,
        )

    def current_labels(self) -> dict[str, str]:
        """--labels, overlaid with labels set at runtime (worker_agent.labels)."""
        return {**self.config.labels, **read_runtime_labels(self.run_dir)}

    def sample_load(self) -> worker_pb2.WorkerLoad:
        """Load for one heartbeat; active tasks are the attempts with a pid file."""
        return to_load_proto(sample_load(self.prober, active_attempts(self.run_dir)))

    async def cancel(self, task_id: str, attempt: int) -> None:
        """Local cancel of one attempt (wire contract: SIGTERM its pool child, then SIGKILL)."""
        await cancel_attempt(self.run_dir, task_id, attempt)

    async def run(self) -> int:
        """Connect, start Celery after the first welcome, supervise; returns the exit code."""
        gpus = ", ".join(f"{g.name} {g.memory_total_mb} MiB" for g in self.capabilities.gpus) or "none"
        log.info(
            "agent %s for worker %s: type %s, %d CPUs, GPUs: %s, %d slots, queue %s",
            __version__, self.config.worker_id, worker_pb2.WorkerType.Name(self.worker_type),
            self.capabilities.cpu_count, gpus, self.command.slots, self.command.queue,
        )
        stream_task = asyncio.create_task(self.stream.run(), name="agent-stream")
        try:
            return await self._supervise()
        finally:
            await self.stream.close()
            stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stream_task
            shutil.rmtree(self.run_dir, ignore_errors=True)

    async def _supervise(self) -> int:
        welcomed = asyncio.create_task(self.stream.first_welcome.wait())
        stopped = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({welcomed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if self.stop_requested.is_set():
            welcomed.cancel()
            log.info("stopped before the scheduler welcomed this agent")
            return 0
        welcome = self.stream.welcome
        assert welcome is not None  # first_welcome is set only with a welcome recorded
        state_redis_url = self.config.state_redis_url or welcome.state_redis_url
        if not state_redis_url:
            log.error("the scheduler sent no state Redis URL; pass --state-redis-url")
            return EXIT_USAGE
        env = dict(os.environ)
        env.update({
            environment.WORKER_ID: self.config.worker_id,
            environment.STATE_REDIS_URL: state_redis_url,
            environment.KEY_PREFIX: welcome.key_prefix or DEFAULT_KEY_PREFIX,
            environment.RUN_DIR: str(self.run_dir),
            environment.AGENT_PID: str(os.getpid()),
        })
        self.worker = CeleryWorker(self.command, env)
        self.worker.start()

        exited = asyncio.create_task(self.worker.wait())
        await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            stopped.cancel()
            status = exited.result()
            log.error("%s; reporting it to the scheduler and exiting", status.reason)
            await self.stream.send_worker_exited(status.exit_code, status.reason)
            # Mirror a shell: 128+N for a signal; never 0, since the worker was not asked to stop.
            return 128 - status.exit_code if status.exit_code < 0 else (status.exit_code or 1)

        log.info("stopping: warm shutdown of the Celery worker (running tasks finish)")
        status = await self.worker.stop(self.config.stop_grace_seconds)
        await self.stream.send_worker_exited(status.exit_code, f"agent stopped: {status.reason}")
        return 0

    def request_stop(self, signum: int) -> None:
        """Signal handler: begin a graceful stop (once)."""
        if not self.stop_requested.is_set():
            log.info("received %s; stopping gracefully", signal.Signals(signum).name)
            self.stop_requested.set()


async def run_agent(config: AgentConfig) -> int:
    """Run an agent until its Celery worker exits or it is asked to stop; returns the exit code."""
    try:
        command = rewrite_worker_command(config.celery_command, config.worker_id)
        prober = GpuProber(config.simulate_gpu)
    except (CommandError, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    agent = Agent(config, command, prober)
    loop = asyncio.get_running_loop()
    # SIGINT is handled like SIGTERM: a terminal's Ctrl-C reaches the whole process group, and
    # Celery treats a second SIGINT as a cold shutdown, so the agent only ever sends SIGTERM.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.request_stop, signum)
    try:
        return await agent.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def cli(argv: Sequence[str] | None = None) -> None:
    """Console entry point `switchyard-agent`."""
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"switchyard-agent: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.exit(asyncio.run(run_agent(config)))


if __name__ == "__main__":
    cli()
