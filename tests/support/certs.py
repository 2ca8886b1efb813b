"""Throw-away X.509 certificates for TLS and mTLS tests, made with the `openssl` CLI.

A test makes one certificate authority and signs what it needs with it::

    ca = make_ca(tmp_path)                       # (cert_path, key_path)
    server_cert, server_key = make_cert(tmp_path, ca, "scheduler")   # 127.0.0.1 + localhost
    agent_cert, agent_key = make_cert(tmp_path, ca, "gpu-1", client=True)  # CN=gpu-1

The `openssl` command line is used rather than the `cryptography` package because it is on
every machine that runs the suite (redis-server and grpcio link the same library) and adds no
Python dependency. Keys are EC P-256: generating one takes milliseconds, so every test may make
its own authority. Nothing here is fit for production: keys are written unencrypted.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

# Loopback names every server certificate answers to unless a test asks for others.
DEFAULT_SERVER_HOSTS = ("127.0.0.1", "localhost")
# Long enough for any test run, short enough that a leaked test key is worthless.
VALID_DAYS = 2


class CertificateAuthority(NamedTuple):
    """A test CA: the PEM certificate clients trust and the key that signs leaf certificates."""

    cert_path: Path
    key_path: Path


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is not on PATH; install it (apt-get install openssl)")
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _new_key(key_path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key_path))
    key_path.chmod(0o600)


def make_ca(directory: Path | str, name: str = "switchyard-test-ca") -> CertificateAuthority:
    """Create a self-signed CA in `directory`; returns (ca_cert_path, ca_key_path).

    Two calls with different `name`s give two unrelated authorities (for wrong-CA tests).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    _new_key(key_path)
    _openssl(
        "req", "-x509", "-new", "-key", str(key_path), "-out", str(cert_path),
        "-days", str(VALID_DAYS), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    return CertificateAuthority(cert_path, key_path)


def _subject_alt_names(hosts: tuple[str, ...] | list[str]) -> str:
    entries = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            entries.append(f"DNS:{host}")
        else:
            entries.append(f"IP:{host}")
    return ",".join(entries)


def make_cert(
    directory: Path | str,
    ca: CertificateAuthority | tuple[Path, Path],
    name: str,
    *,
    hosts: tuple[str, ...] | list[str] = (),
    client: bool = False,
) -> tuple[Path, Path]:
    """Sign a leaf certificate with subject CN=`name`; returns (cert_path, key_path).

    A server certificate (`client=False`) is valid for `hosts`, by default 127.0.0.1 and
    localhost, and for both server and client authentication, since redis-server presents its
    own certificate when it dials a peer. A client certificate (`client=True`) is valid for
    client authentication only; its CN is the identity an mTLS server reads (an agent's worker
    id). Writing the same `name` twice replaces the files, which is how rotation tests re-issue.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = ca
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    csr_path = directory / f"{name}.csr"
    extensions_path = directory / f"{name}.ext"
    _new_key(key_path)
    _openssl("req", "-new", "-key", str(key_path), "-out", str(csr_path), "-subj", f"/CN={name}")
    extensions = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    if client:
        extensions.append("extendedKeyUsage=clientAuth")
        if hosts:
            extensions.append(f"subjectAltName={_subject_alt_names(hosts)}")
    else:
        extensions.append("extendedKeyUsage=serverAuth,clientAuth")
        extensions.append(f"subjectAltName={_subject_alt_names(hosts or DEFAULT_SERVER_HOSTS)}")
    extensions_path.write_text("\n".join(extensions) + "\n")
    _openssl(
        "x509", "-req", "-in", str(csr_path), "-CA", str(ca_cert_path), "-CAkey", str(ca_key_path),
        "-CAcreateserial", "-out", str(cert_path), "-days", str(VALID_DAYS),
        "-extfile", str(extensions_path), "-sha256",
    )
    csr_path.unlink()
    extensions_path.unlink()
    return cert_path, key_path
