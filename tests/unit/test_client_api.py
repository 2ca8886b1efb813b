"""The client's public surface: exported names, error mapping, proto views and CLI parsing.

No network: the CLI tests stop at parsing, and a scheduler address that nothing listens on
proves that bad usage is rejected before any connection is tried.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import grpc
import pytest
import switchyard
from switchyard import cli, exceptions
from switchyard._models import QueueView, TaskView, WorkerView
from switchyard.client import build_submit_request
from switchyard.v1 import scheduler_pb2, worker_pb2


def test_public_names_are_pinned() -> None:
    assert sorted(switchyard.__all__) == sorted(
        [
            "DEFAULT_TARGET",
            "TERMINAL_STATES",
            "Aborted",
            "AlreadyExists",
            "CancelResult",
            "Cancelled",
            "DeadlineExceeded",
            "FailedPrecondition",
            "GpuView",
            "InternalError",
            "InvalidArgument",
            "NotFound",
            "OutOfRange",
            "PermissionDenied",
            "QueueView",
            "ResourceExhausted",
            "SchedulerClient",
            "SubmitResult",
            "SwitchyardError",
            "TaskView",
            "Unauthenticated",
            "Unavailable",
            "Unimplemented",
            "WorkerView",
            "from_rpc_error",
        ]
    )
    for name in switchyard.__all__:
        assert hasattr(switchyard, name), name


class FakeRpcError(grpc.RpcError):
    """What a failed unary call raises: an RpcError that is also a grpc.Call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, exceptions.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, exceptions.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, exceptions.AlreadyExists),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, exceptions.ResourceExhausted),
        (grpc.StatusCode.FAILED_PRECONDITION, exceptions.FailedPrecondition),
        (grpc.StatusCode.ABORTED, exceptions.Aborted),
        (grpc.StatusCode.OUT_OF_RANGE, exceptions.OutOfRange),
        (grpc.StatusCode.UNAUTHENTICATED, exceptions.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, exceptions.PermissionDenied),
        (grpc.StatusCode.UNAVAILABLE, exceptions.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, exceptions.DeadlineExceeded),
        (grpc.StatusCode.CANCELLED, exceptions.Cancelled),
        (grpc.StatusCode.UNIMPLEMENTED, exceptions.Unimplemented),
        (grpc.StatusCode.INTERNAL, exceptions.InternalError),
        (grpc.StatusCode.UNKNOWN, exceptions.InternalError),
        (grpc.StatusCode.DATA_LOSS, exceptions.InternalError),
    ],
)
def test_every_status_code_maps_to_a_typed_error(status: grpc.StatusCode, expected: type) -> None:
    error = exceptions.from_rpc_error(FakeRpcError(status, "task t-1 has no such thing"))
    assert type(error) is expected
    assert isinstance(error, exceptions.SwitchyardError)
    assert error.status_code is status
    assert error.code == status.name
    assert error.message == "task t-1 has no such thing"
    assert str(error) == f"{status.name}: task t-1 has no such thing"


def test_every_status_code_except_ok_is_mapped() -> None:
    for status in grpc.StatusCode:
        if status is grpc.StatusCode.OK:
            continue
        assert exceptions.from_rpc_error(FakeRpcError(status, "x")).status_code is status


def test_rpc_error_without_status_becomes_internal_error() -> None:
    error = exceptions.from_rpc_error(grpc.RpcError("bare"))
    assert isinstance(error, exceptions.InternalError)
    assert error.code == "UNKNOWN"


def test_submit_request_encodes_json_and_options() -> None:
    request = build_submit_request(
        "media.transcribe_audio",
        ["a.mp3", 2],
        {"language": "de"},
        content_type="audio",
        gpu="required",
        gpu_memory_mb=8192,
        priority=9,
        labels={"zone": "eu"},
        user_initiated=True,
    )
    assert json.loads(request.args_json) == ["a.mp3", 2]
    assert json.loads(request.kwargs_json) == {"language": "de"}
    assert request.gpu == scheduler_pb2.GPU_REQUIREMENT_REQUIRED
    assert request.gpu_memory_mb == 8192
    assert request.priority == 9
    assert dict(request.labels) == {"zone": "eu"}
    assert request.user_initiated


def test_submit_request_passes_raw_json_and_rejects_bad_input() -> None:
    raw = build_submit_request("t", args_json='[1, 2]', kwargs_json='{"a": 1}')
    assert (raw.args_json, raw.kwargs_json) == ("[1, 2]", '{"a": 1}')
    assert build_submit_request("t").args_json == ""
    with pytest.raises(exceptions.InvalidArgument):
        build_submit_request("t", [object()])
    with pytest.raises(exceptions.InvalidArgument):
        build_submit_request("t", gpu="sometimes")
    with pytest.raises(exceptions.InvalidArgument):
        build_submit_request("t", "not-a-list")


