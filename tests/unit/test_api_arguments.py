"""JSON-native arguments and results at the API edge (scheduler/api/convert.py): structured args
and kwargs become the same JSON text as args_json/kwargs_json, one form per request, and a task's
result comes back structured too when it is strict JSON of a bounded size."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import json_format, struct_pb2
from switchyard.v1 import scheduler_pb2

from scheduler.api import convert
from scheduler.engine.views import TaskView
from scheduler.errors import InvalidArgument
from scheduler.state.records import TaskRecord


def request(**fields: object) -> scheduler_pb2.SubmitTaskRequest:
    """A request parsed from its JSON mapping, as grpcurl or a JSON-speaking client sends it."""
    return json_format.ParseDict({"taskName": "t.job", **fields}, scheduler_pb2.SubmitTaskRequest())


def test_structured_arguments_become_the_json_text_form() -> None:
    item = convert.task_input(request(args=[1, 2.5, "x", None, True, {"a": []}], kwargs={"n": 3, "o": {}}))
    assert json.loads(item.args_json) == [1, 2.5, "x", None, True, {"a": []}]
    assert json.loads(item.kwargs_json) == {"n": 3, "o": {}}
    # Whole numbers within 2^53 arrive as integers (a Python task gets an int, not 3.0).
    assert isinstance(json.loads(item.kwargs_json)["n"], int)


def test_only_one_of_args_and_kwargs_may_be_structured_and_the_other_is_empty() -> None:
    only_kwargs = convert.task_input(request(kwargs={"x": 1}))
    assert (only_kwargs.args_json, json.loads(only_kwargs.kwargs_json)) == ("", {"x": 1})
    empty = convert.task_input(request(args=[], kwargs={}))
    assert (empty.args_json, empty.kwargs_json) == ("", "")


def test_the_text_form_passes_through_unchanged() -> None:
    item = convert.task_input(request(argsJson="[1]", kwargsJson='{"x": 12345678901234567890123}'))
    assert (item.args_json, item.kwargs_json) == ("[1]", '{"x": 12345678901234567890123}')


@pytest.mark.parametrize("fields", [
    {"args": [1], "argsJson": "[1]"},
    {"kwargs": {"x": 1}, "argsJson": "[1]"},
    {"args": [], "kwargsJson": "{}"},
])
def test_both_forms_in_one_request_are_invalid_argument_naming_the_fields(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument, match=r"are both set: send the arguments either as JSON text"):
        convert.task_input(request(**fields))


def test_the_error_names_the_batch_item() -> None:
    with pytest.raises(InvalidArgument, match=r"^tasks\[3\]: args and kwargs_json are both set"):
        convert.task_input(request(args=[1], kwargsJson='{"x": 1}'), 3)


def test_numbers_beyond_2_to_the_53_stay_doubles_and_non_finite_ones_are_refused() -> None:
    big = convert.task_input(request(args=[2**53, 2**53 + 2, 1e20]))
    # 2^53 is still an exact integer; beyond it a double is all a Struct ever held.
    assert big.args_json == "[9007199254740992,9007199254740994.0,1e+20]"
    message = scheduler_pb2.SubmitTaskRequest(task_name="t.job")
    message.kwargs.update({"deep": {"list": [1, math.nan]}})
    with pytest.raises(InvalidArgument, match=r"kwargs\.deep\.list\[1\] is nan, which JSON cannot carry"):
        convert.task_input(message)
    message = scheduler_pb2.SubmitTaskRequest(task_name="t.job")
    message.args.extend([1, {"x": math.inf}])
    with pytest.raises(InvalidArgument, match=r"args\[1\]\.x is inf"):
        convert.task_input(message)


def test_the_serializer_maps_to_its_name_and_an_unknown_number_is_refused() -> None:
    assert convert.task_input(request()).serializer == ""
    assert convert.task_input(request(serializer="SERIALIZER_MSGPACK")).serializer == "msgpack"
    assert convert.task_input(request(serializer="SERIALIZER_JSON")).serializer == "json"
    with pytest.raises(InvalidArgument, match="serializer 7 is not a Serializer"):
        convert.task_input(scheduler_pb2.SubmitTaskRequest(task_name="t.job", serializer=7))  # type: ignore[arg-type]


def task_with(result_json: str, serializer: str = "json") -> scheduler_pb2.Task:
    record = TaskRecord("t1", "t.job", "cpu_standard", result_json=result_json, serializer=serializer)
    return convert.task_message(TaskView(record, 5))


def test_a_result_comes_back_in_both_forms() -> None:
    task = task_with('{"text": "hi", "n": [1, 2.5, null]}')
    assert task.HasField("result")
    assert json_format.MessageToDict(task.result) == {"text": "hi", "n": [1, 2.5, None]}
    scalar = task_with('"done"')
    assert scalar.result.string_value == "done"
    assert task_with("null").result.WhichOneof("kind") == "null_value"


@pytest.mark.parametrize("result_json", [
    "",  # no result yet
    '{"x": NaN}',  # Python's json writes it; JSON has no NaN
    "[Infinity]",
    "1" + "0" * 400,  # too large for a double
    "[1e400]",  # the same, as a float
    json.dumps("x" * (convert.RESULT_VALUE_MAX_BYTES + 1)),  # above the bound: result_json only
])
def test_a_result_that_is_not_strict_bounded_json_is_only_in_result_json(result_json: str) -> None:
    task = task_with(result_json)
    assert not task.HasField("result")
    assert task.result_json == result_json


def test_the_task_says_how_its_message_was_encoded() -> None:
    assert task_with("", "msgpack").serializer == scheduler_pb2.SERIALIZER_MSGPACK
    assert task_with("").serializer == scheduler_pb2.SERIALIZER_JSON


def test_a_struct_value_round_trips_through_json_text_as_the_json_mapping_says() -> None:
    # What grpcurl shows for `result` is the JSON mapping of the Value: the same JSON.
    value = struct_pb2.Value()
    json_format.Parse('{"a": [true, "b"]}', value)
    assert json.loads(json_format.MessageToJson(value)) == {"a": [True, "b"]}
