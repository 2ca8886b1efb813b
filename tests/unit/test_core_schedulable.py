"""Could any known worker ever run a task? Unknown content types (with a did-you-mean), GPU
requests larger than any known GPU, labels no known worker has; and what is merely waiting."""

from __future__ import annotations

import pytest

from scheduler.core.classify import classify
from scheduler.core.model import GpuNeed, Submission, TaskClass, WorkerType
from scheduler.core.routing import ClassificationRule
from scheduler.core.schedulable import (
    KnownWorker,
    known_content_types,
    unknown_content_type,
    unschedulable_reason,
)
from scheduler.settings import Settings

RULES = Settings().classification_rules()
A100 = KnownWorker("gpu-1", WorkerType.GPU, (40_960,), {"zone": "eu", "model": "whisper"})
H100 = KnownWorker("gpu-2", WorkerType.HYBRID, (81_920, 81_920), {"zone": "us"})
CPU = KnownWorker("cpu-1", WorkerType.CPU, (), {"zone": "eu"})


def reason(submission: Submission, workers: list[KnownWorker], rules=RULES) -> str | None:  # type: ignore[no-untyped-def]
    return unschedulable_reason(submission, classify(submission, rules), rules, workers)


@pytest.mark.parametrize("content", ["", "audio", "Audio", " video ", "youtube", "io", "storage"])
def test_known_and_missing_content_types_are_accepted(content: str) -> None:
    assert reason(Submission("t", content_type=content), []) is None


def test_an_unknown_content_type_is_refused_with_the_closest_known_ones() -> None:
    text = reason(Submission("t", content_type="auido"), [])
    assert text is not None
    assert "'auido' is not one classification knows" in text
    assert "did you mean 'audio'" in text  # the closest first
    assert "known content types: audio, document, image, io, storage, text, video, web, youtube" in text
    assert "allow_unschedulable" in text
    far = reason(Submission("t", content_type="spreadsheet"), [])
    assert far is not None and "did you mean" not in far


def test_an_unknown_content_type_is_fine_when_something_else_decides_the_class() -> None:
    assert reason(Submission("t", content_type="pdf", gpu=GpuNeed.NONE), []) is None
    assert reason(Submission("t", content_type="pdf", gpu_memory_mb=1024), []) is None
    by_name = ClassificationRule("pdf-tasks", task_name="docs.*", task_class=TaskClass.CPU)
    rules = Settings(rules=(by_name,)).classification_rules()
    assert reason(Submission("docs.parse", content_type="pdf"), [], rules) is None
    assert reason(Submission("other.parse", content_type="pdf"), [], rules) is not None


def test_content_types_named_by_rules_or_configuration_are_known() -> None:
    rules = Settings(
        content_classes={"pdf": TaskClass.CPU},
        rules=(ClassificationRule("asr", content_types=("speech",), queue="gpu_priority"),),
    ).classification_rules()
    assert known_content_types(rules) == ["pdf", "speech"]
    assert unknown_content_type(Submission("t", content_type="speech"), rules) is None
    assert unknown_content_type(Submission("t", content_type="PDF"), rules) is None


def test_gpu_memory_larger_than_every_known_gpu_is_refused() -> None:
    text = reason(Submission("t", gpu_memory_mb=100_000), [A100, H100, CPU])
    assert text is not None
    assert "asks for 100000 MiB" in text and "the largest: 81920 MiB, on gpu-2" in text
    assert reason(Submission("t", gpu_memory_mb=81_920), [A100, H100, CPU]) is None
    assert reason(Submission("t", gpu_memory_mb=50_000), [A100]) is not None


def test_gpu_memory_is_not_judged_without_a_gpu_worker_of_known_size() -> None:
    # No GPU worker known (a pool scaled to zero): merely waiting.
    assert reason(Submission("t", gpu_memory_mb=100_000), [CPU]) is None
    assert reason(Submission("t", gpu_memory_mb=100_000), []) is None
    # A GPU worker whose sizes are not recorded may be large enough.
    unknown = KnownWorker("old-gpu", WorkerType.GPU, None)
    assert reason(Submission("t", gpu_memory_mb=100_000), [A100, unknown]) is None


def test_gpu_memory_binds_only_work_that_must_run_on_a_gpu() -> None:
    # gpu=preferred may run on a CPU worker, where its memory request does not apply.
    assert reason(Submission("t", gpu=GpuNeed.PREFERRED, gpu_memory_mb=100_000), [A100, CPU]) is None


def test_a_label_no_known_worker_has_is_refused_naming_the_known_values() -> None:
    text = reason(Submission("t", content_type="text", labels={"zone": "asia"}), [A100, H100, CPU])
    assert text is not None
    assert "requires label zone=asia" in text and "known values of 'zone': eu, us" in text
    typo = reason(Submission("t", content_type="text", labels={"zome": "eu"}), [A100, H100, CPU])
    assert typo is not None and "no known worker has a label 'zome'" in typo and "did you mean 'zone'?" in typo


def test_labels_some_known_worker_has_are_accepted_and_nothing_is_judged_without_workers() -> None:
    assert reason(Submission("t", labels={"zone": "us"}), [A100, H100]) is None
    assert reason(Submission("t", labels={"model": "whisper", "zone": "eu"}), [A100, CPU]) is None
    assert reason(Submission("t", labels={"zone": "asia"}), []) is None
