"""Users' type checkers see the client's types: the package as pip installs it (built from this
tree, so ``py.typed`` must be in the distribution) is checked by ``mypy --strict`` from outside
the repository, like a user's project would.

One user-style module that uses both clients must pass, with ``assert_type`` pinning what each
call returns (an ``Any`` would fail it); another holds the mistakes typing should catch (a
misspelt option, a wrong argument type, a forgotten ``await``, ``for`` over an async iterator),
and each must be reported on its line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

GOOD = '''
from typing import assert_type

from switchyard import QueueView, SchedulerClient, SubmitResult, TaskView
from switchyard.aio import AsyncSchedulerClient


def submit_and_watch() -> str:
    with SchedulerClient("127.0.0.1:50051", timeout=5, failover_timeout=10) as client:
        submitted = client.submit("text.summarize", kwargs={"text": "hello"}, content_type="text", priority=5)
        assert_type(submitted, SubmitResult)
        for task in client.watch(submitted.task_id, timeout=60):
            assert_type(task, TaskView)
        assert_type(client.queues(), list[QueueView])
        return client.wait(submitted.task_id).state


async def submit_and_watch_async() -> str:
    async with AsyncSchedulerClient(["10.0.0.4:50051", "10.0.0.5:50051"], token="t") as client:
        submitted = await client.submit("text.summarize", kwargs={"text": "hello"}, gpu="none")
        assert_type(submitted, SubmitResult)
        async for task in client.watch(submitted.task_id, timeout=60):
            assert_type(task, TaskView)
        page, next_token = await client.list_tasks("running", page_size=10)
        assert_type(page, list[TaskView])
        assert_type(next_token, str)
        assert_type(await client.queues(), list[QueueView])
        done = await client.wait(submitted.task_id, timeout=60)
        assert_type(done, TaskView)
        return done.state
'''

BAD = '''
from switchyard import SchedulerClient
from switchyard.aio import AsyncSchedulerClient


async def mistakes(client: AsyncSchedulerClient, sync_client: SchedulerClient) -> None:
    await client.submit("text.summarize", priorty=5)  # error: misspelt-option
    await client.get(42)  # error: wrong-type
    task = client.get("t-1")
    print(task.state)  # error: forgotten-await
    for view in client.watch("t-1"):  # error: sync-for
        print(view)
    sync_client.submit("text.summarize", labels=["gpu"])  # error: labels-not-a-mapping
'''


@pytest.fixture(scope="module")
def installed_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project installed with pip (no dependencies, no network) into a private folder,
    built from a copy of the tree so no build output lands in the repository."""
    if shutil.which("pip", path=str(Path(sys.executable).parent)) is None:
        pytest.skip(f"pip is not installed next to {sys.executable}")
    workdir = tmp_path_factory.mktemp("typing")
    source = workdir / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "node_modules", "vendor", "*.pyc")
    for folder in ("clients", "scheduler", "worker_agent"):
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=ignore)
    site = workdir / "site"
    # No build isolation: the build uses this venv's setuptools (>= 77, which grpcio-tools of the
    # dev extras requires too), so nothing is downloaded.
    built = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert built.returncode == 0, f"pip could not build and install the package:\n{built.stderr}"
    assert (site / "switchyard" / "py.typed").is_file(), "py.typed is missing from the installed package"
    return site


def run_mypy(site: Path, project: Path) -> str:
    """mypy --strict on ``project``, run from inside it (no repository config, no source path
    onto the repository), with the installed package on the import path as a user's would be."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-color-output", "--show-error-codes",
         "--cache-dir", str(project / ".mypy_cache"), "good.py", "bad.py"],
        cwd=project, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(project)},
    )
    return result.stdout + result.stderr


def test_users_type_checkers_see_both_clients_types(installed_package: Path, tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(textwrap.dedent(GOOD))
    (tmp_path / "bad.py").write_text(textwrap.dedent(BAD))
    output = run_mypy(installed_package, tmp_path)
    assert "good.py" not in output, output  # everything in good.py type-checks, with exact types
    assert "py.typed" not in output and "missing library stubs" not in output, output
    bad_lines = textwrap.dedent(BAD).splitlines()
    expected = {
        "misspelt-option": r'Unexpected keyword argument "priorty"',
        "wrong-type": r'incompatible type "int"; expected "str"',
        "forgotten-await": r'"Coroutine\[.*\]" has no attribute "state"',
        "sync-for": r'has no attribute "__iter__"|is not iterable',
        "labels-not-a-mapping": r'incompatible type "list\[str\]"',
    }
    for mistake, pattern in expected.items():
        line_number = next(n for n, line in enumerate(bad_lines, start=1) if line.endswith(f"# error: {mistake}"))
        reported = [line for line in output.splitlines() if line.startswith(f"bad.py:{line_number}: error:")]
        assert any(re.search(pattern, line) for line in reported), f"{mistake}: line {line_number}\n{output}"
