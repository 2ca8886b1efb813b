"""The contract's guards work: `buf breaking` (make proto-breaking) fails on a breaking change
against the committed baseline and passes on an addition, and `buf lint` (make proto-lint)
fails on an undocumented field. Each check runs buf on a copy of protos/ changed on purpose.

buf is installed by `make proto-lint` (npm, into .tools/), which `make test` runs first; without
it these tests skip and say so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / ".tools" / "node_modules" / ".bin" / "buf"
BASELINE = REPO / "protos" / "baseline.binpb"
SCHEDULER_PROTO = Path("switchyard") / "v1" / "scheduler.proto"

pytestmark = pytest.mark.skipif(
    not BUF.exists(), reason=f"buf not installed at {BUF.relative_to(REPO)}: run `make proto-lint` to install it"
)


def protos_copy(tmp_path: Path) -> Path:
    """A copy of protos/ (its buf.yaml included) to change on purpose."""
    copy = tmp_path / "protos"
    shutil.copytree(REPO / "protos", copy, ignore=shutil.ignore_patterns("*.binpb"))
    return copy


def edit(protos: Path, old: str, new: str) -> None:
    path = protos / SCHEDULER_PROTO
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def buf(protos: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUF), *args], cwd=protos, capture_output=True, text=True, timeout=120)


def breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return buf(protos, "breaking", "--against", str(BASELINE))


def test_the_contract_as_it_is_passes_against_the_baseline(tmp_path: Path) -> None:
    result = breaking(protos_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_renumbered_field_is_a_breaking_change(tmp_path: Path) -> None:
    protos = protos_copy(tmp_path)
    edit(protos, "  string task_name = 1;\n  // Positional arguments", "  string task_name = 99;\n  // Positional arguments")
    result = breaking(protos)
    assert result.returncode != 0
    assert re.search(r"SubmitTaskRequest", result.stdout + result.stderr), result.stdout + result.stderr


def test_a_removed_rpc_is_a_breaking_change(tmp_path: Path) -> None:
    protos = protos_copy(tmp_path)
    edit(protos, "  rpc PauseQueue(PauseQueueRequest) returns (PauseQueueResponse);\n", "")
    result = breaking(protos)
    assert result.returncode != 0
    assert "PauseQueue" in result.stdout + result.stderr


def test_an_added_field_is_not_a_breaking_change(tmp_path: Path) -> None:
    protos = protos_copy(tmp_path)
    edit(protos, "  bool allow_unschedulable = 17;\n",
         "  bool allow_unschedulable = 17;\n  // A field added later.\n  string added_later = 90;\n")
    result = breaking(protos)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_fails_on_an_undocumented_field(tmp_path: Path) -> None:
    protos = protos_copy(tmp_path)
    assert buf(protos, "lint").returncode == 0
    edit(protos, "  // Celery task name registered in the worker's app, e.g. \"media.transcribe\".\n", "")
    result = buf(protos, "lint")
    assert result.returncode != 0
    assert "comment" in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
