"""The agent's start-up check: is the Celery app's broker the Redis the scheduler dispatches to?"""

from __future__ import annotations

import pytest

from worker_agent.broker_check import RedisLocation, Verdict, compare_broker, redact, redis_location

STATE = "redis://127.0.0.1:6379/0"


def no_dns(host: str) -> frozenset[str]:
    return frozenset()


@pytest.mark.parametrize(("url", "location"), [
    ("redis://", RedisLocation("redis", "127.0.0.1", 6379, 0)),
    ("redis://localhost", RedisLocation("redis", "127.0.0.1", 6379, 0)),
    ("redis://:secret@Cache.Example:6380/3", RedisLocation("redis", "cache.example", 6380, 3)),
    ("redis://h:1?db=4", RedisLocation("redis", "h", 1, 4)),
    ("rediss://u:p@h:1/2?ssl_cert_reqs=none", RedisLocation("rediss", "h", 1, 2)),
    ("redis://[::1]:6379/0", RedisLocation("redis", "127.0.0.1", 6379, 0)),
    ("unix:///run/redis.sock?db=2", RedisLocation("unix", "/run/redis.sock", 0, 2)),
    ("redis+socket:///run/redis.sock?virtual_host=2", RedisLocation("unix", "/run/redis.sock", 0, 2)),
    ("redis://a:1/0;redis://b:1/0", RedisLocation("redis", "a", 1, 0)),
    ("amqp://guest@localhost//", None),
    ("redis://h:1/notadb", None),
])
def test_redis_locations_read_from_kombu_and_redis_py_urls(url: str, location: RedisLocation | None) -> None:
    assert redis_location(url) == location


@pytest.mark.parametrize("broker", [
    "redis://127.0.0.1:6379/0",
    "redis://localhost:6379",
    "redis://:password@LOCALHOST:6379/0",
    "redis://127.0.0.1:6379/0?socket_timeout=5",
])
def test_the_same_redis_written_differently_is_the_same(broker: str) -> None:
    verdict, _ = compare_broker(broker, STATE, resolve=no_dns)
    assert verdict is Verdict.SAME


@pytest.mark.parametrize("broker", [
    "redis://127.0.0.1:6379/5",
    "redis://127.0.0.1:6380/0",
    "rediss://127.0.0.1:6379/0",
    "redis://other-host:6379/0",
    "amqp://guest@localhost//",
    "",
])
def test_another_server_port_database_or_transport_is_different(broker: str) -> None:
    verdict, message = compare_broker(broker, STATE, resolve=no_dns)
    assert verdict is Verdict.DIFFERENT
    assert f"is not the Redis the scheduler dispatches to ({STATE})" in message
    assert "--state-redis-url" in message


def test_host_names_that_resolve_to_a_common_address_are_the_same() -> None:
    addresses = {"redis.internal": frozenset({"10.0.0.5"}), "10.0.0.5": frozenset({"10.0.0.5"})}
    verdict, _ = compare_broker("redis://redis.internal:6379/0", "redis://10.0.0.5:6379/0",
                                resolve=lambda host: addresses.get(host, frozenset()))
    assert verdict is Verdict.SAME


def test_the_refusal_names_both_urls_without_passwords() -> None:
    verdict, message = compare_broker("redis://:hunter2@10.1.1.1:6379/1", "redis://u:s3cret@10.1.1.1:6379/0",
                                      resolve=no_dns)
    assert verdict is Verdict.DIFFERENT
    assert "hunter2" not in message and "s3cret" not in message
    assert "redis://***@10.1.1.1:6379/1" in message and "redis://***@10.1.1.1:6379/0" in message
    assert "\n" not in message


SENTINEL_STATE = "redis+sentinel://:pw@s1:26379,s2:26379,s3:26379/mymaster/0"
MASTER = {"master_name": "mymaster"}


@pytest.mark.parametrize(("broker", "options"), [
    ("sentinel://s1:26379;sentinel://s2:26379;sentinel://s3:26379", MASTER),
    ("sentinel://:pw@S2:26379/0", MASTER),  # one Sentinel of the group is enough
    ("sentinel://s3:26379/0;sentinel://elsewhere:26379/0", {**MASTER, "sentinel_kwargs": {"password": "x"}}),
])
def test_a_sentinel_broker_on_the_same_sentinels_master_and_database_is_the_same(
        broker: str, options: dict[str, object]) -> None:
    verdict, message = compare_broker(broker, SENTINEL_STATE, resolve=no_dns, broker_transport_options=options)
    assert verdict is Verdict.SAME, message


@pytest.mark.parametrize(("broker", "options", "problem"), [
    ("sentinel://s1:26379", {"master_name": "other"}, "master 'other' is not 'mymaster'"),
    ("sentinel://s1:26379/4", MASTER, "database 4 is not 0"),
    ("sentinel://x1:26379;sentinel://s1:26380", MASTER, "names none of the same Sentinels"),
    ("sentinel://s1:26379", {}, "has no master name"),
    ("redis://s1:6379/0", {}, "is not the Sentinel-managed Redis the scheduler dispatches to"),
])
def test_a_broker_that_is_not_the_sentinel_managed_state_redis_is_different(
        broker: str, options: dict[str, object], problem: str) -> None:
    verdict, message = compare_broker(broker, SENTINEL_STATE, resolve=no_dns, broker_transport_options=options)
    assert verdict is Verdict.DIFFERENT
    assert problem in message
    # The refusal says exactly what to configure, and never with a password.
    assert ("broker_url = 'sentinel://s1:26379/0;sentinel://s2:26379/0;sentinel://s3:26379/0' and "
            "broker_transport_options = {'master_name': 'mymaster'}") in message
    assert ":pw@" not in message and "\n" not in message


def test_a_sentinel_broker_for_a_single_state_redis_is_different() -> None:
    verdict, message = compare_broker("sentinel://:pw@s1:26379;sentinel://:pw@s2:26379", STATE, resolve=no_dns,
                                      broker_transport_options=MASTER)
    assert verdict is Verdict.DIFFERENT
    assert "goes through Sentinels, but the scheduler dispatches to the single Redis" in message
    assert "sentinel://***@s1:26379;sentinel://***@s2:26379" in message


def test_redact_leaves_urls_without_credentials_alone() -> None:
    assert redact(STATE) == STATE
    assert redact("redis://:pw@h:1/0") == "redis://***@h:1/0"