def test_task_view_decodes_state_result_and_times() -> None:
    message = scheduler_pb2.Task(
        task_id="t-1",
        task_name="media.transcribe_audio",
        state=scheduler_pb2.TASK_STATE_SUCCEEDED,
        task_class=scheduler_pb2.TASK_CLASS_GPU_INTENSIVE,
        gpu=scheduler_pb2.GPU_REQUIREMENT_REQUIRED,
        worker_id="gpu-1",
        attempt=1,
        result_json='{"words": 3}',
    )
    message.submitted_at.FromDatetime(datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC))
    message.started_at.FromDatetime(datetime(2025, 1, 1, 12, 0, 1, tzinfo=UTC))
    message.finished_at.FromDatetime(datetime(2025, 1, 1, 12, 0, 3, 500000, tzinfo=UTC))
    view = TaskView.from_proto(message)
    assert view.state == "succeeded" and view.done and view.succeeded
    assert view.task_class == "gpu_intensive"
    assert view.gpu == "required"
    assert view.result == {"words": 3}
    assert view.dispatched_at is None
    assert view.wait_seconds == 1.0
    assert view.run_seconds == 2.5
    assert view.raw is message
    assert cli.to_jsonable(view)["started_at"] == "2025-01-01T12:00:01+00:00"
    assert "raw" not in cli.to_jsonable(view)


def test_unknown_enum_values_do_not_crash_the_view() -> None:
    view = TaskView.from_proto(scheduler_pb2.Task(state=99))  # type: ignore[arg-type]
    assert view.state == "unknown(99)"
    assert not view.done


def test_worker_view_prefers_fresh_gpu_load() -> None:
    message = scheduler_pb2.WorkerInfo(
        worker_id="gpu-1",
        worker_type=worker_pb2.WORKER_TYPE_GPU,
        status=scheduler_pb2.WORKER_STATUS_CONNECTED,
        slots=2,
        free_slots=1,
        capabilities=worker_pb2.WorkerCapabilities(
            gpus=[worker_pb2.GpuDevice(index=0, name="A100", memory_total_mb=40960, memory_free_mb=40960)],
            gpu_simulated=True,
        ),
        load=worker_pb2.WorkerLoad(gpus=[worker_pb2.GpuDevice(index=0, memory_free_mb=1000, utilization_percent=80)]),
    )
    view = WorkerView.from_proto(message)
    assert (view.worker_type, view.status) == ("gpu", "connected")
    (gpu,) = view.gpus
    assert (gpu.name, gpu.memory_total_mb, gpu.memory_free_mb, gpu.utilization_percent) == ("A100", 40960, 1000, 80)
    assert "simulated" in cli.format_workers([view])


def test_queue_table_has_every_column() -> None:
    view = QueueView.from_proto(scheduler_pb2.QueueStats(name="gpu_priority", pending=3, paused=True, mean_wait_seconds=0.25))
    table = cli.format_queues([view])
    header, row = table.splitlines()
    assert header.split() == ["QUEUE", "PAUSED", "PENDING", "PROCESSING", "COMPLETED", "FAILED", "MEAN", "WAIT", "MEAN", "RUN", "WORKERS"]
    assert row.split()[:3] == ["gpu_priority", "yes", "3"]
    assert "0.25s" in row


# --- CLI parsing -------------------------------------------------------------------------------

UNREACHABLE = "127.0.0.1:1"


def test_cli_parses_labels_and_submit_options() -> None:
    options = cli.build_parser().parse_args(
        [
            "--scheduler", "sched:7000", "submit", "media.process_video",
            "--args", '["v.mp4"]', "--kwargs", '{"fps": 30}',
            "--gpu", "required", "--gpu-memory-mb", "16384", "--priority", "9",
            "--label", "zone=eu", "--label", "disk = ssd", "--user-initiated", "--wait", "--timeout", "30",
            "--json",
        ]
    )
    assert options.scheduler == "sched:7000"
    assert options.json is True
    assert options.args == ["v.mp4"]
    assert options.kwargs == {"fps": 30}
    assert dict(options.label) == {"zone": "eu", "disk": "ssd"}
    assert (options.gpu, options.gpu_memory_mb, options.priority) == ("required", 16384, 9)
    assert options.user_initiated and options.wait and options.timeout == 30.0


def test_cli_label_value_may_contain_equals() -> None:
    assert cli.label("expr=a=b") == ("expr", "a=b")


def test_cli_scheduler_defaults_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_SCHEDULER", "from-env:1234")
    assert cli.build_parser().parse_args(["queues"]).scheduler == "from-env:1234"
    monkeypatch.delenv("SWITCHYARD_SCHEDULER")
    assert cli.build_parser().parse_args(["queues"]).scheduler == "127.0.0.1:50051"


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "t", "--args", "{not json"],
        ["submit", "t", "--args", '{"a": 1}'],  # an object where an array belongs
        ["submit", "t", "--kwargs", "[1]"],
        ["submit", "t", "--label", "no-equals-sign"],
        ["submit", "t", "--label", "=v"],
        ["submit", "t", "--priority", "11"],
        ["submit", "t", "--gpu", "sometimes"],
        ["submit", "t", "--gpu-memory-mb", "-1"],
        ["nosuchcommand"],
        [],
    ],
)
def test_cli_bad_usage_exits_2_before_any_network_call(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a usage error must not open a connection")

    monkeypatch.setattr(cli, "SchedulerClient", no_network)
    assert cli.main(["--scheduler", UNREACHABLE, *argv]) == 2
    assert "usage:" in capsys.readouterr().err


def test_cli_unreachable_scheduler_prints_code_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--scheduler", UNREACHABLE, "get", "t-1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: UNAVAILABLE: ")


def test_cli_json_flag_accepted_after_the_command() -> None:
    options = cli.build_parser().parse_args(["queues", "--json"])
    assert options.json is True
    options = cli.build_parser().parse_args(["--json", "queues"])
    assert options.json is True
