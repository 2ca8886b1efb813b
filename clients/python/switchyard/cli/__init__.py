"""``switchyard``: the command line for a Switchyard scheduler.

    switchyard [--scheduler HOST:PORT[,HOST:PORT...]] [--failover-timeout S] [--json]
               [--tls-ca FILE [--tls-cert FILE --tls-key FILE]] [--token-file FILE] COMMAND ...

Commands: submit, explain, get, watch, cancel, tasks, queues, workers, pause, resume, drain,
dead-letters, retry-dead-letter, purge-dead-letters, submit-batch, undrain, unquarantine, top.
``--json`` prints machine-readable JSON (one object per line for ``watch``). Failures print
``error: <CODE>: <message>`` on stderr; the exit status says what kind of failure it was, the
same for every command (:mod:`switchyard.cli.exits`: 0 ok, 1 refused or the task did not
succeed, 2 bad usage -- before any network call --, 3 unreachable, 4 timed out, 130 interrupted).
With several schedulers the leader is found and followed; a call, ``watch`` or ``submit --wait``
that loses the scheduler retries for up to ``--failover-timeout`` seconds and says so on stderr
(``switchyard: lost the scheduler at ...; reconnecting...``, ``switchyard: reconnected to ...``).
A scheduler with TLS and tokens (docs/security.md) takes ``--tls-ca`` (and ``--tls-cert``/
``--tls-key`` for mTLS) and ``--token-file``, or the ``SWITCHYARD_TLS_*``, ``SWITCHYARD_TOKEN``
and ``SWITCHYARD_TOKEN_FILE`` variables; a TLS file or token that cannot be used exits 2.

The grammar is in :mod:`switchyard.cli.parser`, what each command does in
:mod:`switchyard.cli.commands`, and what it prints in :mod:`switchyard.cli.render`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from switchyard.cli.commands import COMMANDS
from switchyard.cli.exits import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from switchyard.cli.parser import build_parser, usage_problem
from switchyard.client import SchedulerClient
from switchyard.exceptions import DeadlineExceeded, SwitchyardError, Unauthenticated, Unavailable
from switchyard.security import CredentialError
from switchyard.wire import TOKEN_ENV

__all__ = ["main"]


class _StderrHandler(logging.Handler):
    """Client log records as ``switchyard: <message>`` lines on whatever ``sys.stderr`` is now
    (a handler that kept the stream it started with would miss a redirected stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"switchyard: {self.format(record)}", file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def _report_reconnects() -> None:
    """Show the client's reconnect messages (info and up) on stderr; once per process."""
    logger = logging.getLogger("switchyard.client")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        logger.addHandler(_StderrHandler(logging.INFO))
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``switchyard`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 after --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    problem = usage_problem(options)
    if problem is not None:
        try:
            options.usage_error(problem)  # prints the sub-command's usage and the problem
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _report_reconnects()
    try:
        client = SchedulerClient(
            options.scheduler, failover_timeout=options.failover_timeout, tls=options.tls or None,
            tls_ca=options.tls_ca, tls_cert=options.tls_cert, tls_key=options.tls_key,
            tls_server_name=options.tls_server_name, token_file=options.token_file,
        )
    except CredentialError as exc:  # a TLS file or token that cannot be used: before any call
        print(f"switchyard: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            return COMMANDS[options.command](client, options, sys.stdout)
    except Unavailable as exc:
        print(f"error: {exc.code}: {exc.message} (is switchyard-scheduler listening on {options.scheduler}?)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except DeadlineExceeded as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_TIMEOUT
    except Unauthenticated as exc:
        print(f"error: {exc.code}: {exc.message} (give a token with --token-file FILE or {TOKEN_ENV})", file=sys.stderr)
        return EXIT_FAILURE
    except SwitchyardError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `switchyard queues | head`: the reader is gone, nothing left to say
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
