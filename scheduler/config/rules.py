"""How work is sorted: the `class_queues`, `content_types` and `rules` sections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from switchyard.wire import LABEL_KEY_RULE, label_key_problem

from scheduler.config.queues import TASK_CLASS_NAMES
from scheduler.config.yaml_lines import FileReader, LineMap, LineSeq, join_path, kind
from scheduler.core.classify import DEFAULT_CONTENT_CLASSES
from scheduler.core.model import MAX_PRIORITY, MIN_PRIORITY, GpuNeed, TaskClass
from scheduler.core.retry import RetryPolicy
from scheduler.core.routing import ClassificationRule
from scheduler.settings import DEFAULT_CLASS_QUEUES

_GPU_NEEDS = (GpuNeed.NONE.value, GpuNeed.PREFERRED.value, GpuNeed.REQUIRED.value)
_RULE_KEYS = ("name", "match", "then")
_MATCH_KEYS = ("task_name", "content_types", "min_gpu_memory_mb")
_THEN_KEYS = ("queue", "class", "gpu", "priority", "retry_policy", "preferred_labels")


def parse_class_queues(
    r: FileReader, data: LineMap, queue_names: Sequence[str]
) -> dict[TaskClass, str]:
    """Read `class_queues` from the top level `data`, filling in defaults for classes not named.

    A default that is not among `queue_names` is an error too (a file that renames the queues
    must say where each class goes).
    """
    mapping: dict[TaskClass, str] = dict(DEFAULT_CLASS_QUEUES)
    given: dict[TaskClass, int] = {}
    if "class_queues" in data:
        section = r.mapping(
            data["class_queues"],
            data.key_lines["class_queues"],
            "class_queues",
            "a mapping of task class -> queue name",
        )
        r.keys(section, "class_queues", TASK_CLASS_NAMES)
        for cls_name in section:
            task_class = TaskClass(cls_name)
            mapping[task_class] = r.queue_ref(section, cls_name, "class_queues", queue_names)
            given[task_class] = section.key_lines[cls_name]
    for task_class in TaskClass:
        queue = mapping[task_class]
        if task_class not in given and queue not in queue_names:
            line = data.key_lines.get("class_queues", data.key_lines.get("queues", 1))
            raise r.error(
                line,
                f"class_queues.{task_class.value}",
                f"the default queue {queue!r} is not defined in queues ({', '.join(queue_names)}); "
                f"name a queue for class {task_class.value!r} under class_queues",
            )
    return mapping


def parse_content_types(r: FileReader, raw: Any, line: int) -> dict[str, TaskClass]:
    """Read `content_types` (at `line`) on top of the built-in content classes."""
    section = r.mapping(raw, line, "content_types", "a mapping of content type -> task class")
    classes = dict(DEFAULT_CONTENT_CLASSES)
    for content in section:
        if not isinstance(content, str) or not content.strip():
            raise r.error(
                section.key_lines[content],
                "content_types",
                f"{kind(content)} is not a content type",
            )
        cls_name = r.choice(section, content, "content_types", TASK_CLASS_NAMES)
        classes[content.strip().lower()] = TaskClass(str(cls_name))
    return classes


def parse_rules(
    r: FileReader,
    raw: Any,
    line: int,
    queue_names: Sequence[str],
    policies: Mapping[str, RetryPolicy],
) -> tuple[ClassificationRule, ...]:
    """Read `rules` (at `line`), in order; a rule matching a list of globs becomes one per glob."""
    items = r.sequence(raw, line, "rules", "a list of rules")
    rules: list[ClassificationRule] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        path = f"rules[{index}]"
        m = r.mapping(item, items.item_lines[index], path)
        r.keys(m, path, _RULE_KEYS, required=("name", "then"))
        name = r.text(m, "name", path, "", empty_ok=False)
        if name in seen:
            raise r.error(
                m.key_lines["name"],
                f"{path}.name",
                f"duplicate rule name {name!r} (first on line {seen[name]})",
            )
        seen[name] = m.key_lines["name"]
        globs, content_types, min_gpu = _parse_match(r, m, path)
        decisions = _parse_then(r, m, path, name, queue_names, policies)
        # A list of globs is one rule per glob, in order, all under the rule's name.
        rules.extend(
            replace(
                decisions,
                task_name=glob,
                content_types=content_types,
                min_gpu_memory_mb=min_gpu,
            )
            for glob in globs
        )
    return tuple(rules)


def _parse_match(r: FileReader, m: LineMap, path: str) -> tuple[list[str], tuple[str, ...], int]:
    """A rule's `match`: task-name globs ("" matches any), content types, least GPU memory."""
    globs: list[str] = [""]
    content_types: tuple[str, ...] = ()
    if "match" not in m:
        return globs, content_types, 0
    mpath = f"{path}.match"
    match = r.mapping(m["match"], m.key_lines["match"], mpath)
    r.keys(match, mpath, _MATCH_KEYS)
    if isinstance(match.get("task_name"), LineSeq):
        gpath = f"{mpath}.task_name"
        listed_globs = match["task_name"]
        if not listed_globs:
            raise r.error(match.key_lines["task_name"], gpath, "must list at least one glob")
        for at, glob in enumerate(listed_globs):
            if not isinstance(glob, str) or not glob:
                raise r.error(
                    listed_globs.item_lines[at],
                    f"{gpath}[{at}]",
                    f"{kind(glob)} must be a non-empty task-name glob",
                )
        globs = list(listed_globs)
    elif "task_name" in match:
        globs = [r.text(match, "task_name", mpath, "", empty_ok=False)]
    if "content_types" in match:
        cpath = f"{mpath}.content_types"
        listed = r.sequence(
            match["content_types"],
            match.key_lines["content_types"],
            cpath,
            "a list of content types",
        )
        for at, content in enumerate(listed):
            if not isinstance(content, str) or not content.strip():
                raise r.error(
                    listed.item_lines[at],
                    f"{cpath}[{at}]",
                    f"{kind(content)} is not a content type",
                )
        content_types = tuple(c.strip().lower() for c in listed)
    return globs, content_types, r.integer(match, "min_gpu_memory_mb", mpath, 0)


