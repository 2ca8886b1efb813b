"""Node.js for the tests that run the Node client (clients/node): is it there, and its packages.

`make test` installs the npm packages first (`make node-deps`); a test run without it installs
them here, once per session, with `npm ci`. Where Node, npm or the packages cannot be had,
`node_client_problem()` says what is missing in one line, for `pytest.skip`.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.redis_server import env_without_switchyard

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT_DIR = REPO_ROOT / "clients" / "node"
MIN_NODE_MAJOR = 18
"""Oldest Node.js the client supports (package.json engines)."""
REQUIRED_PACKAGES = ("@grpc/grpc-js", "@grpc/proto-loader")
NPM_CI_TIMEOUT_SECONDS = 300


def _packages_installed() -> bool:
    modules = NODE_CLIENT_DIR / "node_modules"
    return all((modules / name / "package.json").is_file() for name in REQUIRED_PACKAGES)


@functools.cache
def node_client_problem() -> str | None:
    """Why the Node client cannot run here (one line), or None when it can; installs its npm
    packages with `npm ci` when they are missing."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed: the Node client tests need Node.js >= 18 (apt-get install nodejs npm)"
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    match = re.match(r"v(\d+)", version)
    if not match or int(match.group(1)) < MIN_NODE_MAJOR:
        return f"node {version or '(unknown version)'} is too old: the Node client needs Node.js >= {MIN_NODE_MAJOR}"
    if _packages_installed():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed, so the Node client's packages cannot be installed (apt-get install npm)"
    try:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_CLIENT_DIR)],
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"npm ci in clients/node took over {NPM_CI_TIMEOUT_SECONDS} s; the npm registry is unreachable?"
    if result.returncode != 0 or not _packages_installed():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"npm ci in clients/node failed, so the Node client's packages are missing: {last}"
    return None


def node_env(**variables: str) -> dict[str, str]:
    """The environment for a `node` child: this one without SWITCHYARD_* settings, plus `variables`."""
    env = env_without_switchyard()
    env.pop("NODE_OPTIONS", None)  # a developer's --require hooks must not change what runs
    env.update(variables)
    return env


def link_node_client(directory: Path) -> Path:
    """Make `require('@switchyard/client')` work for scripts in `directory` (a snippet copied
    from the docs, say): links directory/node_modules/@switchyard/client to clients/node, whose
    own node_modules then serve its dependencies. Returns `directory`."""
    scope = directory / "node_modules" / "@switchyard"
    scope.mkdir(parents=True, exist_ok=True)
    link = scope / "client"
    if not link.exists():
        link.symlink_to(NODE_CLIENT_DIR, target_is_directory=True)
    return directory
