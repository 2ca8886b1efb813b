"""`rediss://` URLs: the TLS options `check_url` accepts and the mistakes it refuses, the Celery
broker that verifies the server as redis-py does, and passwords kept out of what is shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from switchyard.redis_urls import RedisUrlError, celery_broker, check_url, display_url

from worker_agent.broker_check import redact


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_a_full_tls_url_is_accepted(ca_file: Path) -> None:
    check_url(f"rediss://:pw@redis:6380/0?ssl_cert_reqs=required&ssl_ca_certs={ca_file}"
              f"&ssl_certfile={ca_file}&ssl_keyfile={ca_file}&ssl_check_hostname=true&socket_timeout=5")


@pytest.mark.parametrize(("query", "message"), [
    ("ssl_ca_cert=/x", "unknown TLS option(s) ssl_ca_cert; a rediss:// URL takes ssl_cert_reqs, ssl_ca_certs"),
    ("ssl_cert_reqs=CERT_REQUIRED", "ssl_cert_reqs must be one of required, optional, none; got 'CERT_REQUIRED'"),
    ("ssl_ca_certs=/nonexistent/ca.crt", "ssl_ca_certs /nonexistent/ca.crt does not exist"),
    ("ssl_certfile={ca}", "a client certificate needs both ssl_certfile and ssl_keyfile"),
])
def test_tls_mistakes_are_refused(query: str, message: str, ca_file: Path) -> None:
    with pytest.raises(RedisUrlError) as raised:
        check_url(f"rediss://:secret-pw@redis:6380/0?{query.format(ca=ca_file)}")
    assert message in str(raised.value)
    assert "secret-pw" not in str(raised.value)


def test_tls_options_on_a_plain_url_are_refused(ca_file: Path) -> None:
    with pytest.raises(RedisUrlError, match=r"has TLS options \(ssl_ca_certs\) but no TLS: write rediss://"):
        check_url(f"redis://redis:6379/0?ssl_ca_certs={ca_file}")


def test_the_celery_broker_of_a_tls_url_verifies_the_server(ca_file: Path) -> None:
    assert celery_broker("rediss://redis:6380/0").broker_url == "rediss://redis:6380/0?ssl_cert_reqs=required"
    assert (celery_broker(f"rediss://redis:6380/0?ssl_ca_certs={ca_file}").broker_url
            == f"rediss://redis:6380/0?ssl_ca_certs={ca_file}&ssl_cert_reqs=required")
    # An explicit choice is kept, even "none" (docs/security.md says why not to).
    assert celery_broker("rediss://redis:6380/0?ssl_cert_reqs=none").broker_url.count("ssl_cert_reqs") == 1
    assert celery_broker("redis://redis:6379/0").broker_url == "redis://redis:6379/0"


def test_shown_urls_never_carry_a_password() -> None:
    url = "rediss://user:secret-pw@redis:6380/0?ssl_ca_certs=/etc/ca.crt&password=secret-pw"
    assert display_url(url) == "rediss://redis:6380/0"
    assert "secret-pw" not in redact(url)
    assert redact(url) == "rediss://***@redis:6380/0?ssl_ca_certs=/etc/ca.crt"
    assert redact("redis://redis:6379/0?password=secret-pw&db=2") == "redis://redis:6379/0?db=2"
