"""The client's public surface: exported names, error mapping, request building, proto views
and their rendering. No network: calls go to a recording fake channel.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
import switchyard
from switchyard import (
    DeadLetterView,
    Explanation,
    QueueView,
    ScoreTerm,
    TaskView,
    WorkerVerdict,
    WorkerView,
    exceptions,
)
from switchyard._admin import build_purge_request
from switchyard._options import TaskOptions, TaskOptionsDict, build_submit_request
from switchyard.cli import render
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
            "DeadLetterView",
            "DeadlineExceeded",
            "Explanation",
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
            "ScoreTerm",
            "SubmitResult",
            "SwitchyardError",
            "TaskView",
            "Unauthenticated",
            "Unavailable",
            "Unimplemented",
            "WorkerChange",
            "WorkerVerdict",
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
        TaskOptions(
            args=["a.mp3", 2],
            kwargs={"language": "de"},
            content_type="audio",
            gpu="required",
            gpu_memory_mb=8192,
            priority=9,
            labels={"zone": "eu"},
            user_initiated=True,
        ),
    )
    assert json.loads(request.args_json) == ["a.mp3", 2]
    assert json.loads(request.kwargs_json) == {"language": "de"}
    assert request.gpu == scheduler_pb2.GPU_REQUIREMENT_REQUIRED
    assert request.gpu_memory_mb == 8192
    assert request.priority == 9
    assert dict(request.labels) == {"zone": "eu"}
    assert request.user_initiated


def test_submit_request_carries_every_option_and_only_what_was_given() -> None:
    request = build_submit_request("media.transcribe_audio", TaskOptions(
        args=[1], kwargs={"k": "v"}, content_type="audio", gpu="preferred", gpu_memory_mb=512, priority=3,
        queue="gpu_priority", idempotency_key="key-1", labels={"zone": "eu"}, user_initiated=True,
        retry_policy="media", soft_time_limit=5, hard_time_limit=9, preferred_labels={"rack": "a"},
        batch_size=11, allow_unschedulable=True,
    ))
    assert {field.name: value for field, value in request.ListFields()} == {
        "task_name": "media.transcribe_audio", "args_json": "[1]", "kwargs_json": '{"k":"v"}',
        "content_type": "audio", "gpu": scheduler_pb2.GPU_REQUIREMENT_PREFERRED, "gpu_memory_mb": 512,
        "priority": 3, "queue": "gpu_priority", "idempotency_key": "key-1", "labels": {"zone": "eu"},
        "user_initiated": True, "retry_policy": "media", "soft_time_limit_seconds": 5.0,
        "hard_time_limit_seconds": 9.0, "preferred_labels": {"rack": "a"}, "batch_size": 11,
        "allow_unschedulable": True,
    }
    # Every TaskOptions field has a request field: a new option that is not passed on fails here.
    # (args and args_json become one field, as do kwargs and kwargs_json; task_name is no option).
    assert len(request.ListFields()) == len(dataclasses.fields(TaskOptions)) - 2 + 1
    assert [field.name for field, _ in build_submit_request("t", TaskOptions()).ListFields()] == ["task_name"]
    with pytest.raises(exceptions.InvalidArgument, match="JSON-serialisable"):
        build_submit_request("t", TaskOptions(kwargs={"x": math.nan}))


def test_submit_request_passes_raw_json_and_rejects_bad_input() -> None:
    raw = build_submit_request("t", TaskOptions(args_json='[1, 2]', kwargs_json='{"a": 1}'))
    assert (raw.args_json, raw.kwargs_json) == ("[1, 2]", '{"a": 1}')
    assert build_submit_request("t", TaskOptions()).args_json == ""
    with pytest.raises(exceptions.InvalidArgument):
        build_submit_request("t", TaskOptions(args=[object()]))
    with pytest.raises(exceptions.InvalidArgument):
        build_submit_request("t", TaskOptions(gpu="sometimes"))
    with pytest.raises(exceptions.InvalidArgument):
        build_submit_request("t", TaskOptions(args="not-a-list"))


def test_keyword_options_are_the_task_options_fields() -> None:
    fields = {field.name for field in dataclasses.fields(TaskOptions)}
    assert set(TaskOptionsDict.__optional_keys__) | {"args", "kwargs"} == fields
    assert not TaskOptionsDict.__required_keys__


class RecordingChannel:
    """A channel whose every call records (method name, request) and answers an empty response."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **_: Any) -> Any:
        def call(request: Any, timeout: float | None = None) -> Any:
            self.requests.append((method.rsplit("/", 1)[-1], request))
            return response_deserializer(b"")

        return call

    unary_stream = unary_unary

    def close(self) -> None:
        raise AssertionError("a channel passed in by the caller stays open")


