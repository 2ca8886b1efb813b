"""Configuration: the example file of every seed pipeline loads, and bad files say where they are wrong."""

from __future__ import annotations

import asyncio
import importlib.util
import textwrap
from pathlib import Path

import pytest

from scheduler.config import ConfigError, load_settings
from scheduler.core.classify import classify
from scheduler.core.model import GpuNeed, Submission, TaskClass
from scheduler.core.placement import Strategy
from scheduler.core.retry import DEFAULT_RETRY, Backoff
from scheduler.settings import DEFAULT_QUEUES, Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def load_example(name: str) -> Settings:
    return load_settings(["--config", str(EXAMPLES / name)], {})


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "switchyard.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(["--config", path], {})
    message = str(caught.value)
    assert message.startswith(f"config file {path} line "), message
    return message


# --- the example files ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["morag.yaml", "morag-basic.yaml", "auteur.yaml", "mistudio.yaml"])
def test_every_example_loads(name):
    settings = load_example(name)
    assert settings.config_file.endswith(name)
    names = {q.name for q in settings.queues}
    assert set(settings.class_queues.values()) <= names
    assert all(rule.queue in names for rule in settings.rules if rule.queue)


def test_morag_queues_priorities_limits_and_fallback():
    settings = load_example("morag.yaml")
    assert [(q.name, q.default_priority, q.max_tasks_per_worker) for q in settings.queues] == [
        ("gpu_priority", 8, 2),
        ("gpu_fallback", 5, 3),
        ("cpu_standard", 3, 4),
        ("cpu_batch", 1, 8),
    ]
    assert [c.queues for c in settings.fallback_chains] == [
        ("gpu_priority", "gpu_fallback", "cpu_standard", "cpu_batch")
    ]
    assert settings.placement.strategy is Strategy.SPREAD
    rules = settings.classification_rules()
    for content, queue, gpu in [
        ("audio", "gpu_priority", GpuNeed.REQUIRED),
        ("video", "gpu_priority", GpuNeed.REQUIRED),
        ("image", "gpu_priority", GpuNeed.REQUIRED),
        ("document", "cpu_standard", GpuNeed.NONE),
        ("web", "cpu_standard", GpuNeed.NONE),
        ("text", "cpu_standard", GpuNeed.NONE),
        ("youtube", "gpu_fallback", GpuNeed.PREFERRED),
    ]:
        decision = classify(
            Submission("morag.worker.process_file_task", content_type=content), rules
        )
        assert (decision.queue, decision.gpu) == (queue, gpu), content
    assert classify(Submission("morag.worker.process_audio_task"), rules).queue == "gpu_priority"
    assert classify(Submission("morag.worker.process_youtube_task"), rules).gpu is GpuNeed.PREFERRED
    assert (
        classify(Submission("morag.ingest_tasks.ingest_document_task"), rules).queue
        == "cpu_standard"
    )


@pytest.mark.parametrize(
    ("task_name", "gpu_memory_mb", "queue"),
    [
        ("auteur.tasks.generate.image", 12000, "gpu.generation"),
        ("auteur.tasks.generate.image", 4096, "gpu.processing"),
        ("auteur.tasks.generate.image", 0, "gpu.generation"),
        ("auteur.tasks.process.run_upscaling", 9000, "gpu.generation"),
        ("auteur.tasks.process.apply_style_transfer", 0, "gpu.processing"),
        ("auteur.tasks.analysis.analyze_scene", 0, "cpu.analysis"),
        ("auteur.tasks.thumbnail.generate_thumbnail", 0, "cpu.thumbnail"),
        ("auteur.tasks.storage.save_to_storage", 0, "io.storage"),
        ("auteur.tasks.unknown", 0, "cpu.analysis"),
    ],
)
def test_auteur_routes_by_vram_then_task_name(task_name, gpu_memory_mb, queue):
    settings = load_example("auteur.yaml")
    decision = classify(
        Submission(task_name, gpu_memory_mb=gpu_memory_mb), settings.classification_rules()
    )
    assert decision.queue == queue, decision.reason


