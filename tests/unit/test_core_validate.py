"""Submission validation of the pure core: every bad input gets a message a person can act on."""

from __future__ import annotations

import pytest

from scheduler.core.model import GpuNeed, Submission
from scheduler.core.validate import (
    SubmitLimits,
    TaskInput,
    batch_error,
    payload_digest,
    validate_input,
)
from scheduler.errors import InvalidArgument, NotFound, PayloadTooLarge

LIMITS = SubmitLimits(
    max_payload_bytes=1000,
    queue_names=("gpu_priority", "cpu_standard"),
    retry_policy_names=("none", "default", "critical"),
)


def item(task_name: str = "media.transcribe", args_json: str = "[1]", kwargs_json: str = '{"a": 1}',
         **fields) -> TaskInput:
    limits = {k: fields.pop(k) for k in ("idempotency_key", "soft_time_limit_seconds", "hard_time_limit_seconds")
              if k in fields}
    return TaskInput(Submission(task_name, **fields), args_json, kwargs_json, **limits)


def problem(task: TaskInput, index: int | None = None) -> Exception:
    with pytest.raises((InvalidArgument, PayloadTooLarge)) as caught:
        validate_input(task, LIMITS, index)
    return caught.value


def test_a_good_submission_passes():
    validate_input(item(queue="cpu_standard", priority=10, retry_policy="critical", labels={"zone": "eu"},
                        gpu=GpuNeed.REQUIRED, gpu_memory_mb=8000, idempotency_key="k" * 256,
                        soft_time_limit_seconds=5, hard_time_limit_seconds=5), LIMITS)
    validate_input(item(args_json="", kwargs_json=""), LIMITS)


@pytest.mark.parametrize("name", ["", "1abc", "has space", "x" * 201, "semi;colon"])
def test_bad_task_name(name):
    error = problem(item(name))
    assert isinstance(error, InvalidArgument)
    assert str(error) == (f"task_name {name!r} is not a Celery task name "
                          "(letters, digits, '_', '.', ':', '-'; 1-200 characters)")


def test_payload_over_the_limit_is_too_large_and_says_what_to_do():
    error = problem(item(args_json="[" + "1," * 300 + "1]", kwargs_json='{"k": "' + "v" * 400 + '"}'))
    assert isinstance(error, PayloadTooLarge)
    size = len("[" + "1," * 300 + "1]") + len('{"k": "' + "v" * 400 + '"}')
    assert str(error) == (f"args_json + kwargs_json is {size} bytes; the limit is 1000 "
                          "(SWITCHYARD_MAX_PAYLOAD_BYTES). Store large data elsewhere and pass a reference.")


def test_payload_size_counts_utf8_bytes_not_characters():
    validate_input(item(args_json='["' + "é" * 495 + '"]', kwargs_json=""), LIMITS)  # 994 bytes
    assert isinstance(problem(item(args_json='["' + "é" * 500 + '"]', kwargs_json="")), PayloadTooLarge)


@pytest.mark.parametrize(("fields", "message"), [
    ({"args_json": "[1, 2"}, "args_json is not valid JSON: "),
    ({"kwargs_json": "{nope"}, "kwargs_json is not valid JSON: "),
])
def test_bad_json(fields, message):
    error = problem(item(**fields))
    assert isinstance(error, InvalidArgument) and str(error).startswith(message)


def test_bad_json_reads_as_the_standard_library_words_it():
    # The fast parser refuses first; the message is still json's own, with line and column.
    error = problem(item(args_json="[1, 2"))
    assert str(error) == "args_json is not valid JSON: Expecting ',' delimiter: line 1 column 6 (char 5)"


@pytest.mark.parametrize("text", [
    "[NaN, Infinity, -Infinity]",       # not RFC 8259, but json.loads (and Celery's worker) take it
    "[123456789012345678901234567890]",  # past 64 bits
    '["\\ud800"]',                      # a lone surrogate, escaped
])
def test_what_the_standard_library_accepts_is_accepted(text):
    validate_input(item(args_json=text), LIMITS)


@pytest.mark.parametrize("depth", [1000, 5000])
def test_nesting_the_standard_library_cannot_decode_is_refused(depth):
    # orjson alone would take 1,000 levels; a worker's json.loads could not decode them.
    roomy = SubmitLimits(100_000, LIMITS.queue_names, LIMITS.retry_policy_names)
    with pytest.raises(InvalidArgument, match="args_json is nested too deeply to decode"):
        validate_input(item(args_json="[" * depth + "]" * depth), roomy)
    validate_input(item(args_json="[" * 300 + "]" * 300), roomy)  # past orjson's share, still fine


@pytest.mark.parametrize(("fields", "message"), [
    ({"args_json": '{"a": 1}'}, "args_json must be a JSON array, got dict"),
    ({"args_json": '"text"'}, "args_json must be a JSON array, got str"),
    ({"kwargs_json": "[1]"}, "kwargs_json must be a JSON object, got list"),
    ({"kwargs_json": "3"}, "kwargs_json must be a JSON object, got int"),
])
def test_wrong_json_kind(fields, message):
    assert str(problem(item(**fields))) == message


@pytest.mark.parametrize("priority", [-1, 11])
def test_priority_outside_the_range(priority):
    assert str(problem(item(priority=priority))) == (
        f"priority {priority} is outside 0-10 (0 lets the scheduler decide)")


