"""The Dockerfile: hadolint finds nothing, and the image is what deploy/ expects of it.

CI has no Docker engine, so the image is never built here: the checks are the linter and a
reading of the Dockerfile against the repository (what it copies exists and is in the build
context, what it runs is installed, and it runs as a non-root user).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.tools import DEPLOY, DOCKERFILE, DOCKERIGNORE, REPO_ROOT, run, tool


@dataclass
class Stage:
    """One build stage: its name, base and instructions (continuation lines joined)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        """The arguments of the stage's last `keyword` instruction, or None."""
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None


def parse_stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile, in order (comments and parser directives dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert match, line
            stages.append(Stage(name=match.group(2) or str(len(stages)), base=match.group(1)))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def effective(stages: list[Stage], name: str, keyword: str) -> str | None:
    """The last `keyword` a stage has, itself or inherited from the stages it is built FROM."""
    by_name = {stage.name: stage for stage in stages}
    stage: Stage | None = by_name[name]
    while stage is not None:
        value = stage.last(keyword)
        if value is not None:
            return value
        stage = by_name.get(stage.base)
    return None


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching line wins; a
    line matches a path or any folder above it)."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**", index):
                out += ".*"
                index += 2
            elif pattern[index] == "*":
                out += "[^/]*"
                index += 1
            elif pattern[index] == "?":
                out += "[^/]"
                index += 1
            else:
                out += re.escape(pattern[index])
                index += 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in patterns:
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        if any(regex(pattern).match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_stages(DOCKERFILE.read_text())


def test_hadolint_finds_nothing_at_any_level() -> None:
    result = run([tool("hadolint"), "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)])
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}" for f in findings
    ) or result.stderr


def test_hadolint_is_really_linting(tmp_path: Path) -> None:
    # The check above passes only because the Dockerfile is clean: the same call flags the
    # mistakes it would catch there (unpinned tag, pip cache, root user).
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nUSER root\n")
    result = run([tool("hadolint"), "--format", "json", "--failure-threshold", "style", str(bad)])
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3042", "DL3002"} <= codes, codes


def test_default_target_runs_scheduler_and_agent_as_non_root_from_a_slim_python(stages: list[Stage]) -> None:
    final = stages[-1].name  # `docker build .` builds the last stage
    assert effective(stages, final, "USER") == "10001:10001"
    assert effective(stages, final, "ENTRYPOINT") == '["tini", "--"]'
    assert effective(stages, final, "CMD") == '["switchyard-scheduler"]'
    assert all(re.match(r"python:\$\{PYTHON_VERSION\}-slim\Z", s.base) or s.base in {t.name for t in stages}
               for s in stages), [s.base for s in stages]
    # Both entry points are console scripts of the package the image installs.
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"switchyard-scheduler", "switchyard-agent"} <= set(scripts)


def test_every_image_has_a_healthcheck_and_a_non_root_user(stages: list[Stage]) -> None:
    runnable = [s.name for s in stages if s.name not in {"build"}]
    for name in runnable:
        assert effective(stages, name, "USER") == "10001:10001", name
        healthcheck = effective(stages, name, "HEALTHCHECK")
        assert healthcheck is not None and "/opt/switchyard/healthcheck.py" in healthcheck, name


def test_flower_target_exists_for_compose(stages: list[Stage]) -> None:
    flower = next(s for s in stages if s.name == "flower")
    assert "flower==" in (flower.last("RUN") or "")
    assert effective(stages, "flower", "CMD") == '["celery", "flower", "--port=5555"]'


def test_what_the_dockerfile_copies_exists_and_is_in_the_build_context(stages: list[Stage]) -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied: list[str] = []
    for stage in stages:
        for keyword, args in stage.instructions:
            if keyword != "COPY" or args.startswith("--from"):
                continue
            copied.extend(args.split()[:-1])
    assert copied
    for source in copied:
        path = REPO_ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        for file in files:
            relative = file.relative_to(REPO_ROOT).as_posix()
            assert not ignored(relative, patterns), f".dockerignore keeps {relative} out of the build context"


def test_the_build_stage_copies_every_package_the_project_installs(stages: list[Stage]) -> None:
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dirs: dict[str, str] = setuptools.get("package-dir", {})
    build = next(s for s in stages if s.name == "build")
    copied = [args.split()[0].rstrip("/") for kw, args in build.instructions if kw == "COPY"]
    for package in setuptools["packages"]:
        top = package.split(".")[0]
        folder = package_dirs.get(top, top)
        assert any(folder == c or folder.startswith(c + "/") for c in copied), (
            f"package {package} ({folder}) is not copied into the build stage")


def test_dockerignore_keeps_the_local_tree_out() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for local in (".venv/bin/python", ".git/config", "tests/conftest.py", "scheduler/__pycache__/main.cpython-311.pyc"):
        assert ignored(local, patterns), local
    assert (DEPLOY / "docker" / "healthcheck.py").exists()
