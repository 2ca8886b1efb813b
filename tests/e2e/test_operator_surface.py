"""The operator surface against a real fleet, through the `switchyard` command line: drain --wait,
undrain and unquarantine with the worker states `workers` shows, submissions no worker could run
refused (and accepted when allowed), `top` (one frame, and live on a terminal), and
`submit-batch` with its progress bar on a terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import subprocess
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from switchyard.v1 import scheduler_pb2 as pb

from tests.support.redis_server import RedisServer, env_without_switchyard, wait_until
from tests.support.stack import VENV_BIN, S, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OPERATOR_CONFIG = """\
default_retry_policy: none        # a failed task ends failed: two failures, two distinct tasks
placement:
  quarantine_failures: 2
  failure_window_seconds: 60
  quarantine_seconds: 600         # longer than the test: only unquarantine ends it
"""


@pytest.fixture()
def stack(
    fresh_redis: RedisServer,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """The e2e stack, its scheduler quarantining a worker after 2 distinct failed tasks."""
    config = tmp_path / "operator.yaml"
    config.write_text(OPERATOR_CONFIG)
    sy = Stack(fresh_redis, tmp_path_factory.mktemp(f"stack-{request.node.name[:40]}"),
               scheduler_env={"SWITCHYARD_CONFIG_FILE": str(config)})
    try:
        sy.start_scheduler()
        yield sy
    finally:
        sy.close()


def cli_argv(stack: Stack, *args: str) -> list[str]:
    return [str(VENV_BIN / "switchyard"), "--scheduler", stack.address, *args]


def cli(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_argv(stack, *args), capture_output=True, text=True, timeout=timeout,
                          env=env_without_switchyard())


def worker_state(stack: Stack, worker_id: str) -> pb.WorkerInfo:
    return stack.list_workers()[worker_id]


def test_drain_wait_undrain_and_unquarantine_with_visible_states(stack: Stack) -> None:
    stack.add_worker("w1", "cpu", concurrency=1)
    stack.wait_workers_connected(["w1"])
    running = stack.submit("e2e.gate", ["drain"], content_type="text").task_id
    stack.wait_state(running, S.TASK_STATE_RUNNING)

    # drain --wait reports the running task and returns once the worker is idle.
    draining = subprocess.Popen(cli_argv(stack, "drain", "w1", "--wait", "--interval", "0.1"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env_without_switchyard())
    try:
        assert draining.stdout is not None
        assert draining.stdout.readline().strip() == "w1: draining, 1 task(s) still running"
        info = worker_state(stack, "w1")
        assert (info.state, info.state_reason) == (pb.WORKER_STATE_DRAINING,
                                                   "drained by operator; 1 task(s) still running")
        assert info.HasField("state_since")
        assert "draining" in cli(stack, "workers").stdout
        stack.open_gate("drain")
        out, err = draining.communicate(timeout=60)
    finally:
        draining.kill()
    assert draining.returncode == 0, err
    assert out.strip() == "w1: drained (idle)"
    shown = cli(stack, "workers").stdout
    assert "drained" in shown and "drained by operator; idle" in shown, shown

    # Drained: new work waits, until undrain gives the worker work again at once.
    waiting = stack.submit("e2e.echo", ["after-drain"], content_type="text").task_id
    assert stack.get(waiting).state == S.TASK_STATE_PENDING
    undrained = cli(stack, "undrain", "w1")
    assert (undrained.returncode, undrained.stdout.strip()) == (0, "w1: ready (was drained)"), undrained.stderr
    assert stack.wait_state(waiting, S.TASK_STATE_SUCCEEDED).worker_id == "w1"
    again = cli(stack, "undrain", "w1")
    assert (again.returncode, again.stdout.strip()) == (0, "w1: ready (was not drained; nothing changed)")
    unknown = cli(stack, "undrain", "ghost")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr

    # Two distinct tasks fail on w1: it is quarantined, says why, and takes nothing new.
    for tag in ("one", "two"):
        failing = stack.submit("e2e.fail", [tag], content_type="text").task_id
        stack.wait_state(failing, S.TASK_STATE_FAILED)
    wait_until(lambda: worker_state(stack, "w1").state == pb.WORKER_STATE_QUARANTINED, timeout=15,
               message="w1 quarantined")
    info = worker_state(stack, "w1")
    assert info.state_reason == "2 distinct tasks failed on it within 60 s"
    assert info.HasField("quarantined_until")
    held = stack.submit("e2e.echo", ["held"], content_type="text").task_id
    assert "quarantin" in stack.get(held).reason, stack.get(held).reason
    freed = cli(stack, "--json", "unquarantine", "w1")
    assert freed.returncode == 0, freed.stderr
    change = json.loads(freed.stdout)
    assert (change["changed"], change["previous_state"], change["worker"]["state"]) == (True, "quarantined", "ready")
    assert stack.wait_state(held, S.TASK_STATE_SUCCEEDED).worker_id == "w1"


def test_submissions_no_known_worker_could_run_are_refused_with_the_reason(stack: Stack) -> None:
    stack.add_worker("gpu1", "gpu", concurrency=1, simulate_gpu="1xA100:40960", labels={"zone": "eu"})
    stack.wait_workers_connected(["gpu1"])
    for flags, reason in (
        (["--content-type", "video", "--gpu-memory-mb", "81920"],
         "asks for 81920 MiB of GPU memory on one device, more than any known GPU has (the largest: 40960 MiB, on gpu1)"),
        (["--content-type", "text", "--label", "zone=us"], "requires label zone=us, which no known worker has"),
        (["--content-type", "auido"], "did you mean 'audio'"),
    ):
        refused = cli(stack, "submit", "e2e.echo", *flags)
        assert refused.returncode == 1, (flags, refused.stdout, refused.stderr)
        assert refused.stderr.startswith("error: FAILED_PRECONDITION: no worker could ever run this task: "), refused.stderr
        assert reason in refused.stderr, refused.stderr
        allowed = cli(stack, "--json", "submit", "e2e.echo", *flags, "--allow-unschedulable")
        assert allowed.returncode == 0, allowed.stderr
        assert stack.get(json.loads(allowed.stdout)["task_id"]).state == S.TASK_STATE_PENDING
    # What fits is accepted and runs.
    fits = cli(stack, "submit", "e2e.echo", "--content-type", "video", "--gpu-memory-mb", "20000",
               "--label", "zone=eu", "--wait", "--timeout", "60")
    assert fits.returncode == 0, (fits.stdout, fits.stderr)


def read_until(fd: int, wanted: str, timeout: float = 30.0) -> str:
    """What a terminal shows until `wanted` appears in it (fails after `timeout` seconds)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{wanted!r} never appeared on the terminal; it shows {seen[-2000:]!r}")
        chunk = read_some(fd, remaining)
        if chunk is None:  # the other end closed
            break
        seen += chunk
    return seen