def test_unknown_queue_lists_the_known_ones_in_configuration_order():
    assert str(problem(item(queue="gpu_fast"))) == (
        "queue 'gpu_fast' does not exist; known queues: gpu_priority, cpu_standard")


def test_implausible_gpu_memory():
    assert str(problem(item(gpu_memory_mb=10_000_001))) == (
        "gpu_memory_mb 10000001 is not a plausible amount of MiB")


def test_gpu_none_contradicts_gpu_memory():
    assert str(problem(item(gpu=GpuNeed.NONE, gpu_memory_mb=512))) == "gpu=none contradicts gpu_memory_mb=512"


def test_unknown_retry_policy_lists_the_known_ones_sorted():
    assert str(problem(item(retry_policy="forever"))) == (
        "retry_policy 'forever' does not exist; known: critical, default, none")


@pytest.mark.parametrize(("soft", "hard"), [(-1, 0), (0, -5)])
def test_negative_time_limits(soft, hard):
    error = problem(item(soft_time_limit_seconds=soft, hard_time_limit_seconds=hard))
    assert str(error) == "time limits must not be negative"


def test_soft_limit_above_hard_limit():
    error = problem(item(soft_time_limit_seconds=10, hard_time_limit_seconds=5))
    assert str(error) == "soft_time_limit_seconds must not exceed hard_time_limit_seconds"
    # A soft limit without a hard one is fine.
    validate_input(item(soft_time_limit_seconds=10), LIMITS)


def test_long_idempotency_key():
    assert str(problem(item(idempotency_key="k" * 257))) == "idempotency_key is longer than 256 characters"


@pytest.mark.parametrize("labels", [{"": "x"}, {"k" * 129: "x"}, {"zone": "v" * 257}])
def test_bad_label(labels):
    (key,) = labels
    assert str(problem(item(labels=labels))) == (
        f"label {key!r}: keys must be 1-128 and values 0-256 characters")


def test_label_keys_are_only_checked_for_length():
    # Today's contract: any 1-128 character key is accepted (no character rules).
    validate_input(item(labels={"gpu model/έκδοση": "", "k" * 128: "v" * 256}), LIMITS)


def test_the_index_of_a_batch_item_leads_the_message():
    assert str(problem(item(priority=11), index=3)).startswith("tasks[3]: priority 11 is outside 0-10")


def test_batch_error_names_every_invalid_item_by_index():
    problems = [problem(item(priority=11), 1), problem(item("bad name"), 4)]
    error = batch_error(problems)
    assert isinstance(error, InvalidArgument)
    assert str(error) == "2 invalid item(s), nothing accepted: " + "; ".join(str(p) for p in problems)
    assert "tasks[1]" in str(error) and "tasks[4]" in str(error)


def test_batch_error_of_one_problem_is_that_problem():
    only = problem(item(args_json="[" + "1," * 600 + "1]"), 0)
    assert batch_error([only]) is only


def test_batch_error_is_invalid_argument_when_any_item_is_malformed():
    too_large = problem(item(args_json="[" + "1," * 600 + "1]"), 0)
    assert isinstance(batch_error([too_large, too_large]), PayloadTooLarge)
    assert isinstance(batch_error([too_large, problem(item(priority=11), 1)]), InvalidArgument)


def test_batch_error_keeps_the_kind_of_other_errors():
    assert isinstance(batch_error([NotFound("a"), NotFound("b")]), NotFound)


def test_batch_error_spells_out_twenty_and_counts_the_rest():
    problems = [problem(item(priority=11), i) for i in range(25)]
    message = str(batch_error(problems))
    assert message.startswith("25 invalid item(s), nothing accepted: tasks[0]: ")
    assert "tasks[19]" in message and "tasks[20]" not in message
    assert message.endswith("; ... and 5 more invalid item(s)")


def test_payload_digest_treats_missing_and_empty_payload_alike_and_tells_payloads_apart():
    assert payload_digest(item(args_json="", kwargs_json="")) == payload_digest(item(args_json="[]", kwargs_json="{}"))
    assert payload_digest(item(args_json="[1]")) != payload_digest(item(args_json="[2]"))
    assert payload_digest(item("a.b")) != payload_digest(item("a.c"))
    assert len(payload_digest(item())) == 64


def test_texts_remembered_valid_are_not_parsed_again_and_a_kind_is_not_taken_for_another():
    valid: set[tuple[str, str]] = set()
    validate_input(item(args_json="[1]", kwargs_json='{"a": 1}'), LIMITS, 0, valid)
    assert valid == {("args_json", "[1]"), ("kwargs_json", '{"a": 1}')}
    validate_input(item(args_json="[1]", kwargs_json='{"a": 1}'), LIMITS, 1, valid)  # from memory
    # A text valid as one argument is judged afresh as the other: '{"a": 1}' is no array.
    with pytest.raises(InvalidArgument, match=r"tasks\[2\]: args_json must be a JSON array"):
        validate_input(item(args_json='{"a": 1}', kwargs_json='{"a": 1}'), LIMITS, 2, valid)
    with pytest.raises(InvalidArgument, match=r"tasks\[3\]: kwargs_json is not valid JSON"):
        validate_input(item(args_json="[1]", kwargs_json="{"), LIMITS, 3, valid)
    assert ("kwargs_json", "{") not in valid
