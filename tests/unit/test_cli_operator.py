"""The operator's command line without a scheduler: `top`'s frame, progress bars, `drain --wait`,
undrain, `@file` arguments, batch files, defaults in every `--help`, the exit-code table, and the
client's own checks (a host without a port, a priority out of range)."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from switchyard import cli
from switchyard._connection import parse_addresses
from switchyard._fleet_views import QueueView, WorkerChange, WorkerView
from switchyard._options import TaskOptions, build_submit_request
from switchyard._task_views import TaskView
from switchyard.cli import batch, commands, exits, render
from switchyard.cli import parser as cli_parser
from switchyard.cli.progress import ProgressBar, format_bar
from switchyard.cli.top import Snapshot, render_frame, top
from switchyard.exceptions import DeadlineExceeded, FailedPrecondition, InvalidArgument
from switchyard.v1 import scheduler_pb2, worker_pb2

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


class Terminal(io.StringIO):
    """Captured output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def worker_view(worker_id: str = "gpu-1", state: int = scheduler_pb2.WORKER_STATE_READY, *, reason: str = "",
                since: datetime = NOW - timedelta(seconds=65), task_ids: tuple[str, ...] = ()) -> WorkerView:
    gpu = worker_pb2.GpuDevice(index=0, name="A100", memory_total_mb=40_960, memory_free_mb=30_720, utilization_percent=37)
    return WorkerView.from_proto(scheduler_pb2.WorkerInfo(
        worker_id=worker_id, worker_type=worker_pb2.WORKER_TYPE_GPU, state=state, state_reason=reason,
        state_since=stamp(since), slots=2, free_slots=2 - len(task_ids), task_ids=list(task_ids),
        capabilities=worker_pb2.WorkerCapabilities(gpus=[gpu]), load=worker_pb2.WorkerLoad(cpu_percent=12.0),
    ))


def queue_view(name: str = "gpu_priority", **fields: Any) -> QueueView:
    return QueueView.from_proto(scheduler_pb2.QueueStats(name=name, **fields))


# --- top ------------------------------------------------------------------------------------


def test_top_frame_shows_queues_workers_and_the_leader() -> None:
    snapshot = Snapshot(
        queues=[queue_view(pending=12, processing=2, wait_p50_seconds=0.4, wait_p95_seconds=1.25,
                           submitted_per_second=3.5, finished_per_second=2.0, workers=1,
                           warnings=["depth 12 exceeds threshold 10"]),
                queue_view("cpu_standard", paused=True)],
        workers=[worker_view(task_ids=("t1",)),
                 worker_view("cpu-1", scheduler_pb2.WORKER_STATE_DRAINED, reason="drained by operator; idle")],
        leader="10.0.0.4:50051",
        taken_at=NOW,
    )
    lines = render_frame(snapshot)
    text = "\n".join(lines)
    assert lines[0].startswith("switchyard top  leader 10.0.0.4:50051  at ")
    header = next(line for line in lines if line.startswith("QUEUE"))
    assert header.split()[:4] == ["QUEUE", "STATE", "PENDING", "RUNNING"]
    gpu_row = next(line for line in lines if line.startswith("gpu_priority")).split()
    assert gpu_row[:8] == ["gpu_priority", "active", "12", "2", "0", "0.40s", "1.25s", "3.5"]
    assert next(line for line in lines if line.startswith("cpu_standard")).split()[1] == "paused"
    assert "warning: gpu_priority: depth 12 exceeds threshold 10" in text
    assert "workers: 2 (1 drained, 1 ready)" in text
    worker_row = next(line for line in lines if line.startswith("gpu-1")).split()
    assert worker_row[:8] == ["gpu-1", "gpu", "ready", "1m05s", "1/2", "10.0/40.0GiB", "37%", "12%"]
    assert "drained by operator; idle" in next(line for line in lines if line.startswith("cpu-1"))
    assert all(len(line) <= 40 for line in render_frame(snapshot, width=40))


def test_top_frame_keeps_the_last_figures_under_an_error_and_handles_an_empty_fleet() -> None:
    lines = render_frame(Snapshot([], [], "a:1", NOW, error="UNAVAILABLE: no scheduler"))
    assert lines[1] == "! UNAVAILABLE: no scheduler"
    assert "workers: 0 (none)" in lines