def test_submit_explain_and_batch_send_one_request_for_the_same_options() -> None:
    channel = RecordingChannel()
    options: dict[str, Any] = {
        "content_type": "audio",
        "gpu": "required",
        "priority": 9,
        "labels": {"zone": "eu"},
        "preferred_labels": {"disk": "ssd"},
        "soft_time_limit": 30,
        "batch_size": 12,
    }
    with switchyard.SchedulerClient(channel=channel) as client:  # type: ignore[arg-type]
        submitted = client.submit("media.transcribe_audio", ["a.mp3"], {"language": "de"}, **options)
        client.explain("media.transcribe_audio", args=["a.mp3"], kwargs={"language": "de"}, **options)
        client.submit_batch([{"task_name": "media.transcribe_audio", "args": ["a.mp3"], "kwargs": {"language": "de"}, **options}])
        with pytest.raises(exceptions.InvalidArgument):
            client.submit("t", soft_time_limit=60, hard_time_limit=30)
    expected = build_submit_request("media.transcribe_audio", TaskOptions(args=["a.mp3"], kwargs={"language": "de"}, **options))
    assert [name for name, _ in channel.requests] == ["SubmitTask", "ExplainPlacement", "SubmitBatch"]
    (_, submit), (_, explain), (_, batch) = channel.requests
    # Submissions without a key get one of the client's own (so a retry cannot duplicate them);
    # a dry run stores nothing and gets none.
    made_up = [submit.idempotency_key, batch.tasks[0].idempotency_key]
    assert all(key.startswith("switchyard-auto-") for key in made_up) and len(set(made_up)) == 2
    submit.ClearField("idempotency_key")
    batch.tasks[0].ClearField("idempotency_key")
    assert submit == expected
    assert explain.task == expected
    assert list(batch.tasks) == [expected]
    assert isinstance(submitted, switchyard.SubmitResult)


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
    assert render.to_jsonable(view)["started_at"] == "2025-01-01T12:00:01+00:00"
    assert "raw" not in render.to_jsonable(view)


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
    assert "simulated" in render.format_workers([view])


def test_queue_table_has_every_column() -> None:
    view = QueueView.from_proto(scheduler_pb2.QueueStats(
        name="gpu_priority", pending=3, paused=True, mean_wait_seconds=0.25, completed=7, failed=2, cancelled=5,
        dead_lettered=1,
    ))
    table = render.format_queues([view])
    header, row = table.splitlines()
    assert header.split() == [
        "QUEUE", "PAUSED", "PENDING", "PROCESSING", "RETRYING", "COMPLETED", "FAILED", "CANCELLED", "DEAD", "ERR%",
        "MEAN", "WAIT", "MEAN", "RUN", "WORKERS",
    ]
    assert row.split()[:3] == ["gpu_priority", "yes", "3"]
    columns = dict(zip(header.replace("MEAN ", "MEAN_").split(), row.split(), strict=True))
    assert (columns["COMPLETED"], columns["FAILED"], columns["CANCELLED"], columns["DEAD"]) == ("7", "2", "5", "1")
    assert columns["MEAN_WAIT"] == "0.25s"


def test_submit_request_carries_retry_limits_affinity_and_batch() -> None:
    request = build_submit_request(
        "media.transcribe_audio",
        TaskOptions(
            retry_policy="media",
            soft_time_limit=30,
            hard_time_limit=60.5,
            preferred_labels={"zone": "eu"},
            batch_size=25,
        ),
    )
    assert request.retry_policy == "media"
    assert (request.soft_time_limit_seconds, request.hard_time_limit_seconds) == (30.0, 60.5)
    assert dict(request.preferred_labels) == {"zone": "eu"}
    assert dict(request.labels) == {}
    assert request.batch_size == 25
    unset = build_submit_request("t", TaskOptions())
    assert (unset.retry_policy, unset.soft_time_limit_seconds, unset.hard_time_limit_seconds) == ("", 0.0, 0.0)
    assert (unset.batch_size, dict(unset.preferred_labels)) == (0, {})
    # A soft limit alone is fine: the hard limit then comes from the queue.
    assert build_submit_request("t", TaskOptions(soft_time_limit=90)).soft_time_limit_seconds == 90.0


