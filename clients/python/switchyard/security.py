"""How the client, the CLI and the agent prove who they are to a scheduler: TLS and bearer tokens.

One place builds both, so the Python client (:mod:`switchyard._connection`) and the agent
(``worker_agent.stream``) read the same settings the same way (docs/security.md):

* **TLS** (:class:`TlsSettings`): ``tls_ca`` is the PEM bundle the scheduler's certificate must
  chain to (without it the system's trusted roots are used); ``tls_cert`` and ``tls_key`` are
  the caller's own certificate for a scheduler that requires client certificates (mTLS);
  ``tls_server_name`` is the name the scheduler's certificate must carry when it differs from
  the host dialled (a certificate for ``scheduler.internal`` reached by pod IP, say).
* **Tokens** (:class:`TokenSource`): sent on every call as ``authorization: Bearer <token>``
  request metadata (:data:`switchyard.wire.AUTHORIZATION_METADATA_KEY`). A token read from a file
  is read again when the file changes, so a rotated token (a Kubernetes Secret updated in
  place) is used from the next call on, without a restart.

Where nothing is given in code or on a command line, the environment is read:
``SWITCHYARD_TOKEN`` (the token itself), ``SWITCHYARD_TOKEN_FILE``, ``SWITCHYARD_TLS_CA``,
``SWITCHYARD_TLS_CERT``, ``SWITCHYARD_TLS_KEY`` and ``SWITCHYARD_TLS_SERVER_NAME``.

A token never appears in a log line, an error message or a ``repr``: messages name the file or
the variable it came from instead.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from switchyard.exceptions import InvalidArgument
from switchyard.wire import AUTHORIZATION_METADATA_KEY, BEARER_PREFIX, TOKEN_ENV, TOKEN_FILE_ENV

__all__ = [
    "TLS_CA_ENV",
    "TLS_CERT_ENV",
    "TLS_KEY_ENV",
    "TLS_SERVER_NAME_ENV",
    "BearerTokenInterceptor",
    "CredentialError",
    "TlsSettings",
    "TokenSource",
    "is_loopback_address",
    "open_channel",
    "resolve_tls",
    "resolve_token",
]

TLS_CA_ENV = "SWITCHYARD_TLS_CA"
"""PEM file of the CA(s) the scheduler's certificate must chain to."""
TLS_CERT_ENV = "SWITCHYARD_TLS_CERT"
"""PEM file of the caller's own certificate (mTLS)."""
TLS_KEY_ENV = "SWITCHYARD_TLS_KEY"
"""PEM file of the private key of that certificate."""
TLS_SERVER_NAME_ENV = "SWITCHYARD_TLS_SERVER_NAME"
"""The name the scheduler's certificate must carry, when it is not the host dialled."""

log = logging.getLogger("switchyard.client")

# A header value may hold visible ASCII only; a token is one "word" of it (RFC 6750's b64token
# and then some: any visible character but a space).
_TOKEN_CHARACTERS = frozenset(chr(code) for code in range(0x21, 0x7F))


class CredentialError(InvalidArgument):
    """A TLS file or token that cannot be used (missing, unreadable, empty, malformed). The
    message names the file or variable and what to do; it never contains the token."""


# --- tokens ------------------------------------------------------------------------------------


def _token_problem(token: str) -> str | None:
    if not token:
        return "is empty"
    if any(character not in _TOKEN_CHARACTERS for character in token):
        return ("holds a space, a line break or a character outside visible ASCII; "
                "it must hold the token alone")
    return None


class _FileStamp(NamedTuple):
    inode: int
    size: int
    modified_ns: int