class FakeClient:
    """The calls the operator commands make, answered from scripted views."""

    current_address = "127.0.0.1:50051"

    def __init__(self, worker_states: list[WorkerView] | None = None) -> None:
        self.worker_states = list(worker_states or [])
        self.drained: list[str] = []

    def queues(self) -> list[QueueView]:
        return [queue_view(pending=1)]

    def workers(self) -> list[WorkerView]:
        return [worker_view()]

    def drain(self, worker_id: str) -> WorkerView:
        self.drained.append(worker_id)
        return self.worker_states.pop(0)

    def worker(self, worker_id: str) -> WorkerView:
        return self.worker_states.pop(0)

    def undrain(self, worker_id: str) -> WorkerChange:
        return WorkerChange(worker_view(worker_id), "drained", True)

    def watch(self, task_id: str, *, timeout: float | None = None) -> Iterator[TaskView]:
        for state, progress, message in (
            (scheduler_pb2.TASK_STATE_RUNNING, 0.0, ""),
            (scheduler_pb2.TASK_STATE_RUNNING, 0.25, "a quarter"),
            (scheduler_pb2.TASK_STATE_RUNNING, 0.5, "half"),
            (scheduler_pb2.TASK_STATE_SUCCEEDED, 1.0, ""),
        ):
            yield TaskView.from_proto(scheduler_pb2.Task(task_id=task_id, state=state, worker_id="w1", attempt=1,
                                                         progress=progress, progress_message=message))


def options(argv: list[str]) -> argparse.Namespace:
    return cli_parser.build_parser().parse_args(argv)


def test_top_once_prints_one_plain_frame_and_live_top_needs_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert top(FakeClient(), options(["top", "--once"]), out) == exits.EXIT_OK  # type: ignore[arg-type]
    assert "leader 127.0.0.1:50051" in out.getvalue() and "\x1b" not in out.getvalue()
    assert top(FakeClient(), options(["top"]), io.StringIO()) == exits.EXIT_USAGE  # type: ignore[arg-type]
    assert "use --once" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class CtrlCInACall(FakeClient):
    """Ctrl-C pressed while top's ListQueues call is in flight (where, in the real client, the
    main thread blocks inside gRPC)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls_finished = 0

    def queues(self) -> list[QueueView]:
        os.kill(os.getpid(), signal.SIGINT)
        self.calls_finished += 1  # reached: the interrupt did not raise inside the call
        return super().queues()


def test_ctrl_c_during_a_call_lets_the_call_finish_then_quits_top_and_gives_the_signal_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    client, out = CtrlCInACall(), _Terminal()
    assert top(client, options(["top", "--interval", "30"]), out) == exits.EXIT_OK  # type: ignore[arg-type]
    assert client.calls_finished == 1, "top quit at the first frame, not after the 30 s interval"
    assert out.getvalue().endswith("\x1b[?25h\x1b[?1049l"), "the screen is given back"
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.set_wakeup_fd(-1) == -1, "no wake-up descriptor left behind"


class CtrlCTwiceInACall(FakeClient):
    """Ctrl-C pressed twice while a call hangs (a scheduler being failed over)."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted_calls = 0

    def queues(self) -> list[QueueView]:
        os.kill(os.getpid(), signal.SIGINT)
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            self.interrupted_calls += 1
            raise
        return super().queues()


def test_a_second_ctrl_c_interrupts_a_call_that_holds_top_up() -> None:
    before = signal.getsignal(signal.SIGINT)
    client, out = CtrlCTwiceInACall(), _Terminal()
    assert top(client, options(["top", "--interval", "30"]), out) == exits.EXIT_OK  # type: ignore[arg-type]
    assert client.interrupted_calls == 1
    assert out.getvalue().endswith("\x1b[?25h\x1b[?1049l"), "the screen is given back"
    assert signal.getsignal(signal.SIGINT) is before


# --- drain --wait, undrain ------------------------------------------------------------------


DRAINING = scheduler_pb2.WORKER_STATE_DRAINING


def test_drain_wait_reports_progress_and_exits_0_once_idle() -> None:
    client = FakeClient([
        worker_view("w1", DRAINING, task_ids=("a", "b")),
        worker_view("w1", DRAINING, task_ids=("a", "b")),
        worker_view("w1", DRAINING, task_ids=("b",)),
        worker_view("w1", scheduler_pb2.WORKER_STATE_DRAINED),
    ])
    out = io.StringIO()
    assert commands.drain(client, options(["drain", "w1", "--wait", "--interval", "0.001"]), out) == exits.EXIT_OK  # type: ignore[arg-type]
    assert out.getvalue().splitlines() == [
        "w1: draining, 2 task(s) still running",
        "w1: draining, 1 task(s) still running",
        "w1: drained (idle)",
    ]


