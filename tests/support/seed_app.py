"""An ordinary Celery app registering every task name the seed pipelines' configs route.

Nothing here knows about Switchyard: it is what the seed projects (MoRAG, Auteur, miStudio)
would run, reduced to bodies that record where and when they ran. The task names are the ones
`deploy/examples/*.yaml` route by rule or glob, so an end-to-end test can submit each
pipeline's task types and check where each ran:

* `seed:runs` — RPUSH of `{"task", "worker", "tag", "pid", "celery_id", "ts"}` when user code
  starts;
* `seed:done` — RPUSH of the same record (plus `"ok"` and `"end"`) when it ends, including by
  raising.

Every pipeline task takes `(seconds=0.05, tag="")`: it sleeps `seconds` and returns its record.
Failing tasks for retry and dead-letter tests:

* `seed.always_fail(message)` raises RuntimeError, always;
* `seed.fail_until(flag, error_type="RuntimeError", message="")` raises `error_type` until the
  Redis key `seed:flag:<flag>` exists, then succeeds;
* `seed.fail_with(error_type, message="")` raises `error_type`: a builtin exception name
  (`KeyError`) or one of this module's (`PermanentError`, `TransientError`).
"""

from __future__ import annotations

import builtins
import json
import os
import time
from typing import Any

from tests.support.apps import broker_redis, json_app

app = json_app("seed_app")

RUNS_KEY = "seed:runs"
DONE_KEY = "seed:done"
FLAG_PREFIX = "seed:flag:"

# The task names each example config routes (rules, globs and the default queue's work).
AUTEUR_TASKS = (
    "auteur.tasks.generate.image",
    "auteur.tasks.generate.video",
    "auteur.tasks.media.generate_image",
    "auteur.tasks.media.generate_video",
    "auteur.tasks.process.style_transfer",
    "auteur.tasks.process.upscale",
    "auteur.tasks.analysis.scene",
    "auteur.tasks.thumbnail.create",
    "auteur.tasks.media.generate_thumbnail",
    "auteur.tasks.storage.save",
    "auteur.tasks.storage.upload_to_cloud",
    "auteur.tasks.misc.report",  # matches no rule: the default (class) queue
)
MORAG_TASKS = (
    "morag.worker.process_audio_task",
    "morag.worker.process_video_task",
    "morag.worker.process_image_task",
    "morag.worker.process_document_task",
    "morag.worker.process_web_task",
    "morag.worker.process_youtube_task",
    "morag.ingest_tasks.ingest_audio_task",
    "morag.ingest_tasks.ingest_video_task",
    "morag.ingest_tasks.ingest_document_task",
    "morag.worker.process_text_task",  # no rule: classified by content type
)
MORAG_BASIC_TASKS = (
    "morag.tasks.document_tasks.process_document",
    "morag.tasks.audio_tasks.process_audio",
    "morag.tasks.video_tasks.process_video",
    "morag.tasks.web_tasks.process_url",
    "morag.tasks.health_check",  # no rule: the `celery` default queue
)
MISTUDIO_TASKS = (
    "src.workers.dataset_tasks.download_dataset_task",
    "src.workers.dataset_tasks.tokenize_dataset_task",
    "src.workers.training_tasks.train_sae_task",
    "src.workers.extraction_tasks.extract_features_task",
    "src.workers.quick_tasks.update_metadata_task",
    "src.workers.maintenance_tasks.cleanup_task",
)
PIPELINE_TASKS = AUTEUR_TASKS + MORAG_TASKS + MORAG_BASIC_TASKS + MISTUDIO_TASKS


class PermanentError(Exception):
    """An error a retry cannot fix (configured as non-retryable in the tests)."""


class TransientError(Exception):
    """An error worth retrying."""


_ERRORS: dict[str, type[BaseException]] = {
    "PermanentError": PermanentError,
    "TransientError": TransientError,
}


def _record(task: Any, tag: str) -> dict[str, Any]:
    record = {
        "task": task.name,
        "worker": os.environ["SWITCHYARD_WORKER_ID"],
        "tag": tag,
        "pid": os.getpid(),
        "celery_id": task.request.id,
        "ts": time.time(),
    }
    broker_redis().rpush(RUNS_KEY, json.dumps(record))
    return record


def _finish(record: dict[str, Any], ok: bool) -> None:
    broker_redis().rpush(DONE_KEY, json.dumps({**record, "ok": ok, "end": time.time()}))


def _error(error_type: str, message: str) -> BaseException:
    cls = _ERRORS.get(error_type) or getattr(builtins, error_type, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RuntimeError
    return cls(message or f"{error_type} raised on purpose")


def _make_pipeline_task(name: str) -> Any:
    @app.task(name=name, bind=True)
    def pipeline_task(self: Any, seconds: float = 0.05, tag: str = "") -> dict[str, Any]:
        record = _record(self, tag)
        try:
            time.sleep(float(seconds))
        finally:
            _finish(record, ok=True)
        return record

    return pipeline_task


for _name in PIPELINE_TASKS:
    _make_pipeline_task(_name)


@app.task(name="seed.always_fail", bind=True)
def always_fail(self: Any, message: str = "always fails", tag: str = "") -> None:
    """Raise RuntimeError(message), every time."""
    record = _record(self, tag)
    _finish(record, ok=False)
    raise RuntimeError(message)


@app.task(name="seed.fail_until", bind=True)
def fail_until(
    self: Any, flag: str, error_type: str = "RuntimeError", message: str = "", tag: str = ""
) -> dict[str, Any]:
    """Raise `error_type` until the Redis key seed:flag:<flag> exists; then succeed."""
    record = _record(self, tag or flag)
    if not broker_redis().exists(FLAG_PREFIX + flag):
        _finish(record, ok=False)
        raise _error(error_type, message or f"flag {flag} not set")
    _finish(record, ok=True)
    return record


@app.task(name="seed.fail_with", bind=True)
def fail_with(self: Any, error_type: str, message: str = "", tag: str = "") -> None:
    """Raise an exception of type `error_type` (builtin name or this module's), always."""
    record = _record(self, tag or error_type)
    _finish(record, ok=False)
    raise _error(error_type, message)