def _parse_then(
    r: FileReader,
    m: LineMap,
    path: str,
    name: str,
    queue_names: Sequence[str],
    policies: Mapping[str, RetryPolicy],
) -> ClassificationRule:
    """A rule's `then`: a rule called `name` that matches anything and decides what `then` says."""
    tpath = f"{path}.then"
    then = r.mapping(m["then"], m.key_lines["then"], tpath)
    r.keys(then, tpath, _THEN_KEYS)
    if not then:
        raise r.error(
            m.key_lines["then"], tpath, f"must set at least one of {', '.join(_THEN_KEYS)}"
        )
    cls_name = r.choice(then, "class", tpath, TASK_CLASS_NAMES)
    gpu_name = r.choice(then, "gpu", tpath, _GPU_NEEDS)
    task_class = TaskClass(cls_name) if cls_name else None
    gpu = GpuNeed(gpu_name) if gpu_name else None
    if task_class is not None and gpu is not None and not _consistent(task_class, gpu):
        raise r.error(
            then.key_lines["gpu"],
            f"{tpath}.gpu",
            f"gpu={gpu.value} contradicts class {task_class.value}",
        )
    labels = _parse_labels(r, then, tpath)
    return ClassificationRule(
        name=name,
        queue=r.queue_ref(then, "queue", tpath, queue_names) if "queue" in then else "",
        task_class=task_class,
        gpu=gpu,
        priority=(
            r.integer(then, "priority", tpath, 0, MIN_PRIORITY, MAX_PRIORITY)
            if "priority" in then
            else 0
        ),
        retry_policy=(
            r.policy_ref(then, "retry_policy", tpath, policies) if "retry_policy" in then else ""
        ),
        preferred_labels=labels,
    )


def _parse_labels(r: FileReader, then: LineMap, tpath: str) -> dict[str, str]:
    """`then.preferred_labels`: worker label -> value, keys under the wire's label-key rule."""
    labels: dict[str, str] = {}
    if "preferred_labels" not in then:
        return labels
    lpath = f"{tpath}.preferred_labels"
    section = r.mapping(
        then["preferred_labels"],
        then.key_lines["preferred_labels"],
        lpath,
        "a mapping of label -> value",
    )
    for label, value in section.items():
        problem = (
            label_key_problem(label)
            if isinstance(label, str)
            else f"label key {kind(label)} is invalid: use {LABEL_KEY_RULE}"
        )
        if problem:
            raise r.error(section.key_lines[label], lpath, problem)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise r.error(
                section.key_lines[label],
                join_path(lpath, label),
                f"{kind(value)} must be a string",
            )
        labels[label] = str(value)
    return labels


def _consistent(task_class: TaskClass, gpu: GpuNeed) -> bool:
    """Whether a rule may set both: GPU-intensive work needs a GPU, CPU and IO work none."""
    if task_class is TaskClass.GPU_INTENSIVE:
        return gpu is not GpuNeed.NONE
    if task_class in (TaskClass.CPU, TaskClass.IO):
        return gpu is GpuNeed.NONE
    return True
