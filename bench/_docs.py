"""Shared helpers of the benchmark scripts: percentiles, machine facts, docs/benchmarks.md sections.

Each script owns one section of docs/benchmarks.md, between `<!-- NAME:start -->` and
`<!-- NAME:end -->`, and rewrites only that section; everything else in the file is kept.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"

_HEADER = """# Benchmarks

Measured figures of Switchyard, produced by the scripts in [`bench/`](../bench/). Each section
below is rewritten by the script named in it (between its marker comments); rerun the script
to refresh it. The machines these ran on are small and shared, so treat single figures as
indicative: the scripts run the compared variants side by side in one run and quote medians
and ratios, which travel better than absolute numbers.
"""


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def machine() -> dict[str, str]:
    """Facts about this machine worth printing next to a figure."""
    facts = {
        "nproc": str(os.cpu_count() or "?"),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    facts["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    binary = shutil.which("redis-server")
    if binary:
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
            found = re.search(r"v=(\S+)", out)
            facts["redis"] = found.group(1) if found else out.strip()
        except (OSError, subprocess.SubprocessError):
            facts["redis"] = "?"
    return facts


def code_version() -> str:
    """Which Switchyard code was measured: BENCH_CODE_VERSION, else the git commit (+ dirty flag)."""
    if os.environ.get("BENCH_CODE_VERSION"):
        return os.environ["BENCH_CODE_VERSION"]
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "scheduler", "worker_agent",
                                "clients"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not sha:
        return "unknown"
    return f"commit {sha}" + (" with uncommitted changes in scheduler/, worker_agent/ or clients/" if dirty else "")


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*row) for row in rows])


def update_section(name: str, body: str, path: Path = DOCS) -> None:
    """Replace (or append) the section between this name's markers, keeping the rest."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    if start in text and end in text:
        before = text.split(start, 1)[0]
        after = text.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def python_command(script: str) -> str:
    """How this script was run, relative to the repository root."""
    return f".venv/bin/python {script}" if ".venv" in sys.executable else f"python {script}"
