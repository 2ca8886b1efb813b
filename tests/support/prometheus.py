"""A real Prometheus server for tests, and the promtool binary.

Both come from the Debian package `prometheus` (`make deps-prometheus` installs it with apt-get
when run as root; `make test` runs that first). Where they are missing, the tests that need them
are skipped with a message saying how to install them.

`PrometheusServer` runs `prometheus` on a free loopback port with its own data directory and a
scrape configuration for the given targets (every second), and answers PromQL over the HTTP API.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import free_port, wait_until

INSTALL_HINT = ("install the Debian package `prometheus` (it holds both binaries): `make deps-prometheus` "
                "does it with apt-get when run as root, else `sudo apt-get install prometheus`")

Vector = list[tuple[dict[str, str], float]]
"""An instant vector: (labels, value) per series."""


def binary(name: str) -> str:
    """The path of `prometheus` or `promtool`; skips the test, saying how to install it, when absent."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: {INSTALL_HINT}")
    return path


class PrometheusServer:
    """`prometheus` scraping `targets` (HOST:PORT of /metrics endpoints) every second."""

    def __init__(self, workdir: Path, targets: Sequence[str], job: str = "switchyard",
                 rule_files: Sequence[Path] = ()) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary("prometheus"), f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            )
        wait_until(self._ready, timeout=timeout, interval=0.2,
                   message=f"prometheus ready on port {self.port} (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; returns `data`, raises with Prometheus' error on a failed query."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> Vector:
        """An instant query; a scalar comes back as one series without labels."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(series["metric"], float(series["value"][1])) for series in data["result"]]

    def wait_query(self, expr: str, accept: Callable[[Vector], bool], timeout: float = 30.0,
                   what: str = "") -> Vector:
        """Poll `expr` until `accept` takes its answer (the scrapes and rules run every second)."""
        answers: list[Vector] = []

        def answered() -> Vector | None:
            answer = self.query(expr)
            answers[:] = [answer]
            return answer if accept(answer) else None

        try:
            result: Vector = wait_until(answered, timeout=timeout, interval=0.25, message=what or expr)
        except AssertionError:
            raise AssertionError(f"{what or expr}: last answer {answers[-1] if answers else None} "
                                 f"to {expr!r}") from None
        return result


def value_of(vector: Vector, **labels: str) -> float | None:
    """The value of the one series with these labels (None if none; NaN passes through)."""
    matching = [value for series, value in vector if all(series.get(k) == v for k, v in labels.items())]
    assert len(matching) <= 1, f"several series match {labels}: {vector}"
    return matching[0] if matching else None


def close_to(actual: float | None, expected: float, tolerance: float = 1e-6) -> bool:
    return actual is not None and not math.isnan(actual) and abs(actual - expected) <= tolerance