def test_auteur_policies_rates_and_retention():
    settings = load_example("auteur.yaml")
    policies = settings.retry_policies
    assert set(policies) == {"none", "default", "critical", "batch"}
    assert (
        policies["default"].base_delay_seconds,
        policies["default"].multiplier,
        policies["default"].max_delay_seconds,
    ) == (60, 2, 3600)
    assert (
        policies["critical"].base_delay_seconds,
        policies["critical"].multiplier,
        policies["critical"].max_delay_seconds,
    ) == (30, 1.5, 1800)
    batch = policies["batch"]
    assert (batch.backoff, batch.base_delay_seconds, batch.max_retries) == (Backoff.LINEAR, 300, 3)
    assert [batch.nominal_delay(n) for n in (1, 2, 3)] == [300, 600, 900]
    assert settings.default_retry_policy == "default"
    assert settings.queue("priority").retry_policy == "critical"
    assert {r.pattern: round(r.per_second * 60) for r in settings.rate_limits} == {
        "auteur.tasks.generate.*": 10,
        "auteur.tasks.thumbnail.*": 100,
    }
    assert settings.result_ttl_seconds == 3600
    assert (settings.dead_letter_max, settings.dead_letter_ttl_seconds) == (10_000, 86400)
    assert all(q.max_depth > 0 and q.max_error_rate > 0 for q in settings.queues)
    decision = classify(
        Submission("auteur.tasks.generate.video", queue="priority"), settings.classification_rules()
    )
    assert (decision.queue, decision.priority, decision.retry_policy) == (
        "priority",
        10,
        "critical",
    )


def test_morag_basic_routes_and_ttl():
    settings = load_example("morag-basic.yaml")
    rules = settings.classification_rules()
    assert (
        classify(Submission("morag.tasks.document_tasks.process_document_task"), rules).queue
        == "document_processing"
    )
    audio = classify(Submission("morag.tasks.audio_tasks.process_audio_task"), rules)
    assert (audio.queue, audio.task_class) == ("audio_processing", TaskClass.MIXED)
    assert classify(Submission("morag.tasks.other"), rules).queue == "celery"
    assert settings.result_ttl_seconds == 3600
    policy = settings.retry_policies[settings.default_retry_policy]
    assert (policy.max_retries, policy.nominal_delay(3), policy.dead_letter) == (3, 60, False)


def test_mistudio_concurrency_and_time_limits():
    settings = load_example("mistudio.yaml")
    assert {q.name: q.max_tasks_per_worker for q in settings.queues} == {
        "high_priority": 8,
        "datasets": 4,
        "processing": 4,
        "training": 1,
        "extraction": 2,
        "low_priority": 2,
    }
    assert all(0 < q.soft_time_limit_seconds < q.hard_time_limit_seconds for q in settings.queues)
    rules = settings.classification_rules()
    for task_name, queue in [
        ("src.workers.dataset_tasks.download_dataset_task", "datasets"),
        ("src.workers.dataset_tasks.tokenize_dataset_task", "processing"),
        ("src.workers.training_tasks.train_sae_task", "training"),
        ("src.workers.extraction_tasks.extract_features_task", "extraction"),
        ("src.workers.quick_tasks.update_metadata", "high_priority"),
        ("src.workers.maintenance_tasks.cleanup", "low_priority"),
    ]:
        assert classify(Submission(task_name), rules).queue == queue, task_name


# --- a full file ------------------------------------------------------------------------


