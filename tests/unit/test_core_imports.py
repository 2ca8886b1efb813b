"""The pure core stays pure: no module of scheduler/core/ (nor scheduler/errors.py) imports a
framework (gRPC, Redis, Celery, kombu) or the scheduler's adapters (engine, state, api, ...).

Read from the source with `ast`, so an import anywhere in a file (inside a function or an
`if TYPE_CHECKING:` block too) counts, and nothing is executed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_FILES = [*sorted((ROOT / "scheduler" / "core").rglob("*.py")), ROOT / "scheduler" / "errors.py"]

FORBIDDEN_PACKAGES = ("grpc", "redis", "celery", "kombu")
FORBIDDEN_SCHEDULER_MODULES = tuple(
    f"scheduler.{name}" for name in ("engine", "state", "api", "dispatch", "fleet", "main", "settings", "config")
)
"""The adapters, and the settings object (the core takes small frozen dataclasses instead)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an import statement in `source` names, relative imports resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                base = package[: len(package) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from scheduler import engine` imports the submodule scheduler.engine.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def forbidden(names: set[str]) -> list[str]:
    """The imports among `names` that the pure core must not make."""
    def hits(name: str, banned: str) -> bool:
        return name == banned or name.startswith(banned + ".")
    banned = FORBIDDEN_PACKAGES + FORBIDDEN_SCHEDULER_MODULES
    return sorted(name for name in names if any(hits(name, b) for b in banned))


def test_the_pure_files_exist():
    names = {module_name(p) for p in PURE_FILES}
    assert {"scheduler.core.model", "scheduler.core.validate", "scheduler.core.placement.filters",
            "scheduler.errors"} <= names


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_framework_and_no_adapter(path: Path):
    names = imported_modules(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert forbidden(names) == [], f"{path.relative_to(ROOT)} must stay pure"


@pytest.mark.parametrize(
    ("source", "offender"),
    [
        ("import grpc", "grpc"),
        ("import redis.asyncio as redis", "redis.asyncio"),
        ("from celery import Celery", "celery"),
        ("from kombu.messaging import Producer", "kombu.messaging"),
        ("def f():\n    from scheduler.engine import Engine", "scheduler.engine"),
        ("from scheduler import state", "scheduler.state"),
        ("from scheduler.api.convert import x", "scheduler.api.convert"),
        ("from ...fleet import Fleet", "scheduler.fleet"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from scheduler.settings import Settings",
         "scheduler.settings"),
    ],
)
def test_the_check_catches_an_added_import(source: str, offender: str):
    names = imported_modules(source, "scheduler.core.placement.filters")
    assert offender in forbidden(names)


def test_the_check_lets_the_core_import_itself_the_errors_and_the_wire():
    source = "from scheduler.core.model import PendingTask\nfrom scheduler.errors import NotFound\n" \
             "from switchyard.wire import TERMINAL_STATE_NAMES\nfrom .policy import PlacementContext\n"
    assert forbidden(imported_modules(source, "scheduler.core.placement.filters")) == []


def test_importing_the_core_loads_no_framework_at_run_time():
    """The check above reads sources; this one proves no transitive import pulls a framework in."""
    probe = (
        "import sys, pkgutil, importlib, scheduler.core, scheduler.errors\n"
        "for info in pkgutil.walk_packages(scheduler.core.__path__, 'scheduler.core.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'grpc', 'redis', 'celery', 'kombu'}))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "[]"
