"""Redis URLs (`switchyard.redis_urls`): the Sentinel form, the password-free display form, the
Celery broker settings for the same Redis, and the submit path's replica wait."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from switchyard.redis_urls import (
    CeleryBroker,
    RedisUrlError,
    SentinelTarget,
    celery_broker,
    celery_broker_redis_url,
    celery_broker_target,
    check_url,
    display_url,
    is_sentinel_url,
    parse_sentinel_url,
    password_of,
)

from scheduler.config import ConfigError, load_settings
from scheduler.state.connection import ReplicaWait
from worker_agent.main import ConfigError as AgentConfigError
from worker_agent.main import parse_args as parse_agent_args

SECRET = "s3cret-pw"


@pytest.mark.parametrize(("url", "target"), [
    ("redis+sentinel://s1:26380,s2,s3:26382/mymaster",
     SentinelTarget((("s1", 26380), ("s2", 26379), ("s3", 26382)), "mymaster", 0)),
    ("redis+sentinel://10.0.0.1:26379/cache/3", SentinelTarget((("10.0.0.1", 26379),), "cache", 3)),
    ("redis+sentinel://[::1]:5000,[fe80::1]/m/", SentinelTarget((("::1", 5000), ("fe80::1", 26379)), "m", 0)),
    ("REDIS+SENTINEL://S1/m", SentinelTarget((("s1", 26379),), "m", 0)),
    (f"redis+sentinel://:{SECRET}@s1/m/1", SentinelTarget((("s1", 26379),), "m", 1, password=SECRET)),
    ("redis+sentinel://app:p%40ss@s1/m?sentinel_password=sp&sentinel_username=su",
     SentinelTarget((("s1", 26379),), "m", 0, username="app", password="p@ss",
                    sentinel_username="su", sentinel_password="sp")),
])
def test_sentinel_urls_are_read(url: str, target: SentinelTarget) -> None:
    assert is_sentinel_url(url)
    assert parse_sentinel_url(url) == target


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel://s1:26379", "names no master"),
    ("redis+sentinel://s1:26379/", "names no master"),
    ("redis+sentinel://s1/m/zero", "must be a number"),
    ("redis+sentinel://s1/m/0/extra", "/MASTER_NAME or /MASTER_NAME/DB"),
    ("redis+sentinel://s1:port/m", "must be a number 1-65535"),
    ("redis+sentinel://s1,,s2/m", "a Sentinel address is empty"),
    ("redis+sentinel://[::1/m", "is not [IPv6]:PORT"),
    (f"redis+sentinel://s1/m?socket_timeout=1&sentinel_password={SECRET}", "unknown option(s) socket_timeout"),
])
def test_unreadable_sentinel_urls_say_what_is_wrong_without_the_password(url: str, problem: str) -> None:
    with_password = url.replace("://s1", f"://:{SECRET}@s1", 1)
    with pytest.raises(RedisUrlError) as caught:
        check_url(with_password)
    assert problem in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("url", ["http://h:1/0", "redis//h", "rediss+sentinel://s1/m", "", "redis://h:notaport/0"])
def test_other_urls_are_refused_with_the_forms_accepted(url: str) -> None:
    with pytest.raises(RedisUrlError) as caught:
        check_url(url)
    assert "redis" in str(caught.value)


@pytest.mark.parametrize("url", ["redis://h:1/0", "rediss://u:p@h/2", "unix:///run/r.sock?db=1",
                                 "redis+sentinel://s1,s2/m/0"])
def test_readable_urls_pass_the_check(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://admin:{SECRET}@127.0.0.1:6379/0?password={SECRET}", "redis://127.0.0.1:6379/0"),
    ("redis://[::1]:6379/2", "redis://[::1]:6379/2"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    (f"redis+sentinel://u:{SECRET}@S1:1,s2/mymaster?sentinel_password={SECRET}",
     "redis+sentinel://s1:1,s2:26379/mymaster/0"),
    (f"redis+sentinel://:{SECRET}@s1/", "<unreadable redis+sentinel URL>"),
    (f"redis://:{SECRET}@h:notaport/0", "<unreadable Redis URL>"),
])
def test_the_display_form_never_shows_a_password(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_a_sentinel_targets_repr_leaves_passwords_out() -> None:
    target = parse_sentinel_url(f"redis+sentinel://:{SECRET}@s1/m?sentinel_password={SECRET}")
    assert SECRET not in repr(target)


def test_the_password_is_found_for_scrubbing_error_texts() -> None:
    assert password_of(f"redis://:{SECRET}@h/0") == SECRET
    assert password_of(f"redis://h/0?password={SECRET}") == SECRET
    assert password_of(f"redis+sentinel://:{SECRET}@s1/m") == SECRET
    assert password_of("redis://h/0") == ""


def test_a_plain_url_is_its_own_celery_broker() -> None:
    assert celery_broker("redis://h:6379/1") == CeleryBroker("redis://h:6379/1", {})


def test_a_sentinel_url_becomes_kombus_sentinel_broker_and_back() -> None:
    url = f"redis+sentinel://:{SECRET}@s1:26379,s2:26380/mymaster/2?sentinel_password=sp"
    broker = celery_broker(url)
    assert broker.broker_url == f"sentinel://:{SECRET}@s1:26379/2;sentinel://:{SECRET}@s2:26380/2"
    assert broker.transport_options == {"master_name": "mymaster", "sentinel_kwargs": {"password": "sp"}}
    assert celery_broker_target(broker.broker_url, broker.transport_options) == parse_sentinel_url(url)
    assert parse_sentinel_url(celery_broker_redis_url(broker.broker_url, broker.transport_options)) == \
        parse_sentinel_url(url)


def test_a_celery_sentinel_broker_without_a_master_name_is_explained() -> None:
    with pytest.raises(RedisUrlError) as caught:
        celery_broker_target("sentinel://s1:26379", {})
    assert "broker_transport_options = {'master_name': NAME}" in str(caught.value)


def test_the_scheduler_refuses_an_unreadable_redis_url_in_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(["--redis-url", f"redis+sentinel://:{SECRET}@s1:26379"], environ={})
    message = str(caught.value)
    assert message.startswith("setting redis_url: ") and "names no master" in message
    assert SECRET not in message and "\n" not in message
    settings = load_settings(["--redis-url", "redis+sentinel://s1,s2,s3/m/0", "--submit-wait-replicas", "1"],
                             environ={})
    assert settings.submit_wait_replicas == 1 and settings.submit_wait_timeout_seconds == 1.0
    with pytest.raises(ConfigError, match="submit_wait_timeout_seconds=30: must be at most 5"):
        load_settings(["--submit-wait-timeout-seconds", "30"], environ={})


def test_the_agent_refuses_an_unreadable_state_redis_url_in_one_line() -> None:
    argv = ["--scheduler", "s:1", "--worker-id", "w1", "--state-redis-url", f"redis+sentinel://:{SECRET}@s1/m/x",
            "--", "celery", "-A", "app", "worker"]
    with pytest.raises(AgentConfigError) as caught:
        parse_agent_args(argv, environ={})
    assert str(caught.value).startswith("--state-redis-url: ") and "must be a number" in str(caught.value)
    assert SECRET not in str(caught.value)
    argv[5] = "redis+sentinel://s1,s2/m/1"
    assert parse_agent_args(argv, environ={}).state_redis_url == "redis+sentinel://s1,s2/m/1"


class _Pipe:
    def __init__(self) -> None:
        self.waits: list[tuple[int, int]] = []

    def wait(self, replicas: int, timeout_ms: int) -> Any:
        self.waits.append((replicas, timeout_ms))


def test_no_replica_wait_by_default() -> None:
    pipe = _Pipe()
    ReplicaWait().queue(pipe)
    assert pipe.waits == []


def test_a_replica_wait_that_runs_out_is_counted_and_warned_about_once_a_minute(
        caplog: pytest.LogCaptureFixture) -> None:
    wait = ReplicaWait(1, 0.25)
    pipe = _Pipe()
    wait.queue(pipe)
    wait.reached(1, "redis://h:1/0")
    assert wait.timeouts == 0
    with caplog.at_level(logging.INFO, "switchyard.scheduler.state"):
        for _ in range(3):
            wait.queue(pipe)
            wait.reached(0, "redis://h:1/0")
        # A replica back in sync: the full wait again, and one line saying so.
        wait.queue(pipe)
        wait.reached(1, "redis://h:1/0")
        wait.queue(pipe)
    assert wait.timeouts == 3
    # The first shortfall pays the whole timeout; until a wait succeeds, the next ones only 10 ms.
    assert pipe.waits == [(1, 250), (1, 250), (1, 10), (1, 10), (1, 10), (1, 250)]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "1 submission(s) accepted with only 0 of 1 replica(s) in sync within 250 ms" in lines[0]
    assert "until a replica catches up, submissions wait at most 10 ms" in lines[0]
    assert lines[1] == "replicas of redis://h:1/0 in sync again: submissions wait up to 250 ms for 1 replica(s) again"