def test_every_section_is_read(tmp_path):
    path = write(
        tmp_path,
        """
        log_level: DEBUG
        heartbeat_timeout_seconds: 12.5
        dead_letter_max: 50
        queues:
          - {name: gpu, class: gpu_intensive, default_priority: 9, paused: true, retry_policy: quick}
          - {name: cpu, class: cpu, soft_time_limit_seconds: 10, hard_time_limit_seconds: 20}
        class_queues: {gpu_intensive: gpu, mixed: gpu, cpu: cpu, io: cpu}
        content_types: {PDF: gpu_intensive}
        rules:
          - name: whisper
            match: {task_name: "asr.*", content_types: [audio], min_gpu_memory_mb: 100}
            then: {queue: gpu, gpu: preferred, priority: 7, retry_policy: quick,
                   preferred_labels: {model: whisper-large}}
        retry_policies:
          quick: {max_retries: 2, backoff: linear, base_delay_seconds: 1, max_delay_seconds: 5,
                  jitter: 0, non_retryable: [ValueError, app.errors.BadInput], dead_letter: false}
        default_retry_policy: quick
        fallback_chains: [{queues: [gpu, cpu], after_seconds: 15}]
        aging: {enabled: false, default_max_wait_seconds: 60, max_wait_seconds: {1: 10, 9: 30}}
        placement:
          strategy: binpack
          weights: {load: 0, failures: 3}
          preferred_gpu_wait_seconds: 20
          quarantine_failures: 0
        rate_limits: {"asr.*": 5/s}
    """,
    )
    s = load_settings(["--config", path], {})
    assert (s.log_level, s.heartbeat_timeout_seconds, s.dead_letter_max) == ("DEBUG", 12.5, 50)
    gpu, cpu = s.queues
    assert (gpu.paused, gpu.default_priority, gpu.retry_policy) == (True, 9, "quick")
    assert (cpu.soft_time_limit_seconds, cpu.hard_time_limit_seconds) == (10, 20)
    assert s.content_classes["pdf"] is TaskClass.GPU_INTENSIVE
    assert s.content_classes["audio"] is TaskClass.GPU_INTENSIVE  # defaults kept
    (rule,) = s.rules
    assert (rule.task_name, rule.content_types, rule.min_gpu_memory_mb) == (
        "asr.*",
        ("audio",),
        100,
    )
    assert (rule.gpu, rule.priority, dict(rule.preferred_labels)) == (
        GpuNeed.PREFERRED,
        7,
        {"model": "whisper-large"},
    )
    quick = s.retry_policies["quick"]
    assert quick.non_retryable == {"ValueError", "app.errors.BadInput"} and not quick.dead_letter
    assert s.fallback_chains[0].after_seconds == 15
    assert not s.aging.enabled and s.aging.wait_at(9) == 30 and s.aging.wait_at(5) == 60
    assert s.placement.strategy is Strategy.BINPACK
    assert (
        s.placement.weights.load,
        s.placement.weights.failures,
        s.placement.weights.capability,
    ) == (0, 3, 2.0)
    assert s.placement.quarantine_failures == 0 and s.placement.preferred_gpu_wait_seconds == 20
    assert s.rate_limits[0].per_second == 5


def test_no_file_gives_defaults_and_the_default_retry_policy():
    s = load_settings([], {})
    assert s.queues == DEFAULT_QUEUES and s.retry_policies["none"].max_retries == 0
    assert s.default_retry_policy == "default" and s.retry_policies["default"] is DEFAULT_RETRY
    assert s == Settings()


def test_a_file_keeps_the_built_in_policies_and_can_opt_out(tmp_path):
    own = write(tmp_path, "retry_policies:\n  quick: {max_retries: 1}\n")
    s = load_settings(["--config", own], {})
    assert set(s.retry_policies) == {"none", "default", "quick"}
    assert s.retry_policies["default"] is DEFAULT_RETRY and s.default_retry_policy == "default"
    opted_out = write(tmp_path, "default_retry_policy: none\n")
    assert load_settings(["--config", opted_out], {}).default_retry_policy == "none"
    assert load_settings(["--default-retry-policy", "none"], {}).default_retry_policy == "none"
    assert load_settings([], {"SWITCHYARD_DEFAULT_RETRY_POLICY": "none"}).default_retry_policy == "none"


def test_redefining_default_keeps_the_built_in_values_it_leaves_out(tmp_path):
    path = write(tmp_path, "retry_policies:\n  default: {max_retries: 5, dead_letter: false}\n")
    policy = load_settings(["--config", path], {}).retry_policies["default"]
    assert (policy.max_retries, policy.dead_letter) == (5, False)
    assert (
        policy.backoff,
        policy.base_delay_seconds,
        policy.multiplier,
        policy.max_delay_seconds,
        policy.jitter,
    ) == (
        DEFAULT_RETRY.backoff,
        DEFAULT_RETRY.base_delay_seconds,
        DEFAULT_RETRY.multiplier,
        DEFAULT_RETRY.max_delay_seconds,
        DEFAULT_RETRY.jitter,
    )


def test_empty_file_gives_defaults(tmp_path):
    assert load_settings(["--config", write(tmp_path, "# nothing\n")], {}).queues == DEFAULT_QUEUES


# --- errors name the key and the line ---------------------------------------------------

