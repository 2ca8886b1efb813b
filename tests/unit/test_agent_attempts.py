"""The worker side's reading of a Celery request, its running-attempt records, and progress meta."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from switchyard.wire import HEADER_ATTEMPT, HEADER_PAYLOAD_REF, HEADER_TASK_ID, HEADER_WORKER_ID

from worker_agent import environment
from worker_agent.attempts import (
    Attempt,
    attempt_from_request,
    current_attempt,
    forget_pid,
    pid_file_path,
    record_pid,
    running,
    running_attempts,
)
from worker_agent.progress import progress_fraction


@pytest.fixture(autouse=True)
def no_agent_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(environment.WORKER_ID, raising=False)
    monkeypatch.delenv(environment.RUN_DIR, raising=False)


def test_attempt_read_from_request_headers() -> None:
    request = SimpleNamespace(headers={HEADER_TASK_ID: "t1", HEADER_ATTEMPT: "3",
                                       HEADER_WORKER_ID: "w1", HEADER_PAYLOAD_REF: "1"})
    assert attempt_from_request(request) == Attempt("t1", 3, "w1", payload_by_reference=True)


def test_attempt_read_from_request_attributes_and_agent_worker_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(environment.WORKER_ID, "agent-w")
    request = SimpleNamespace(headers=None, **{HEADER_TASK_ID: "t2", HEADER_ATTEMPT: 1,
                                               HEADER_WORKER_ID: "w-in-message", HEADER_PAYLOAD_REF: 0})
    assert attempt_from_request(request) == Attempt("t2", 1, "agent-w", payload_by_reference=False)


def test_plain_celery_request_is_no_attempt() -> None:
    assert attempt_from_request(SimpleNamespace(headers={"other": "x"})) is None


def test_running_attempt_recorded_in_thread_and_pid_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(environment.RUN_DIR, str(tmp_path))
    attempt = Attempt("t3", 2, "w", payload_by_reference=False)
    pid_file = record_pid(attempt)  # written while the claim travels
    assert pid_file == pid_file_path(tmp_path, "t3", 2)
    assert pid_file.read_text() == str(os.getpid())
    assert running_attempts(tmp_path) == [("t3", 2)]
    with running(attempt, pid_file):
        assert current_attempt() == attempt
        assert running_attempts(tmp_path) == [("t3", 2)]
    assert current_attempt() is None
    assert running_attempts(tmp_path) == []


def test_a_pid_file_that_cannot_be_written_leaves_the_attempt_without_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(environment.RUN_DIR, str(tmp_path / "gone"))
    attempt = Attempt("t5", 1, "w", payload_by_reference=False)
    assert record_pid(attempt) is None
    assert "no pid file for task t5 attempt 1" in caplog.text
    with running(attempt, None):
        assert current_attempt() == attempt
    assert current_attempt() is None


def test_a_refused_claim_forgets_its_pid_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(environment.RUN_DIR, str(tmp_path))
    pid_file = record_pid(Attempt("t6", 4, "w", payload_by_reference=False))
    assert running_attempts(tmp_path) == [("t6", 4)]
    forget_pid(pid_file)
    assert running_attempts(tmp_path) == []


def test_running_attempts_reads_task_ids_with_dots_and_skips_strangers(tmp_path: Path) -> None:
    for name in ("a.b.3.pid", "t1.1.pid", "junk.pid", "t2.x.pid", "t1.1.pid.tmp", ".7.pid"):
        (tmp_path / name).write_text("1")
    assert sorted(running_attempts(tmp_path) or []) == [("a.b", 3), ("t1", 1)]


def test_running_attempts_unknown_when_the_run_dir_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    assert running_attempts(tmp_path / "gone") == []  # a missing directory: nothing runs there

    def unreadable(self: Path, pattern: str) -> list[Path]:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "glob", unreadable)
    assert running_attempts(tmp_path) is None


def test_running_outside_an_agent_writes_no_pid_file(tmp_path: Path) -> None:
    attempt = Attempt("t4", 1, "w", payload_by_reference=False)
    with running(attempt, record_pid(attempt)):
        assert current_attempt() is not None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("meta", "fraction"),
    [
        ({"progress": 0.4}, 0.4),
        ({"current": 3, "total": 4}, 0.75),
        ({"progress": 7}, 1.0),
        ({"progress": -1}, 0.0),
        ({"current": 1, "total": 0}, None),
        ({"progress": "lots"}, None),
        ({"message": "no number"}, None),
    ],
)
def test_progress_fraction_from_update_state_meta(meta: dict[str, object], fraction: float | None) -> None:
    assert progress_fraction(meta) == fraction