class TokenSource:
    """The caller's bearer token: given as it is, or read from a file and read again whenever
    the file changes (checked on every call: a ``stat``, nothing more).

    A file that cannot be read after it has been once (replaced mid-rotation, say) leaves the
    last token in use and logs one warning; it is read again on the next call.
    """

    def __init__(self, token: str | None = None, *, path: str | os.PathLike[str] | None = None,
                 origin: str = "the token") -> None:
        if (token is None) == (path is None):
            raise ValueError("give a token or a file path (exactly one)")
        self.path = Path(path) if path is not None else None
        """The file the token is read from; None for a token given as it is."""
        self.origin = f"token file {self.path}" if self.path is not None else origin
        """Where the token came from, for messages (never the token itself)."""
        self._lock = threading.Lock()
        self._stamp: _FileStamp | None = None
        self._warned = False
        if token is not None:
            self._token = token.strip()
            problem = _token_problem(self._token)
            if problem is not None:
                raise CredentialError(f"{origin} {problem}")
        else:
            self._token = ""
            self._reload(initial=True)

    def __repr__(self) -> str:
        return f"TokenSource({self.origin})"

    def current(self) -> str:
        """The token to send now (a changed file is read first)."""
        if self.path is not None:
            with self._lock:
                self._reload(initial=False)
        return self._token

    def metadata(self) -> tuple[tuple[str, str]]:
        """The request metadata that carries the token."""
        return ((AUTHORIZATION_METADATA_KEY, BEARER_PREFIX + self.current()),)

    def _reload(self, *, initial: bool) -> None:
        assert self.path is not None
        try:
            status = self.path.stat()
            stamp = _FileStamp(status.st_ino, status.st_size, status.st_mtime_ns)
            if stamp == self._stamp:
                return
            token = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            if initial:
                raise CredentialError(f"cannot read token file {self.path}: {reason}") from None
            self._warn_once(f"cannot read token file {self.path} ({reason}); still using the token read before")
            return
        problem = _token_problem(token)
        if problem is not None:
            if initial:
                raise CredentialError(f"token file {self.path} {problem}")
            self._warn_once(f"token file {self.path} {problem}; still using the token read before")
            return
        if not initial and token != self._token:
            log.info("token file %s changed: using the new token from now on", self.path)
        self._token, self._stamp, self._warned = token, stamp, False

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s", message)