@pytest.mark.parametrize(
    "options",
    [
        {"soft_time_limit": -1},
        {"hard_time_limit": math.nan},
        {"hard_time_limit": math.inf},
        {"soft_time_limit": 10, "hard_time_limit": 5},
        {"batch_size": -1},
    ],
)
def test_submit_request_rejects_bad_limits(options: dict[str, float]) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        build_submit_request("t", TaskOptions(**options))  # type: ignore[arg-type]


def test_purge_request_needs_exactly_one_target() -> None:
    assert list(build_purge_request(["t-1", "t-2"]).task_ids) == ["t-1", "t-2"]
    assert build_purge_request(queue="gpu_priority").queue == "gpu_priority"
    assert build_purge_request(all=True).all
    for bad in ({}, {"task_ids": ["t-1"], "all": True}, {"queue": "q", "all": True}, {"task_ids": "t-1"}):
        with pytest.raises(exceptions.InvalidArgument):
            build_purge_request(**bad)


def test_task_view_carries_retry_state() -> None:
    message = scheduler_pb2.Task(
        task_id="t-2",
        state=scheduler_pb2.TASK_STATE_RETRYING,
        priority=5,
        effective_priority=7,
        retry_policy="media",
        failures=2,
        error="ValueError: bad frame",
        error_type="ValueError",
    )
    message.next_attempt_at.FromDatetime(datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC))
    view = TaskView.from_proto(message)
    assert view.state == "retrying" and not view.done
    assert (view.retry_policy, view.failures, view.error_type, view.effective_priority) == ("media", 2, "ValueError", 7)
    assert view.next_attempt_at == datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert render.to_jsonable(view)["next_attempt_at"] == "2025-01-01T12:00:30+00:00"
    text = render.format_task(view)
    assert "effective_priority  7" in text
    assert "failures            2" in text
    assert "next_attempt_at" in text and "retry_policy        media" in text
    assert "error_type" not in text  # already the prefix of the error line


def test_task_text_leaves_out_unset_retry_fields() -> None:
    text = render.format_task(TaskView.from_proto(scheduler_pb2.Task(task_id="t-3", state=scheduler_pb2.TASK_STATE_PENDING)))
    for name in ("effective_priority", "failures", "next_attempt_at", "retry_policy", "error_type"):
        assert name not in text
    assert TaskView.from_proto(scheduler_pb2.Task()).next_attempt_at is None


def test_queue_view_and_table_show_retries_dead_letters_and_warnings() -> None:
    message = scheduler_pb2.QueueStats(
        name="gpu_priority",
        retrying=2,
        dead_lettered=4,
        error_rate=0.125,
        warnings=["depth 120 > 100", "error rate 12.5% > 10%"],
    )
    view = QueueView.from_proto(message)
    assert (view.retrying, view.dead_lettered, view.error_rate) == (2, 4, 0.125)
    assert view.warnings == ("depth 120 > 100", "error rate 12.5% > 10%")
    _header, row, *warnings = render.format_queues([view]).splitlines()
    columns = dict(zip(["QUEUE", "PAUSED", "PENDING", "PROCESSING", "RETRYING", "COMPLETED", "FAILED", "CANCELLED", "DEAD",
                        "ERR%"], row.split(), strict=False))
    assert (columns["RETRYING"], columns["DEAD"], columns["ERR%"]) == ("2", "4", "12.5")
    assert warnings == ["warning: gpu_priority: depth 120 > 100", "warning: gpu_priority: error rate 12.5% > 10%"]
    assert render.to_jsonable(view)["warnings"] == ["depth 120 > 100", "error rate 12.5% > 10%"]


def _explanation_message() -> scheduler_pb2.ExplainPlacementResponse:
    return scheduler_pb2.ExplainPlacementResponse(
        task_class=scheduler_pb2.TASK_CLASS_GPU_INTENSIVE,
        queue="gpu_priority",
        priority=8,
        effective_priority=9,
        classification_reason="content type audio needs a GPU",
        chosen_worker_id="gpu-1",
        summary="gpu-1 would take it now (score 0.85)",
        workers=[
            scheduler_pb2.WorkerVerdict(
                worker_id="gpu-1",
                eligible=True,
                score=0.85,
                terms=[
                    scheduler_pb2.ScoreTerm(name="load", value=0.5, weight=0.5, contribution=0.25),
                    scheduler_pb2.ScoreTerm(name="capability", value=1.0, weight=0.6, contribution=0.6),
                ],
            ),
            scheduler_pb2.WorkerVerdict(
                worker_id="cpu-1", rejected_by="capability", rejection_reason="task needs a GPU; worker has none"
            ),
        ],
    )