QUEUES = (
    "class_queues: {gpu_intensive: gpu, mixed: gpu, cpu: cpu, io: cpu}\n"
    "queues:\n"
    "  - name: gpu\n"
    "    class: gpu_intensive\n"
    "  - name: cpu\n"
    "    class: cpu\n"
)


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        ("log_levl: INFO\n", 1, ["unknown key 'log_levl'", "did you mean 'log_level'"]),
        (
            QUEUES + "  - name: io\n    prioirty: 3\n",
            8,
            ["queues[2]: unknown key 'prioirty'", "did you mean 'default_priority'"],
        ),
        (
            QUEUES + "  - name: io\n    default_priority: 11\n",
            8,
            ["queues[2].default_priority: 11 must be an integer 1-10"],
        ),
        (
            QUEUES + "  - name: io\n    serializer: pickle\n",
            8,
            ["queues[2].serializer", "'pickle' must be one of json, msgpack"],
        ),
        (
            QUEUES + "  - name: gpu\n",
            7,
            ["queues[2].name", "duplicate queue name 'gpu' (first defined on line 3)"],
        ),
        (
            QUEUES + "rules:\n  - name: r\n    then:\n      queue: gpu.nope\n",
            10,
            ["rules[0].then.queue", "queue 'gpu.nope' is not defined"],
        ),
        (
            QUEUES + "rules:\n  - name: r\n    then: {prioirty: 3}\n",
            9,
            ["rules[0].then: unknown key 'prioirty'", "did you mean 'priority'"],
        ),
        (
            QUEUES + "rate_limits:\n  'a.*': 10/m\n  'b.*': ten per minute\n",
            9,
            ["rate_limits.b.*", "must look like 10/s"],
        ),
        (
            QUEUES
            + "  - name: slow\n    soft_time_limit_seconds: 60\n    hard_time_limit_seconds: 30\n",
            8,
            ["queues[2].soft_time_limit_seconds: 60 exceeds hard_time_limit_seconds 30"],
        ),
        (
            QUEUES + "fallback_chains:\n  - queues: [gpu, cpu, cpu_batch]\n",
            8,
            ["fallback_chains[0].queues[2]", "queue 'cpu_batch' is not defined"],
        ),
        (
            QUEUES.replace("io: cpu", "io: storage"),
            1,
            ["class_queues.io", "queue 'storage' is not defined"],
        ),
        (
            QUEUES.replace(
                "class_queues: {gpu_intensive: gpu, mixed: gpu, cpu: cpu, io: cpu}\n", ""
            ),
            1,
            ["class_queues.gpu_intensive", "the default queue 'gpu_priority' is not defined"],
        ),
        (
            "queues:\n  - name: q\n    retry_policy: fast\n",
            3,
            ["queues[0].retry_policy", "retry policy 'fast' is not defined"],
        ),
        (
            "default_retry_policy: fast\n",
            1,
            ["default_retry_policy", "retry policy 'fast' is not defined"],
        ),
        ("retry_policies:\n  none: {max_retries: 1}\n", 2, ["retry_policies.none", "built in"]),
        (
            "retry_policies:\n  p:\n    backoff: cubic\n",
            3,
            ["retry_policies.p.backoff", "exponential, linear"],
        ),
        (
            "retry_policies:\n  p:\n    jitter: 2\n",
            3,
            ["retry_policies.p.jitter", "between 0 and 1"],
        ),
        (
            "aging:\n  max_wait_seconds:\n    11: 5\n",
            3,
            ["aging.max_wait_seconds", "level 11 must be an integer 1-10"],
        ),
        (
            "placement:\n  weights:\n    load: -1\n",
            3,
            ["placement.weights.load: -1 must be a number >= 0"],
        ),
        ("placement:\n  strategy: random\n", 2, ["placement.strategy", "spread, binpack"]),
        (
            "heartbeat_timeout_seconds: soon\n",
            1,
            ["heartbeat_timeout_seconds: 'soon' must be a number > 0"],
        ),
        ("queues: []\n", 1, ["queues: must list at least one queue"]),
        (
            "queues:\n  - name: a\n  - name: b\n    class: gpu\n",
            4,
            ["queues[1].class", "gpu_intensive"],
        ),
        (
            "rules:\n  - name: r\n    match: {min_gpu_memory_mb: -5}\n    then: {gpu: required}\n",
            3,
            ["rules[0].match.min_gpu_memory_mb: -5 must be an integer >= 0"],
        ),
        (
            "rules:\n  - name: r\n    then: {class: cpu, gpu: required}\n",
            3,
            ["rules[0].then.gpu", "contradicts"],
        ),
        (
            "rules:\n  - name: r\n    match: {task_name: a}\n",
            2,
            ["rules[0]: missing required key 'then'"],
        ),
        (
            "log_level: INFO\nlog_level: DEBUG\n",
            2,
            ["duplicate key 'log_level' (first given on line 1)"],
        ),
        ("queues:\n  - name: a\n   bad indent\n", 3, ["not valid YAML"]),
        ("- just\n- a list\n", 1, ["top level must be a mapping"]),
    ],
)
def test_errors_name_key_and_line(tmp_path, text, line, fragments):
    message = load_error(tmp_path, text)
    assert f" line {line}: " in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        load_settings(["--config", str(tmp_path / "absent.yaml")], {})


