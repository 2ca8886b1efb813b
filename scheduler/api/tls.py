"""TLS for the scheduler's listeners, with certificates re-read when their files change.

`ServingCertificate` owns the PEM files given by `--tls-cert`, `--tls-key` and (for mTLS)
`--tls-client-ca`. It hands out

* `grpc_credentials()`: server credentials for the gRPC port, built with gRPC's dynamic SSL
  credentials: gRPC asks for the current certificate at each new TLS handshake, and this class
  answers with fresh material when any of the files changed since the last handshake (a `stat`,
  following symlinks, so Kubernetes' secret volumes, which swap a symlink, are seen);
* `ssl_context()`: the same certificate as a Python `ssl.SSLContext` for the HTTP listener
  (`/metrics` and the JSON API), rebuilt on the same change. It asks no client certificate:
  Prometheus scrapes and probes reach that listener without one.

A rotation takes effect for new connections; those already open keep the certificate they
shook hands with. Files that change one at a time (the certificate written before its key) can
be inconsistent for a moment: material that does not load (a key that does not match the
certificate, a half-written PEM) is skipped with one warning and the last good one stays in use
until the files are consistent again. At start-up the same problems are a ConfigError instead.
Client certificates are checked against the CA bundle only: there are no revocation lists, so a
certificate is revoked by rotating the CA (or, for agents, by revoking their token).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass

import grpc

from scheduler.config.errors import ConfigError

log = logging.getLogger("switchyard.scheduler.api.tls")

FileStamp = tuple[tuple[int, int, int, int], ...]
"""What identifies the current content of the files: (device, inode, size, mtime in ns) each."""


@dataclass(frozen=True)
class _Material:
    """One consistent reading of the files."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None


def file_stamp(paths: tuple[str, ...]) -> FileStamp:
    """The identity of the files' current content; OSError when one cannot be read."""
    stamps = []
    for path in paths:
        info = os.stat(path)  # follows symlinks: a swapped Kubernetes secret shows as a new inode
        stamps.append((info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


class ServingCertificate:
    """The scheduler's certificate, key and optional client CA, re-read when they change."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self._lock = threading.Lock()  # gRPC calls the fetcher on its own threads; HTTP on others
        try:
            self._stamp = file_stamp(self._paths)
            self._material = self._read()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(self._problem(exc)) from None
        self._context = self._new_context(self._material)
        self._refused: FileStamp | None = None
        self._served_to_grpc = self._stamp

    @property
    def client_certificates_required(self) -> bool:
        """Whether gRPC callers must present a certificate from the client CA (mTLS)."""
        return bool(self.client_ca_file)

    @property
    def _paths(self) -> tuple[str, ...]:
        return (self.cert_file, self.key_file) + ((self.client_ca_file,) if self.client_ca_file else ())

    def _problem(self, exc: BaseException) -> str:
        """One line naming the files and what is wrong with them (never their content)."""
        what = f"--tls-cert {self.cert_file} / --tls-key {self.key_file}"
        if self.client_ca_file:
            what += f" / --tls-client-ca {self.client_ca_file}"
        if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):  # SSLError is an OSError
            return f"cannot read {exc.filename or what}: {exc.strerror or exc}"
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            return f"--tls-key {self.key_file} is not the private key of --tls-cert {self.cert_file}"
        reason = str(exc.args[-1] if isinstance(exc, ssl.SSLError) and exc.args else exc) or type(exc).__name__
        return (f"the TLS files {what} do not load ({reason}): the certificate must be PEM, the key its "
                "unencrypted PEM private key, the client CA a PEM bundle")

    def _read(self) -> _Material:
        """Read and check the files: the key must match the certificate, the CA must parse."""
        with open(self.cert_file, "rb") as cert, open(self.key_file, "rb") as key:
            material = _Material(cert.read(), key.read(), None)
        if self.client_ca_file:
            with open(self.client_ca_file, "rb") as ca:
                material = _Material(material.cert_chain, material.private_key, ca.read())
        self._new_context(material)  # raises ssl.SSLError when they do not fit together
        return material

    def _new_context(self, material: _Material) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # load_cert_chain takes files only: the files just read (a change since is seen next time).
        context.load_cert_chain(self.cert_file, self.key_file)
        if material.client_ca is not None:
            context.load_verify_locations(cadata=material.client_ca.decode("ascii", "replace"))
        return context

    def refresh(self) -> bool:
        """Re-read the files if they changed since the last look; True when new material is in use."""
        with self._lock:
            try:
                stamp = file_stamp(self._paths)
            except OSError as exc:
                stamp = ()  # unreadable: warned about once, like a bad pair
                problem = self._problem(exc)
            else:
                if stamp == self._stamp or stamp == self._refused:
                    return False
                try:
                    material = self._read()
                    context = self._new_context(material)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    problem = self._problem(exc)
                else:
                    self._stamp, self._material, self._context, self._refused = stamp, material, context, None
                    log.info("TLS certificate files changed: new connections use the new certificate")
                    return True
            if stamp != self._refused:
                log.warning("%s; still serving the previous certificate until they are fixed", problem)
            self._refused = stamp
            return False

    # --- gRPC -----------------------------------------------------------------------------------

    def _grpc_configuration(self, material: _Material) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(material.private_key, material.cert_chain)], root_certificates=material.client_ca)

    def _fetch_for_grpc(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's hook, called at every new handshake: the new configuration, or None for no change."""
        try:
            self.refresh()
            with self._lock:
                if self._served_to_grpc == self._stamp:
                    return None
                self._served_to_grpc = self._stamp
                return self._grpc_configuration(self._material)
        except Exception:  # an exception here would fail the handshake with no word why
            log.exception("could not re-read the TLS certificate files; keeping the current certificate")
            return None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for the gRPC port: TLS, client certificates required when a client CA is set."""
        with self._lock:
            initial = self._grpc_configuration(self._material)
        return grpc.dynamic_ssl_server_credentials(
            initial, self._fetch_for_grpc,  # type: ignore[arg-type]  # None means "no change" (grpc's docs)
            require_client_authentication=self.client_certificates_required)

    # --- HTTP -------------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """The current context for the HTTP listener (server certificate only; no client certificate asked)."""
        self.refresh()
        with self._lock:
            return self._context  # verify_mode stays CERT_NONE: no client certificate is asked