def test_drain_wait_fails_when_the_worker_is_lost_or_undrained(capsys: pytest.CaptureFixture[str]) -> None:
    lost = FakeClient([worker_view("w1", DRAINING, task_ids=("a",)),
                       worker_view("w1", scheduler_pb2.WORKER_STATE_LOST, reason="no heartbeat for 10s")])
    assert commands.drain(lost, options(["drain", "w1", "--wait", "--interval", "0.001"]), io.StringIO()) == 1  # type: ignore[arg-type]
    assert "worker w1 was lost while draining" in capsys.readouterr().err
    undrained = FakeClient([worker_view("w1", DRAINING, task_ids=("a",)), worker_view("w1")])
    assert commands.drain(undrained, options(["drain", "w1", "--wait", "--interval", "0.001"]), io.StringIO()) == 1  # type: ignore[arg-type]
    assert "it was undrained" in capsys.readouterr().err


def test_drain_wait_times_out_with_deadline_exceeded() -> None:
    busy = FakeClient([worker_view("w1", DRAINING, task_ids=("a",)) for _ in range(1000)])
    with pytest.raises(DeadlineExceeded, match="still runs 1 task"):
        commands.drain(busy, options(["drain", "w1", "--wait", "--timeout", "0.05", "--interval", "0.01"]),  # type: ignore[arg-type]
                       io.StringIO())


def test_undrain_prints_the_state_now_and_before() -> None:
    out = io.StringIO()
    assert commands.undrain(FakeClient(), options(["undrain", "gpu-1"]), out) == 0  # type: ignore[arg-type]
    assert out.getvalue().strip() == "gpu-1: ready (was drained)"
    unchanged = WorkerChange(worker_view(), "ready", False)
    assert render.format_worker_change(unchanged, "drained") == "gpu-1: ready (was not drained; nothing changed)"


def test_workers_table_shows_state_since_and_reason() -> None:
    table = render.format_workers([worker_view("w1", scheduler_pb2.WORKER_STATE_QUARANTINED,
                                               reason="5 distinct tasks failed on it within 300 s")], now=NOW)
    header, row = table.splitlines()
    assert header.split()[:4] == ["WORKER", "TYPE", "STATE", "SINCE"]
    assert row.split()[2] == "quarantined" and "(1m05s)" in row
    assert row.endswith("5 distinct tasks failed on it within 300 s")


# --- progress bars --------------------------------------------------------------------------


def test_progress_bar_draws_in_place_on_a_terminal_only() -> None:
    assert format_bar(1, 4, width=8) == "[##......]  25%"
    assert format_bar(5, 4, width=4) == "[####] 100%"
    terminal = Terminal()
    bar = ProgressBar(terminal, 10, "submitting")
    bar.update(5, "5/10")
    bar.update(5, "5/10")  # unchanged: not redrawn
    bar.print("a line")
    bar.clear()
    assert terminal.getvalue() == (
        "\r\x1b[Ksubmitting [###############...............]  50% 5/10"
        "\r\x1b[Ka line\nsubmitting [###############...............]  50% 5/10\r\x1b[K"
    )
    piped = io.StringIO()
    plain = ProgressBar(piped, 10)
    plain.update(3)
    plain.print("a line")
    assert piped.getvalue() == "a line\n"


def test_watch_moves_a_bar_for_progress_on_a_terminal_and_prints_lines_otherwise() -> None:
    terminal = Terminal()
    assert commands.watch(FakeClient(), options(["watch", "t1"]), terminal) == 0  # type: ignore[arg-type]
    shown = terminal.getvalue()
    assert "[#######" in shown and "25% a quarter" in shown and "50% half" in shown
    assert shown.count("\n") == 2, "one line per state (running, succeeded), progress only on the bar"
    piped = io.StringIO()
    assert commands.watch(FakeClient(), options(["watch", "t1"]), piped) == 0  # type: ignore[arg-type]
    assert "\r" not in piped.getvalue() and len(piped.getvalue().splitlines()) == 4


# --- arguments from files, batch files, help defaults ---------------------------------------


def test_args_and_kwargs_read_json_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kwargs_file = tmp_path / "kwargs.json"
    kwargs_file.write_text('{"path": "a.mp3", "fps": 30}')
    args_file = tmp_path / "args.json"
    args_file.write_text('[1, "two"]')
    parsed = options(["submit", "t", "--kwargs", f"@{kwargs_file}", "--args", f"@{args_file}"])
    assert (parsed.kwargs, parsed.args) == ({"path": "a.mp3", "fps": 30}, [1, "two"])
    for bad, message in ((f"@{tmp_path / 'missing.json'}", "cannot read"), (f"@{args_file}", "must be a JSON object")):
        assert cli.main(["--scheduler", "127.0.0.1:1", "submit", "t", "--kwargs", bad]) == exits.EXIT_USAGE
        assert message in capsys.readouterr().err