# --- precedence: flag > env > file > default --------------------------------------------


def test_flag_beats_env_beats_file_beats_default(tmp_path):
    path = write(
        tmp_path,
        "listen: 0.0.0.0:1\nkey_prefix: file\nresult_ttl_seconds: 60\nlog_level: WARNING\n",
    )
    env = {"SWITCHYARD_LISTEN": "0.0.0.0:2", "SWITCHYARD_KEY_PREFIX": "env"}
    s = load_settings(["--config", path, "--listen", "0.0.0.0:3"], env)
    assert s.listen == "0.0.0.0:3"  # flag
    assert s.key_prefix == "env"  # env over file
    assert s.result_ttl_seconds == 60  # file over default
    assert s.redis_url == Settings().redis_url  # default


def test_config_file_from_environment(tmp_path):
    path = write(tmp_path, "key_prefix: fromfile\n")
    assert load_settings([], {"SWITCHYARD_CONFIG_FILE": path}).key_prefix == "fromfile"


def test_env_default_retry_policy_must_exist(tmp_path):
    path = str(EXAMPLES / "auteur.yaml")
    assert (
        load_settings(
            ["--config", path], {"SWITCHYARD_DEFAULT_RETRY_POLICY": "batch"}
        ).default_retry_policy
        == "batch"
    )
    with pytest.raises(ConfigError, match=r"default_retry_policy='fast'.*not defined"):
        load_settings(["--config", path], {"SWITCHYARD_DEFAULT_RETRY_POLICY": "fast"})


def test_bad_env_value_names_the_setting():
    with pytest.raises(ConfigError, match="heartbeat_timeout_seconds='-1'"):
        load_settings([], {"SWITCHYARD_HEARTBEAT_TIMEOUT_SECONDS": "-1"})


def test_commit_linger_may_be_zero_to_turn_it_off_but_not_negative(tmp_path):
    assert Settings().commit_linger_seconds == 0.005
    assert load_settings(["--commit-linger-seconds", "0"], {}).commit_linger_seconds == 0.0
    assert load_settings([], {"SWITCHYARD_COMMIT_LINGER_SECONDS": "0.002"}).commit_linger_seconds == 0.002
    assert load_settings(["--config", write(tmp_path, "commit_linger_seconds: 0\n")], {}).commit_linger_seconds == 0.0
    for bad in ("-0.001", "nan", "inf"):
        with pytest.raises(ConfigError, match=rf"commit_linger_seconds='{bad}': must be 0 \(off\) or a positive"):
            load_settings(["--commit-linger-seconds", bad], {})
    with pytest.raises(ConfigError, match="commit_linger_seconds: -1 must be a number >= 0"):
        load_settings(["--config", write(tmp_path, "commit_linger_seconds: -1\n")], {})
    # Any other duration still refuses 0.
    for bad in ("0", "inf", "nan"):
        with pytest.raises(ConfigError, match=f"heartbeat_timeout_seconds='{bad}': must be a positive number"):
            load_settings(["--heartbeat-timeout-seconds", bad], {})


def test_a_queue_may_ask_for_msgpack_and_json_is_the_default(tmp_path):
    path = write(tmp_path, QUEUES.replace("    class: cpu\n", "    class: cpu\n    serializer: msgpack\n"))
    settings = load_settings(["--config", path], {})
    assert {q.name: q.serializer for q in settings.queues} == {"gpu": "json", "cpu": "msgpack"}


def test_event_loop_takes_auto_uvloop_or_asyncio(monkeypatch):
    assert load_settings([], {}).event_loop == "auto"
    assert load_settings(["--event-loop", "asyncio"], {}).event_loop == "asyncio"
    assert load_settings([], {"SWITCHYARD_EVENT_LOOP": "uvloop"}).event_loop == "uvloop"
    with pytest.raises(ConfigError, match=r"event_loop='trio': must be one of auto, uvloop, asyncio"):
        load_settings(["--event-loop", "trio"], {})
    # Where uvloop is not installed, asking for it by name is a one-line configuration error.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvloop" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"uvloop is not installed here"):
        load_settings(["--event-loop", "uvloop"], {})
    assert load_settings([], {}).event_loop == "auto"


def test_the_scheduler_runs_on_the_loop_event_loop_names():
    from scheduler.main import run_on_loop

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_on_loop(loop_module(), "asyncio").startswith("asyncio")
    assert run_on_loop(loop_module(), "auto").startswith("uvloop")  # a dependency on Linux
    assert run_on_loop(loop_module(), "uvloop").startswith("uvloop")