def test_explanation_view_decodes_verdicts_and_terms() -> None:
    view = Explanation.from_proto(_explanation_message())
    assert (view.task_class, view.queue, view.priority, view.effective_priority) == ("gpu_intensive", "gpu_priority", 8, 9)
    assert view.classification_reason == "content type audio needs a GPU"
    gpu, cpu = view.workers
    assert view.chosen is gpu
    assert gpu.eligible and gpu.score == 0.85 and gpu.rejected_by == ""
    assert gpu.terms == (ScoreTerm("load", 0.5, 0.5, 0.25), ScoreTerm("capability", 1.0, 0.6, 0.6))
    name, value, weight, contribution = gpu.terms[0]
    assert (name, value, weight, contribution) == ("load", 0.5, 0.5, 0.25)
    assert not cpu.eligible and cpu.rejected_by == "capability" and cpu.terms == ()
    data = render.to_jsonable(view)
    assert "raw" not in data and "raw" not in data["workers"][0]
    assert data["workers"][0]["terms"][0] == {"name": "load", "value": 0.5, "weight": 0.5, "contribution": 0.25}
    json.dumps(data)
    assert Explanation.from_proto(scheduler_pb2.ExplainPlacementResponse()).chosen is None


def test_explanation_text_has_classification_workers_and_summary() -> None:
    text = render.format_explanation(Explanation.from_proto(_explanation_message()))
    lines = text.splitlines()
    assert lines[0].split() == ["class", "gpu_intensive"]
    assert "priority  8 (effective 9)" in text
    assert "content type audio needs a GPU" in text
    header = next(line for line in lines if line.startswith("WORKER"))
    assert header.split() == ["WORKER", "ELIGIBLE", "REJECTED", "BY", "REASON", "SCORE", "TERMS"]
    gpu_row = next(line for line in lines if line.startswith("gpu-1"))
    assert gpu_row.split()[1] == "chosen" and "0.85" in gpu_row
    assert "load:0.50*0.5=0.25 capability:1.00*0.6=0.60" in gpu_row
    cpu_row = next(line for line in lines if line.startswith("cpu-1"))
    assert cpu_row.split()[1:3] == ["no", "capability"] and "task needs a GPU; worker has none" in cpu_row
    assert lines[-1] == "summary: gpu-1 would take it now (score 0.85)"
    penalty = scheduler_pb2.WorkerVerdict(
        eligible=True, terms=[scheduler_pb2.ScoreTerm(name="failures", value=0.0, weight=1.0, contribution=-0.0)]
    )
    assert render.format_score_terms(WorkerVerdict.from_proto(penalty)) == "failures:0.00*1=0.00"
    empty = render.format_explanation(Explanation.from_proto(scheduler_pb2.ExplainPlacementResponse(summary="no worker")))
    assert "no workers known" in empty


def test_dead_letter_view_and_table() -> None:
    message = scheduler_pb2.DeadLetter(
        task=scheduler_pb2.Task(
            task_id="t-9",
            task_name="media.transcribe_audio",
            queue="gpu_priority",
            state=scheduler_pb2.TASK_STATE_DEAD_LETTERED,
            failures=3,
            error_type="RuntimeError",
            error="RuntimeError: " + "x" * 200,
        ),
        reason="retries exhausted (3 of 3)",
    )
    message.dead_lettered_at.FromDatetime(datetime(2025, 1, 1, 13, 0, 0, tzinfo=UTC))
    view = DeadLetterView.from_proto(message)
    assert view.task.state == "dead_lettered" and view.task.done
    assert view.dead_lettered_at == datetime(2025, 1, 1, 13, 0, 0, tzinfo=UTC)
    assert view.reason == "retries exhausted (3 of 3)"
    header, row, footer = render.format_dead_letters([view], 7).splitlines()
    assert header.split() == ["TASK", "ID", "NAME", "QUEUE", "FAILURES", "ERROR", "TYPE", "ERROR", "DEAD-LETTERED", "AT"]
    assert row.split()[:5] == ["t-9", "media.transcribe_audio", "gpu_priority", "3", "RuntimeError"]
    assert "..." in row and len(row) < 200  # long errors are cut to one short line
    assert "RuntimeError: x" not in row  # the type has its own column
    assert footer == "1 of 7 dead letters shown"
    assert render.format_dead_letters([], 0) == "no dead letters"
    data = render.to_jsonable({"dead_letters": [view], "total": 7})
    assert data["dead_letters"][0]["task"]["task_id"] == "t-9"
    assert data["dead_letters"][0]["dead_lettered_at"] == "2025-01-01T13:00:00+00:00"
