"""`switchyard tasks`: its grammar, and what it prints (no scheduler needed)."""

from __future__ import annotations

import pytest
from switchyard.cli import main
from switchyard.cli import parser as cli_parser
from switchyard.cli.render import format_tasks
from switchyard.client import TASK_STATES


def test_tasks_parses_its_filters_with_defaults() -> None:
    parser = cli_parser.build_parser()
    options = parser.parse_args(["tasks", "--state", "running", "--state", "dispatched", "--worker", "gpu-01",
                                 "--queue", "gpu_priority", "--name", "media.transcode", "--limit", "7", "--json"])
    assert (options.state, options.worker, options.queue, options.name, options.limit, options.json) == (
        ["running", "dispatched"], "gpu-01", "gpu_priority", "media.transcode", 7, True)
    plain = parser.parse_args(["tasks"])
    assert (plain.state, plain.limit, plain.page_token) == ([], 50, "")
    assert TASK_STATES == ("pending", "dispatched", "running", "succeeded", "failed", "retrying",
                           "dead_lettered", "cancelled")


@pytest.mark.parametrize("argv", [["tasks", "--state", "runing"], ["tasks", "--limit", "0"]])
def test_bad_tasks_usage_exits_2_before_any_call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--scheduler", "127.0.0.1:1", *argv]) == 2
    assert "usage: switchyard tasks" in capsys.readouterr().err


def test_an_empty_listing_says_so_and_how_to_go_on() -> None:
    assert format_tasks([], "") == "no tasks match"
    assert format_tasks([], "abc") == "no tasks match\nmore tasks: add --page-token abc"
