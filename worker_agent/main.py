"""`switchyard-agent`: the one place that wires probe, scheduler stream and Celery supervisor.

    switchyard-agent --scheduler HOST:PORT[,HOST:PORT...] --worker-id ID [options] -- celery -A MODULE worker [args]

Start-up order matters:

1. The agent starts the Celery worker, which loads the user's app and reports the task names it
   registers and its broker, then waits (`worker_agent.handshake`): it consumes nothing yet.
2. The agent connects to the leading scheduler (`worker_agent.stream`, retrying with backoff and
   following the leader) with a hello that already names those tasks, so placement never sends
   this worker a task it cannot run, and waits for the welcome.
3. The welcome names the state Redis, which is also where the scheduler writes every hand-out's
   Celery message. If the app's broker is another Redis the agent refuses to start: one error
   line, the Celery worker stopped before it consumed anything, exit 2
   (`worker_agent.broker_check`). Otherwise it hands the worker the state Redis, and Celery
   starts its pool and consumes.

It then heartbeats for as long as Celery runs, reconnecting (to whichever scheduler leads) as
often as needed; the Celery worker and its running tasks never notice. When the Celery worker
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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from switchyard.redis_urls import RedisUrlError, check_url
from switchyard.security import (
    TLS_CA_ENV,
    TLS_CERT_ENV,
    TLS_KEY_ENV,
    TLS_SERVER_NAME_ENV,
    CredentialError,
    TlsSettings,
    TokenSource,
    resolve_tls,
    resolve_token,
)
from switchyard.v1 import agent_pb2, worker_pb2
from switchyard.wire import (
    DEFAULT_KEY_PREFIX,
    LABEL_KEY_RULE,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    WORKER_ID_RULE,
    label_key_problem,
    worker_id_problem,
    worker_labels_problem,
)

from worker_agent import __version__, environment
from worker_agent.attempts import running_attempts
from worker_agent.broker_check import Verdict, compare_broker, redact
from worker_agent.handshake import AgentChannel, HandshakeError, WorkerRelease, WorkerReport
from worker_agent.labels import read_runtime_labels, worker_labels, write_agent_labels
from worker_agent.probe import (
    Capabilities,
    GpuProber,
    probe_capabilities,
    sample_load,
    to_capabilities_proto,
    to_load_proto,
)
from worker_agent.stream import (
    ADDRESS_FORM,
    DEFAULT_MAX_BACKOFF_SECONDS,
    AgentStream,
    parse_scheduler_addresses,
)
from worker_agent.supervise import (
    CeleryWorker,
    CommandError,
    ExitStatus,
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
# Exit code when the agent itself cannot start (bad arguments, no state Redis, wrong broker).
EXIT_USAGE = 2
# How long a Celery worker told not to start (start-up channel closed) may take to exit.
REFUSED_WORKER_EXIT_SECONDS = 10.0


RUN_DIR_BASES = ("/dev/shm",)
"""Where the run directory goes when it can: memory (its pid files are written and removed at
every task's start and end, several times faster on tmpfs than on a disk); else the system's
temporary directory."""


def make_run_dir(worker_id: str) -> Path:
    """A fresh private run directory for this agent (pid files, runtime labels)."""
    for base in RUN_DIR_BASES:
        if os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            try:
                return Path(tempfile.mkdtemp(prefix=f"sy-agent-{worker_id}-", dir=base))
            except OSError:
                continue
    return Path(tempfile.mkdtemp(prefix=f"sy-agent-{worker_id}-"))


class ConfigError(ValueError):
    """The agent's command line or environment is invalid; the message says how to fix it."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent was told at start, validated."""

    schedulers: tuple[str, ...]
    """AgentGateway addresses (HOST:PORT) of the schedulers sharing one Redis; the agent finds the leader."""
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
    tls: TlsSettings | None = None
    """TLS to the schedulers (and the agent's certificate for mTLS); None: plaintext."""
    token: TokenSource | None = field(default=None, repr=False)
    """The agent's token (role agent, bound to this worker id); None: none sent."""


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
    problem = worker_labels_problem(labels)
    if problem is not None:
        raise ConfigError(f"invalid --labels: {problem}")
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
                        help=f"scheduler address(es) {ADDRESS_FORM} (a port left out is 50051); with "
                        "several (a leader and standbys) the agent follows the leader [SWITCHYARD_SCHEDULER]")
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
                        help="the scheduler's Redis as this worker reaches it, when that differs from the "
                        "URL the scheduler sends; the Celery app's broker must be this Redis")
    parser.add_argument("--reconnect-max-seconds", type=float, default=DEFAULT_MAX_BACKOFF_SECONDS,
                        help="longest wait between reconnect attempts (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    security = parser.add_argument_group("security (docs/security.md)")
    security.add_argument("--tls", action="store_true",
                          help="use TLS, trusting the system's CAs (implied by --tls-ca/--tls-cert)")
    security.add_argument("--tls-ca", metavar="FILE",
                          help=f"PEM CA the scheduler's certificate must chain to; turns TLS on [{TLS_CA_ENV}]")
    security.add_argument("--tls-cert", metavar="FILE",
                          help=f"this agent's certificate (PEM) for a scheduler that requires one (mTLS); its "
                          f"identity must be the worker id [{TLS_CERT_ENV}]")
    security.add_argument("--tls-key", metavar="FILE", help=f"private key (PEM) of --tls-cert [{TLS_KEY_ENV}]")
    security.add_argument("--tls-server-name", metavar="NAME",
                          help="name the scheduler's certificate must carry when it differs from the host "
                          f"dialled [{TLS_SERVER_NAME_ENV}]")
    security.add_argument("--token-file", metavar="FILE",
                          help=f"file holding this worker's agent token, read again at every reconnect "
                          f"[{TOKEN_FILE_ENV}, or the token itself in {TOKEN_ENV}]")
    parsed = parser.parse_args(own_args)

    if not parsed.scheduler:
        raise ConfigError(f"--scheduler {ADDRESS_FORM} is required (or set SWITCHYARD_SCHEDULER)")
    try:
        schedulers = parse_scheduler_addresses(parsed.scheduler)
    except ValueError as exc:
        raise ConfigError(f"--scheduler: {exc}") from None
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
    if parsed.state_redis_url:
        try:
            check_url(parsed.state_redis_url)
        except RedisUrlError as exc:
            raise ConfigError(f"--state-redis-url: {exc}") from None
    try:
        tls = resolve_tls(tls=parsed.tls or None, ca_file=parsed.tls_ca, cert_file=parsed.tls_cert,
                          key_file=parsed.tls_key, server_name=parsed.tls_server_name, environ=environ)
        token = resolve_token(token_file=parsed.token_file, environ=environ)
    except CredentialError as exc:
        raise ConfigError(exc.message) from None
    return AgentConfig(
        schedulers=schedulers,
        worker_id=parsed.worker_id,
        celery_command=tuple(celery_command),
        worker_type=parsed.worker_type,
        simulate_gpu=parsed.simulate_gpu,
        labels=parse_labels(parsed.labels),
        state_redis_url=parsed.state_redis_url,
        reconnect_max_seconds=parsed.reconnect_max_seconds,
        log_level=parsed.log_level.upper(),
        tls=tls,
        token=token,
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
        self.run_dir = make_run_dir(config.worker_id)
        write_agent_labels(self.run_dir, dict(config.labels))
        self.worker: CeleryWorker | None = None
        self.registered_tasks: tuple[str, ...] = ()
        """Task names the Celery worker's app registers, as it reported them at start."""
        self.instance = uuid.uuid4().hex
        """This agent process's id in every hello: a new one tells the scheduler the worker restarted."""
        self.stop_requested = asyncio.Event()
        self.stream = AgentStream(
            config.schedulers,
            build_hello=self.build_hello,
            sample_load=self.sample_load,
            on_cancel=self.cancel,
            reconnect_max_seconds=config.reconnect_max_seconds,
            current_labels=self.current_labels,
            tls=config.tls,
            token=config.token,
            running_attempts=self.running_attempts,
        )
        self._stream_task: asyncio.Task[None] | None = None

    def build_hello(self) -> agent_pb2.AgentHello:
        """The hello for a (re)connect: the Celery pid and the task names its app registers."""
        return agent_pb2.AgentHello(
            worker_id=self.config.worker_id,
            worker_type=self.worker_type,
            capabilities=to_capabilities_proto(self.capabilities),
            labels=self.current_labels(),
            slots=self.command.slots,
            celery_queue=self.command.queue,
            agent_version=__version__,
            celery_pid=self.worker.pid if self.worker is not None else 0,
            registered_tasks=self.registered_tasks,
            agent_instance=self.instance,
        )

    def current_labels(self) -> dict[str, str]:
        """--labels, overlaid with labels set at runtime (worker_agent.labels)."""
        return worker_labels(self.config.labels, read_runtime_labels(self.run_dir))

    def sample_load(self) -> worker_pb2.WorkerLoad:
        """Load for one heartbeat; active tasks are the attempts with a pid file."""
        return to_load_proto(sample_load(self.prober, len(self.running_attempts() or ())))

    def running_attempts(self) -> list[tuple[str, int]] | None:
        """The attempts with a pid file; the scheduler takes back a running one left out too long."""
        return running_attempts(self.run_dir)

    async def cancel(self, task_id: str, attempt: int) -> None:
        """Local cancel of one attempt (wire contract: SIGTERM its pool child, then SIGKILL)."""
        await cancel_attempt(self.run_dir, task_id, attempt)

    async def run(self) -> int:
        """Start Celery, connect, check the broker, release Celery, supervise; returns the exit code."""
        gpus = ", ".join(f"{g.name} {g.memory_total_mb} MiB" for g in self.capabilities.gpus) or "none"
        log.info(
            "agent %s for worker %s: type %s, %d CPUs, GPUs: %s, %d slots, queue %s, scheduler(s) %s (%s, %s)",
            __version__, self.config.worker_id, worker_pb2.WorkerType.Name(self.worker_type),
            self.capabilities.cpu_count, gpus, self.command.slots, self.command.queue,
            ",".join(self.config.schedulers),
            ("mTLS" if self.config.tls.cert_file else "TLS") if self.config.tls else "plaintext",
            self.config.token.origin if self.config.token else "no token",
        )
        channel = AgentChannel()
        try:
            return await self._supervise(channel)
        finally:
            channel.close()
            await self.stream.close()
            if self._stream_task is not None:
                self._stream_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._stream_task
            shutil.rmtree(self.run_dir, ignore_errors=True)

    async def _supervise(self, channel: AgentChannel) -> int:
        env = dict(os.environ)
        # The state Redis and key prefix come later, through the channel, once the scheduler
        # has named them; a value inherited from the agent's own environment must not leak in.
        env.pop(environment.STATE_REDIS_URL, None)
        env.pop(environment.KEY_PREFIX, None)
        for name in environment.AGENT_SECRETS:
            env.pop(name, None)
        env.update({
            environment.WORKER_ID: self.config.worker_id,
            environment.RUN_DIR: str(self.run_dir),
            environment.AGENT_PID: str(os.getpid()),
            environment.AGENT_CHANNEL_FD: str(channel.worker_fd),
        })
        worker = self.worker = CeleryWorker(self.command, env, pass_fds=(channel.worker_fd,))
        worker.start()
        channel.worker_started()
        exited = asyncio.create_task(worker.wait())
        stopped = asyncio.create_task(self.stop_requested.wait())
        try:
            # 1. The worker loads the app and says what it registers.
            reporting = asyncio.create_task(channel.read_report())
            await asyncio.wait({reporting, exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not reporting.done():
                reporting.cancel()
                return await self._ended_before_start(exited, channel)
            try:
                report = reporting.result()
            except HandshakeError as exc:
                log.error("the Celery worker's start-up report is unreadable (%s); stopping", exc)
                return await self._refuse(channel, exited, None)
            if report is None:
                # The worker closed its end without a report: it is exiting (an import error, say).
                await asyncio.wait({exited}, timeout=REFUSED_WORKER_EXIT_SECONDS)
                if exited.done():
                    return _worker_ended(exited.result())
                log.error("the Celery worker closed its start-up channel without reporting its tasks; stopping it")
                return await self._refuse(channel, exited, None)
            self.registered_tasks = report.registered_tasks
            log.info("Celery worker %d loaded its app: %d task(s) registered (%s); connecting to the scheduler",
                     worker.pid, len(report.registered_tasks), _names(report.registered_tasks))

            # 2. Connect; the hello names those tasks.
            self._stream_task = asyncio.create_task(self.stream.run(), name="agent-stream")
            welcomed = asyncio.create_task(self.stream.first_welcome.wait())
            await asyncio.wait({welcomed, exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not welcomed.done():
                welcomed.cancel()
                return await self._ended_before_start(exited, channel)

            # 3. Check the broker, then let Celery consume.
            release = await self._release_for(report)
            if isinstance(release, str):
                log.error("refusing to start: %s", release)
                return await self._refuse(channel, exited, f"refused to start: {release}")
            try:
                await channel.release(release)
            except OSError as exc:
                log.warning("could not release the Celery worker (%s); it is probably exiting", exc)
            await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                status = exited.result()
                await self.stream.send_worker_exited(status.exit_code, status.reason)
                return _worker_ended(status, "reported it to the scheduler; exiting")

            log.info("stopping: warm shutdown of the Celery worker (running tasks finish)")
            status = await worker.stop(self.config.stop_grace_seconds)
            await self.stream.send_worker_exited(status.exit_code, f"agent stopped: {status.reason}")
            return 0
        finally:
            stopped.cancel()
            exited.cancel()

    async def _release_for(self, report: WorkerReport) -> WorkerRelease | str:
        """The release for the worker, or why the agent must not start it (one line)."""
        welcome = self.stream.welcome
        assert welcome is not None  # first_welcome is set only with a welcome recorded
        state_redis_url = self.config.state_redis_url or welcome.state_redis_url
        if not state_redis_url:
            return "the scheduler sent no state Redis URL; pass --state-redis-url"
        # Host names may need resolving: keep the event loop (and heartbeats) going meanwhile.
        options = {"master_name": report.broker_master_name} if report.broker_master_name else {}
        verdict, explanation = await asyncio.to_thread(
            compare_broker, report.broker_url, state_redis_url, broker_transport_options=options)
        if verdict is Verdict.DIFFERENT:
            return explanation
        if verdict is Verdict.UNKNOWN:
            log.warning("%s", explanation)
        log.info("releasing the Celery worker: state Redis %s", redact(state_redis_url))
        return WorkerRelease(state_redis_url, welcome.key_prefix or DEFAULT_KEY_PREFIX)

    async def _refuse(self, channel: AgentChannel, exited: asyncio.Task[ExitStatus], reason: str | None) -> int:
        """Stop a worker that has not consumed anything (it exits when the channel closes)."""
        channel.close()
        assert self.worker is not None
        await asyncio.wait({exited}, timeout=REFUSED_WORKER_EXIT_SECONDS)
        status = exited.result() if exited.done() else await self.worker.stop(REFUSED_WORKER_EXIT_SECONDS)
        if reason is not None:
            # The scheduler welcomed this worker: tell it at once that it is gone.
            await self.stream.send_worker_exited(status.exit_code, f"agent {reason}")
        return EXIT_USAGE

    async def _ended_before_start(self, exited: asyncio.Task[ExitStatus], channel: AgentChannel) -> int:
        """The worker exited, or a stop was asked for, before the worker was released."""
        if exited.done():
            return _worker_ended(exited.result())
        log.info("stopped before the Celery worker started consuming")
        # It may still be importing the app, or wait on the channel: closing the channel ends
        # the wait, SIGTERM the import (no task has started, nothing is lost either way).
        channel.close()
        assert self.worker is not None
        await self.worker.stop(self.config.stop_grace_seconds)
        return 0

    def request_stop(self, signum: int) -> None:
        """Signal handler: begin a graceful stop (once)."""
        if not self.stop_requested.is_set():
            log.info("received %s; stopping gracefully", signal.Signals(signum).name)
            self.stop_requested.set()


def _worker_ended(status: ExitStatus, then: str = "exiting") -> int:
    """Log how the worker ended unasked; the agent's exit code mirrors a shell's, never 0."""
    log.error("%s; %s", status.reason, then)
    return 128 - status.exit_code if status.exit_code < 0 else (status.exit_code or 1)


def _names(names: Sequence[str], shown: int = 10) -> str:
    """Up to `shown` names, then a count of the rest."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (", ".join(names[:shown]) or "none") + more


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
