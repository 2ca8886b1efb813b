"""A throw-away `redis-server` that speaks TLS only, with a password, for tests of `rediss://`.

It listens on a TLS port alone (`--port 0` turns the plain port off), presents a certificate
from a test CA (tests/support/certs.py) and, by default, requires clients to present one too
(`--tls-auth-clients yes`) and to log in with a password: the hardened set-up of
docs/security.md. `url` is the `rediss://` URL that reaches it with all of that.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import quote

import redis

from tests.support.certs import CertificateAuthority, make_ca, make_cert
from tests.support.redis_server import RedisServer
from tests.support.secret_logs import register

DEFAULT_PASSWORD = register("sy-redis-pw-5e1b")


def redis_supports_tls(binary: str = "redis-server") -> bool:
    """Whether this redis-server was built with TLS. Either way it exits at once: a build without
    TLS does not know `--tls-port` ("Bad directive"), one with TLS cannot load the missing files
    ("Failed to configure TLS")."""
    try:
        result = subprocess.run(
            [binary, "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent",
             "--tls-key-file", "/nonexistent", "--logfile", ""],
            capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Failed to configure TLS" in result.stdout + result.stderr


class TlsRedisServer(RedisServer):
    """One redis-server on 127.0.0.1:<port> over TLS, with a password and client certificates."""

    def __init__(self, cert_dir: Path, *, password: str = DEFAULT_PASSWORD, client_certs: bool = True) -> None:
        super().__init__(appendonly=False)
        self.password = password
        self.client_certs = client_certs
        self.ca: CertificateAuthority = make_ca(cert_dir, name="redis-ca")
        self.server_cert = make_cert(cert_dir, self.ca, "redis-server")
        self.client_cert = make_cert(cert_dir, self.ca, "redis-client", client=True)

    @property
    def url(self) -> str:
        return self.url_with()

    def url_with(self, *, ca: Path | None = None, client_cert: bool | None = None, password: str | None = None) -> str:
        """The `rediss://` URL, with another CA, without the client certificate or with another
        password when a test asks (to see each refused)."""
        login = quote(self.password if password is None else password, safe="")
        options = f"ssl_cert_reqs=required&ssl_ca_certs={ca or self.ca.cert_path}"
        if self.client_certs if client_cert is None else client_cert:
            cert_path, key_path = self.client_cert
            options += f"&ssl_certfile={cert_path}&ssl_keyfile={key_path}"
        return f"rediss://:{login}@127.0.0.1:{self.port}/0?{options}"

    def start(self) -> TlsRedisServer:
        cert_path, key_path = self.server_cert
        args = [
            self.binary,
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(cert_path),
            "--tls-key-file", str(key_path),
            "--tls-ca-cert-file", str(self.ca.cert_path),
            "--tls-auth-clients", "yes" if self.client_certs else "no",
            "--requirepass", self.password,
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)