def test_batch_files_are_json_lines_or_an_array_and_bad_lines_are_named(tmp_path: Path) -> None:
    items = batch.parse_batch(
        '# a comment\n{"task_name": "a.b", "kwargs": {"x": 1}, "priority": 8}\n\n{"task_name": "c.d", "labels": {"z": "eu"}}\n')
    assert [(item.line, item.arguments["task_name"]) for item in items] == [(2, "a.b"), (4, "c.d")]
    assert [i.arguments["task_name"] for i in batch.parse_batch('[{"task_name": "a"}, {"task_name": "b"}]')] == ["a", "b"]
    for text, message in (
        ('{"task_name": "a"}\n{"task_name": "b", "prio": 3}\n', "line 2: got an unexpected keyword argument 'prio'"),
        ('{"task_name": "a", "priority": 11}\n', "line 1: priority must be 0"),
        ('{"kwargs": {}}\n', "line 1: task_name (a non-empty string) is missing"),
        ("{not json\n", "line 1: not valid JSON"),
        ("\n# nothing\n", "no tasks in it"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            batch.parse_batch(text)
    path = tmp_path / "bad.jsonl"
    path.write_text('{"task_name": "a", "gpu": "sometimes"}\n')
    with pytest.raises(SystemExit) as exited:
        options(["submit-batch", str(path)])
    assert exited.value.code == exits.EXIT_USAGE


def test_every_option_of_every_command_shows_its_default() -> None:
    parser = cli_parser.build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in {"": parser, **subparsers.choices}.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0 or action.default is argparse.SUPPRESS:
                continue
            shown = formatter._get_help_string(action)  # type: ignore[attr-defined]
            assert "default" in shown, f"switchyard {name} {action.option_strings[0]}: {shown!r}"
        assert sub.epilog == exits.EXIT_STATUS_HELP, name


# --- exit codes and the client's own checks -------------------------------------------------


class Raising:
    """A SchedulerClient stand-in whose every call raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __enter__(self) -> Raising:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        def call(*args: object, **kwargs: object) -> Any:
            raise self.error
        return call


@pytest.mark.parametrize(("error", "status"), [
    (FailedPrecondition("no worker could ever run this task"), exits.EXIT_FAILURE),
    (DeadlineExceeded("task t did not finish within 1 s"), exits.EXIT_TIMEOUT),
    (KeyboardInterrupt(), exits.EXIT_INTERRUPTED),
])
def test_each_kind_of_failure_has_its_exit_status(error: BaseException, status: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "SchedulerClient", lambda *args, **kwargs: Raising(error))  # type: ignore[arg-type]
    assert cli.main(["get", "t-1"]) == status


def test_a_scheduler_address_without_a_port_dials_the_schedulers_port() -> None:
    # A bare IPv6 address gets brackets (and is then the same address as "[::1]").
    assert parse_addresses("sched, [::1], ::1, a:7000") == ("sched:50051", "[::1]:50051", "a:7000")
    assert parse_addresses(["dns:///sched.example:50051", "unix:/run/sy.sock"]) == (
        "dns:///sched.example:50051", "unix:/run/sy.sock")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("priority", -1, "priority must be 0 (the scheduler decides) or 1-10; got -1"),
    ("priority", 11, "priority must be 0 (the scheduler decides) or 1-10; got 11"),
    ("priority", "high", "priority must be 0 (the scheduler decides) or 1-10; got 'high'"),
    ("gpu_memory_mb", -5, "gpu_memory_mb must be a number of MiB >= 0; got -5"),
])
def test_out_of_range_options_raise_the_clients_own_error(option: str, value: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        build_submit_request("t", TaskOptions(**{option: value}))  # type: ignore[arg-type]
    assert raised.value.message == message
    assert isinstance(raised.value, ValueError), "code that caught protobuf's ValueError still catches it"
    request = build_submit_request("t", TaskOptions(priority=10, allow_unschedulable=True))
    assert (request.priority, request.allow_unschedulable) == (10, True)


def test_batch_json_output_is_one_document(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"task_name": "a.b"}\n{"task_name": "c.d"}\n')

    class Submitter:
        def submit_batch(self, items: list[dict[str, Any]]) -> list[Any]:
            from switchyard._task_views import SubmitResult
            return [SubmitResult.from_proto(scheduler_pb2.SubmitTaskResponse(task_id=f"id-{item['task_name']}"))
                    for item in items]

    out = io.StringIO()
    assert batch.submit_batch(Submitter(), options(["--json", "submit-batch", str(path), "--chunk-size", "1"]), out) == 0  # type: ignore[arg-type]
    assert [r["task_id"] for r in json.loads(out.getvalue())] == ["id-a.b", "id-c.d"]
