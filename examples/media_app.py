"""An example media-pipeline Celery app, exactly as a team would write it without Switchyard.

Nothing here imports Switchyard: `switchyard-agent ... -- celery -A examples.media_app worker`
runs it unchanged, and the scheduler sends it work by task name. Each task simulates its work
with a short sleep (``seconds=`` overrides the default), reports progress the ordinary Celery way
(``self.update_state(state="PROGRESS", ...)``) and returns where it ran, so the demo can show
which worker got which task. ``fail=True`` makes any task raise, to see failures end to end.

The broker comes from ``CELERY_BROKER_URL`` (default ``redis://127.0.0.1:6379/0``); no result
backend is needed because Switchyard records results itself.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from celery import Celery, Task

app = Celery("media_app", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    # Long media jobs: acknowledge after the work, one message at a time.
    task_acks_late=True,
    worker_prefetch_multiplier=1,
)


class SimulatedFailure(RuntimeError):
    """Raised by a task called with ``fail=True``."""


def _simulate(task: Task, kind: str, seconds: float, steps: int, fail: bool, **details: Any) -> dict[str, Any]:
    """Sleep ``seconds`` in ``steps`` slices, reporting progress after each; return where it ran."""
    started = time.monotonic()
    steps = max(1, steps)
    for step in range(1, steps + 1):
        time.sleep(max(0.0, seconds) / steps)
        task.update_state(
            state="PROGRESS",
            meta={"progress": step / steps, "message": f"{kind}: step {step}/{steps}"},
        )
    if fail:
        raise SimulatedFailure(f"{kind} failed on purpose (fail=True)")
    return {
        "kind": kind,
        "worker_id": os.environ.get("SWITCHYARD_WORKER_ID"),
        "hostname": socket.gethostname(),
        "celery_node": task.request.hostname,
        "pid": os.getpid(),
        "seconds": round(time.monotonic() - started, 3),
        **details,
    }


@app.task(bind=True, name="media.transcribe_audio")
def transcribe_audio(self: Task, path: str = "talk.mp3", language: str = "en", seconds: float = 1.2, fail: bool = False) -> dict[str, Any]:
    """Speech to text (a GPU model in real life)."""
    return _simulate(self, "transcribe_audio", seconds, 4, fail, path=path, language=language, words=42)


@app.task(bind=True, name="media.process_video")
def process_video(self: Task, path: str = "clip.mp4", seconds: float = 1.5, fail: bool = False) -> dict[str, Any]:
    """Scene detection and frame embedding (GPU)."""
    return _simulate(self, "process_video", seconds, 5, fail, path=path, scenes=7)


@app.task(bind=True, name="media.analyze_image")
def analyze_image(self: Task, path: str = "photo.jpg", seconds: float = 0.6, fail: bool = False) -> dict[str, Any]:
    """Captioning and object detection (GPU)."""
    return _simulate(self, "analyze_image", seconds, 2, fail, path=path, labels=["cat", "sofa"])


@app.task(bind=True, name="docs.parse_document")
def parse_document(self: Task, path: str = "report.pdf", seconds: float = 0.8, fail: bool = False) -> dict[str, Any]:
    """PDF text extraction and chunking (CPU)."""
    return _simulate(self, "parse_document", seconds, 4, fail, path=path, pages=12)


@app.task(bind=True, name="web.scrape")
def scrape(self: Task, url: str = "https://example.org", seconds: float = 0.5, fail: bool = False) -> dict[str, Any]:
    """Fetch and clean a web page (CPU / IO)."""
    return _simulate(self, "scrape", seconds, 2, fail, url=url, links=17)


@app.task(bind=True, name="text.summarize")
def summarize(self: Task, text: str = "", max_words: int = 50, seconds: float = 0.5, fail: bool = False) -> dict[str, Any]:
    """Extractive summary (CPU)."""
    summary = " ".join(text.split()[:max_words])
    return _simulate(self, "summarize", seconds, 2, fail, summary=summary, max_words=max_words)


@app.task(bind=True, name="media.process_youtube")
def process_youtube(self: Task, url: str = "https://youtu.be/dQw4w9WgXcQ", seconds: float = 1.0, fail: bool = False) -> dict[str, Any]:
    """Download, then transcribe (GPU preferred, CPU allowed)."""
    return _simulate(self, "process_youtube", seconds, 4, fail, url=url)
