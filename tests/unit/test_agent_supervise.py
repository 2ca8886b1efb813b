"""Rewriting the user's `celery worker` command into the one the agent supervises."""

from __future__ import annotations

import logging
import sys

import pytest
from switchyard.wire import worker_queue

from worker_agent.attempts import pid_file_path
from worker_agent.supervise import CommandError, ExitStatus, rewrite_worker_command

BOOT = (sys.executable, "-m", "worker_agent.celery_boot")


def options(argv: tuple[str, ...]) -> list[str]:
    assert argv[:3] == BOOT
    return list(argv[3:])


def test_minimal_command_gets_queue_name_and_defaults() -> None:
    command = rewrite_worker_command(["celery", "-A", "app", "worker"], "gpu-01", default_concurrency=8)
    assert options(command.argv) == [
        "-A", "app", "worker", "-Q", worker_queue("gpu-01"), "-n", "gpu-01@%h",
        "--without-mingle", "--without-gossip", "--concurrency=8",
    ]
    assert command.slots == 8
    assert command.queue == worker_queue("gpu-01")


def test_concurrency_defaults_to_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    command = rewrite_worker_command(["celery", "-A", "app", "worker"], "w")
    assert command.slots == 6
    assert "--concurrency=6" in command.argv


@pytest.mark.parametrize(
    "concurrency_args",
    [["-c", "3"], ["-c3"], ["--concurrency", "3"], ["--concurrency=3"]],
)
def test_concurrency_parsed_in_every_form_and_kept(concurrency_args: list[str]) -> None:
    command = rewrite_worker_command(["celery", "-A", "app", "worker", *concurrency_args, "-l", "INFO"], "w")
    assert command.slots == 3
    rewritten = options(command.argv)
    assert rewritten[3:3 + len(concurrency_args)] == concurrency_args
    assert not any(arg.startswith("--concurrency=") and arg != "--concurrency=3" for arg in rewritten)
    assert rewritten.count("-l") == 1


@pytest.mark.parametrize(
    "queue_args",
    [["-Q", "gpu_priority,default"], ["-Qgpu_priority"], ["--queues", "gpu_priority"], ["--queues=gpu_priority"]],
)
def test_user_queues_replaced_with_a_warning(queue_args: list[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    command = rewrite_worker_command(["celery", "-A", "app", "worker", *queue_args, "-c", "1"], "w1")
    rewritten = options(command.argv)
    assert "gpu_priority" not in " ".join(rewritten)
    assert rewritten[rewritten.index("-Q") + 1] == worker_queue("w1")
    assert rewritten.count("-Q") == 1
    assert "gpu_priority" in caplog.text and worker_queue("w1") in caplog.text


@pytest.mark.parametrize("name_args", [["-n", "custom@host"], ["--hostname", "custom@host"], ["--hostname=custom@host"]])
def test_user_node_name_kept(name_args: list[str]) -> None:
    rewritten = options(rewrite_worker_command(["celery", "-A", "app", "worker", *name_args], "w").argv)
    assert "w@%h" not in rewritten
    assert "custom@host" in " ".join(rewritten)


def test_mingle_and_gossip_flags_not_duplicated() -> None:
    rewritten = options(rewrite_worker_command(
        ["celery", "-A", "app", "worker", "--without-mingle", "--without-gossip", "-c", "2"], "w").argv)
    assert rewritten.count("--without-mingle") == 1 and rewritten.count("--without-gossip") == 1


def test_python_dash_m_celery_accepted() -> None:
    command = rewrite_worker_command(["python3", "-m", "celery", "-A", "app", "worker", "-c", "2"], "w")
    assert options(command.argv)[:3] == ["-A", "app", "worker"]


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        ([], "no Celery command"),
        (["python", "app.py"], "must start with 'celery'"),
        (["celery", "-A", "app", "beat"], "must run 'worker'"),
        (["celery", "-A", "app", "worker", "-c", "many"], "whole number"),
        (["celery", "-A", "app", "worker", "-c", "0"], "at least 1"),
    ],
)
def test_bad_commands_rejected_with_clear_messages(command: list[str], fragment: str) -> None:
    with pytest.raises(CommandError, match=fragment):
        rewrite_worker_command(command, "w")


def test_exit_status_reasons() -> None:
    assert ExitStatus(-9).reason == "celery worker killed by SIGKILL"
    assert ExitStatus(1).reason == "celery worker exited with code 1"


@pytest.mark.parametrize("task_id", ["../etc", "", ".hidden", "a/b"])
def test_pid_file_refuses_unsafe_task_ids(task_id: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        pid_file_path(tmp_path, task_id, 1)