def read_some(fd: int, timeout: float) -> str | None:
    """What terminal `fd` shows within `timeout` seconds ("" if nothing); None once every
    other end of it is closed."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return ""
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        return None
    return chunk.decode(errors="replace") if chunk else None


def wait_reading(process: subprocess.Popen[bytes], fd: int, timeout: float = 15.0) -> tuple[int, str]:
    """Wait for `process` to exit while reading what it draws on terminal `fd` (a terminal
    nobody reads fills up and stops its writer); its exit status and everything it drew. Past
    `timeout`, fail with the process's Python stack."""
    seen = ""
    deadline = time.monotonic() + timeout
    while True:
        chunk = read_some(fd, 0.05)
        seen += chunk or ""
        if not chunk and process.poll() is not None:
            return process.returncode, seen
        if time.monotonic() > deadline:
            stack = subprocess.run([str(VENV_BIN / "py-spy"), "dump", "--pid", str(process.pid)],
                                   capture_output=True, text=True, timeout=30)
            raise AssertionError(f"still running {timeout:.0f}s after the key; its stack:\n{stack.stdout}{stack.stderr}"
                                 f"\nthe terminal shows {seen[-2000:]!r}")


def _take_the_terminal() -> None:
    """In the child, after it started its own session: make its stdin (the pseudo-terminal) the
    session's controlling terminal, so Ctrl-C typed on it is a SIGINT, as in a shell."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def on_terminal(argv: Sequence[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start `argv` with a pseudo-terminal as stdin, stdout and stderr (and as its controlling
    terminal); returns it and our end."""
    ours, theirs = pty.openpty()
    process = subprocess.Popen(list(argv), stdin=theirs, stdout=theirs, stderr=theirs, env=env_without_switchyard(),
                               start_new_session=True, preexec_fn=_take_the_terminal)
    os.close(theirs)
    return process, ours


def test_top_shows_queues_workers_and_leader_once_and_live_and_quits_on_q(stack: Stack) -> None:
    stack.add_worker("gpu1", "gpu", concurrency=2, simulate_gpu="1xA100:40960")
    stack.wait_workers_connected(["gpu1"])
    stack.run_probe(content_type="audio")

    once = cli(stack, "top", "--once")
    assert once.returncode == 0, once.stderr
    lines = once.stdout.splitlines()
    assert lines[0].startswith(f"switchyard top  leader {stack.address}  at ")
    rows = {line.split()[0]: line.split() for line in lines if line.split()}
    assert rows["gpu_priority"][1] == "active" and rows["cpu_standard"][1] == "active"
    assert rows["gpu1"][:3] == ["gpu1", "gpu", "ready"] and rows["gpu1"][4] == "0/2"
    assert "/40.0GiB" in rows["gpu1"][5]
    assert "\x1b" not in once.stdout

    for quit_key in (b"q", b"\x03"):  # q, then Ctrl-C (the terminal turns it into SIGINT)
        process, terminal = on_terminal(cli_argv(stack, "top", "--interval", "0.2"))
        try:
            shown = read_until(terminal, "gpu1")
            assert "\x1b[?1049h" in shown and f"leader {stack.address}" in shown
            os.write(terminal, quit_key)
            code, shown = wait_reading(process, terminal)
            assert code == 0, quit_key
            assert "\x1b[?1049l" in shown, "the terminal is given back"
        finally:
            process.kill()
            os.close(terminal)


def test_submit_batch_from_a_file_draws_progress_on_a_terminal(stack: Stack, tmp_path: Path) -> None:
    stack.add_worker("w1", "cpu", concurrency=2)
    stack.wait_workers_connected(["w1"])
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"task_name": "e2e.echo", "args": [i], "content_type": "text"}) + "\n"
                             for i in range(12)))
    process, terminal = on_terminal(cli_argv(stack, "submit-batch", str(tasks), "--chunk-size", "5", "--wait"))
    try:
        shown = read_until(terminal, "12 task(s): 12 succeeded, 0 did not", timeout=90)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
        os.close(terminal)
    assert "\r\x1b[Ksubmitting [" in shown and "\r\x1b[Kwaiting [" in shown
    # Piped, the same command prints plain lines: one per task, no bar.
    piped = cli(stack, "submit-batch", str(tasks))
    assert piped.returncode == 0 and "\r" not in piped.stdout + piped.stderr
    assert len(piped.stdout.splitlines()) == 12