def resolve_token(
    token: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TokenSource | None:
    """The token to send: ``token``, else ``token_file``, else ``SWITCHYARD_TOKEN``, else the
    file ``SWITCHYARD_TOKEN_FILE`` names; None when there is none (no ``authorization`` sent).

    Giving both ``token`` and ``token_file`` is an error. CredentialError says what is wrong
    with a file or value, without showing the token.
    """
    if token is not None and token_file is not None:
        raise CredentialError("give a token or a token file, not both")
    if token is not None:
        return TokenSource(token, origin="the token given")
    if token_file is not None:
        return TokenSource(path=token_file)
    environ = os.environ if environ is None else environ
    if environ.get(TOKEN_ENV):
        return TokenSource(environ[TOKEN_ENV], origin=f"${TOKEN_ENV}")
    if environ.get(TOKEN_FILE_ENV):
        return TokenSource(path=environ[TOKEN_FILE_ENV])
    return None


# --- TLS ---------------------------------------------------------------------------------------


def _read_pem(path: Path, what: str, marker: str) -> bytes:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise CredentialError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if marker.encode() not in content:
        raise CredentialError(f"the {what} {path} holds no PEM {marker.strip('-').strip()} "
                              f"(expected a '-----BEGIN ...{marker}' block)")
    return content


@dataclass(frozen=True)
class TlsSettings:
    """Where the TLS files are; :meth:`credentials` reads them (again on every call, so a
    channel opened after a certificate was renewed uses the new one)."""

    ca_file: Path | None = None
    """PEM CA bundle the scheduler's certificate must chain to; None: the system's roots."""
    cert_file: Path | None = None
    """The caller's certificate chain (PEM), for mTLS; always with `key_file`."""
    key_file: Path | None = None
    """The private key (PEM) of `cert_file`."""
    server_name: str | None = None
    """The name to check the scheduler's certificate against instead of the host dialled."""

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials from the files as they are now; CredentialError when one
        cannot be read or holds no PEM block of the right kind."""
        root = _read_pem(self.ca_file, "TLS CA file", "CERTIFICATE-----") if self.ca_file else None
        certificate = _read_pem(self.cert_file, "TLS certificate", "CERTIFICATE-----") if self.cert_file else None
        key = _read_pem(self.key_file, "TLS key", "PRIVATE KEY-----") if self.key_file else None
        return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=certificate)

    def channel_options(self) -> list[tuple[str, Any]]:
        """Channel options TLS needs (the server name override, when one is set)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def resolve_tls(
    *,
    tls: bool | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    server_name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> TlsSettings | None:
    """The TLS settings to dial with, or None for plaintext.

    TLS is on when ``tls`` is True (with the system's roots unless ``ca_file`` says otherwise)
    or any file is given; ``tls=False`` turns it off whatever else says. With none of them
    given (all None) the ``SWITCHYARD_TLS_*`` variables are read the same way. The files are
    read once here, so a missing or malformed one is reported at once (CredentialError).
    """
    if tls is False:
        return None
    if ca_file is None and cert_file is None and key_file is None and server_name is None:
        environ = os.environ if environ is None else environ
        ca_file = environ.get(TLS_CA_ENV) or None
        cert_file = environ.get(TLS_CERT_ENV) or None
        key_file = environ.get(TLS_KEY_ENV) or None
        server_name = environ.get(TLS_SERVER_NAME_ENV) or None
    if not tls and ca_file is None and cert_file is None and key_file is None:
        if server_name is not None:
            raise CredentialError("a TLS server name was given without TLS: add a TLS CA file (or turn TLS on)")
        return None
    if (cert_file is None) != (key_file is None):
        given, missing = ("certificate", "key") if key_file is None else ("key", "certificate")
        raise CredentialError(f"a TLS client {given} was given without its {missing}: mTLS needs both "
                              "(--tls-cert FILE --tls-key FILE)")
    settings = TlsSettings(
        ca_file=Path(ca_file) if ca_file is not None else None,
        cert_file=Path(cert_file) if cert_file is not None else None,
        key_file=Path(key_file) if key_file is not None else None,
        server_name=server_name or None,
    )
    settings.credentials()  # fail now, not at the first call
    return settings


# --- channels ----------------------------------------------------------------------------------


class _BearerTokenPlugin(grpc.AuthMetadataPlugin):
    """Call credentials: gRPC asks for the metadata before every call on a TLS channel."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        try:
            metadata = self._source.metadata()
        except Exception as exc:  # an error here would otherwise vanish inside gRPC's thread
            callback((), exc)
            return
        callback(metadata, None)


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


# The stubs make these generic; at run time they are plain classes and cannot be subscripted.
class BearerTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds the token to every call of a plaintext channel, where gRPC refuses call credentials:
    a scheduler on loopback, or behind a mesh that adds TLS on the way."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), *self._source.metadata()]
        return _CallDetails(  # type: ignore[return-value]  # any object with these fields will do
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                               request: Any) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                               request_iterator: Any) -> Any:
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails,
                                request_iterator: Any) -> Any:
        return continuation(self._with_token(client_call_details), request_iterator)


def is_loopback_address(address: str) -> bool:
    """True when ``address`` (HOST:PORT, or a gRPC target) is on this machine: a token sent
    there in clear never crosses a network."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.removeprefix("dns:").removeprefix("ipv4:").removeprefix("ipv6:").lstrip("/")
    host = host.rpartition(":")[0] if ":" in host and not host.endswith("]") else host
    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_warned_plaintext: set[str] = set()
_warned_lock = threading.Lock()


def warn_plaintext_token(address: str, source: TokenSource, logger: logging.Logger = log) -> None:
    """Warn (once per address and process) that a token goes to a non-loopback ``address``
    without TLS, where anyone on the path can read it."""
    if is_loopback_address(address):
        return
    with _warned_lock:
        if address in _warned_plaintext:
            return
        _warned_plaintext.add(address)
    logger.warning("sending %s to %s without TLS: anyone on the network path can read it; give a TLS CA "
                   "(--tls-ca / SWITCHYARD_TLS_CA) unless a mesh encrypts the connection", source.origin, address)


def open_channel(
    address: str,
    options: list[tuple[str, Any]],
    tls: TlsSettings | None = None,
    token: TokenSource | None = None,
    *,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.Channel:
    """A synchronous channel to ``address``: TLS when ``tls`` is set (``credentials``, when
    given, are its already-read files), the token on every call when ``token`` is set."""
    if tls is not None:
        channel_credentials = credentials or tls.credentials()
        if token is not None:
            call_credentials = grpc.metadata_call_credentials(_BearerTokenPlugin(token), name="switchyard-token")
            channel_credentials = grpc.composite_channel_credentials(channel_credentials, call_credentials)
        return grpc.secure_channel(address, channel_credentials, options=[*options, *tls.channel_options()])
    channel = grpc.insecure_channel(address, options=options)
    if token is None:
        return channel
    warn_plaintext_token(address, token)
    return grpc.intercept_channel(channel, BearerTokenInterceptor(token))
