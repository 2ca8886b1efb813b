"""The ``switchyard`` command line's parsing: task options defined once, usage errors before any
network call (a scheduler address that nothing listens on proves it), and the command table.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest
from switchyard import cli
from switchyard._options import TaskOptions, build_submit_request
from switchyard.cli import commands
from switchyard.cli import parser as cli_parser

UNREACHABLE = "127.0.0.1:1"


def test_cli_parses_labels_and_submit_options() -> None:
    options = cli_parser.build_parser().parse_args(
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
    assert cli_parser.label("expr=a=b") == ("expr", "a=b")


def test_cli_scheduler_defaults_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_SCHEDULER", "from-env:1234")
    assert cli_parser.build_parser().parse_args(["queues"]).scheduler == "from-env:1234"
    monkeypatch.delenv("SWITCHYARD_SCHEDULER")
    assert cli_parser.build_parser().parse_args(["queues"]).scheduler == "127.0.0.1:50051"


def test_cli_takes_several_schedulers_and_a_failover_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    options = cli_parser.build_parser().parse_args(["--scheduler", "a:1,b:2", "queues", "--failover-timeout", "0"])
    assert (options.scheduler, options.failover_timeout) == ("a:1,b:2", 0.0)
    monkeypatch.setenv("SWITCHYARD_SCHEDULER", "a:1, b:2")
    options = cli_parser.build_parser().parse_args(["queues"])
    assert (options.scheduler, options.failover_timeout) == ("a:1, b:2", 30.0)


def test_cli_submit_and_explain_share_the_new_task_options() -> None:
    extra = [
        "--retry-policy", "media", "--soft-time-limit", "30", "--hard-time-limit", "60",
        "--prefer-label", "zone=eu", "--prefer-label", "disk=ssd", "--label", "gpu=a100", "--batch-size", "12",
        "--content-type", "audio",
    ]
    for command in ("submit", "explain"):
        options = cli_parser.build_parser().parse_args([command, "media.transcribe_audio", *extra])
        request = build_submit_request(options.task_name, TaskOptions(**cli_parser.task_arguments(options)))
        assert request.retry_policy == "media"
        assert (request.soft_time_limit_seconds, request.hard_time_limit_seconds) == (30.0, 60.0)
        assert dict(request.preferred_labels) == {"zone": "eu", "disk": "ssd"}
        assert dict(request.labels) == {"gpu": "a100"}
        assert (request.batch_size, request.content_type) == (12, "audio")
        assert cli_parser.usage_problem(options) is None


def test_cli_explain_task_id_and_dead_letter_commands_parse() -> None:
    parser = cli_parser.build_parser()
    options = parser.parse_args(["explain", "--task-id", "t-1", "--json"])
    assert (options.task_id, options.task_name, options.json) == ("t-1", None, True)
    assert cli_parser.usage_problem(options) is None
    options = parser.parse_args(["dead-letters", "--queue", "gpu_priority", "--limit", "5"])
    assert (options.queue, options.limit) == ("gpu_priority", 5)
    assert parser.parse_args(["dead-letters"]).limit == 100
    assert parser.parse_args(["retry-dead-letter", "t-9"]).task_id == "t-9"
    for argv in (["purge-dead-letters", "--all"], ["purge-dead-letters", "--queue", "q"], ["purge-dead-letters", "a", "b"]):
        assert cli_parser.usage_problem(parser.parse_args(argv)) is None
    assert parser.parse_args(["purge-dead-letters", "a", "b"]).task_ids == ["a", "b"]


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
        ["submit", "t", "--soft-time-limit", "0"],
        ["submit", "t", "--hard-time-limit", "soon"],
        ["submit", "t", "--soft-time-limit", "60", "--hard-time-limit", "30"],
        ["submit", "t", "--prefer-label", "no-equals-sign"],
        ["submit", "t", "--batch-size", "-2"],
        ["explain"],
        ["explain", "t", "--task-id", "t-1"],
        ["explain", "--task-id", "t-1", "--priority", "5"],
        ["explain", "--task-id", "t-1", "--prefer-label", "zone=eu"],
        ["explain", "t", "--soft-time-limit", "60", "--hard-time-limit", "30"],
        ["dead-letters", "--limit", "0"],
        ["retry-dead-letter"],
        ["purge-dead-letters"],
        ["purge-dead-letters", "--all", "--queue", "q"],
        ["purge-dead-letters", "--all", "t-1"],
        ["purge-dead-letters", "--queue", "q", "t-1"],
        ["nosuchcommand"],
        [],
        ["--scheduler", " , ", "queues"],
        ["queues", "--failover-timeout", "-1"],
        ["queues", "--failover-timeout", "nan"],
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


def test_cli_unreachable_scheduler_prints_code_and_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--scheduler", UNREACHABLE, "get", "t-1"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: UNAVAILABLE: ")


def test_cli_json_flag_accepted_after_the_command() -> None:
    options = cli_parser.build_parser().parse_args(["queues", "--json"])
    assert options.json is True
    options = cli_parser.build_parser().parse_args(["--json", "queues"])
    assert options.json is True


def test_every_sub_command_has_a_command_function() -> None:
    (subparsers,) = (
        action for action in cli_parser.build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    assert set(subparsers.choices) == set(commands.COMMANDS)


def test_task_flags_fill_task_options_and_default_to_the_clients_defaults() -> None:
    fields = {field.name for field in dataclasses.fields(TaskOptions)}
    assert {flag.option for flag in cli_parser.TASK_FLAGS} <= fields
    for command in ("submit", "explain"):
        options = cli_parser.build_parser().parse_args([command, "t"])
        from_flags = build_submit_request("t", TaskOptions(**cli_parser.task_arguments(options)))
        assert from_flags == build_submit_request("t", TaskOptions())
