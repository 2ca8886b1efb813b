"""The ``switchyard`` command line's grammar: argument types, the task options, the sub-commands.

Everything argparse can check is checked while parsing, and :func:`usage_problem` checks the
rest, so bad usage exits 2 before any network call. The task options are defined once, in
:data:`TASK_FLAGS`, and attached to every command that describes a task (``submit``, ``explain``).
Every ``--help`` shows each option's default (:class:`DefaultsHelpFormatter`). ``--args`` and
``--kwargs`` take JSON, or ``@FILE`` to read it from a file (``@-``: stdin).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from switchyard._connection import DEFAULT_FAILOVER_TIMEOUT, DEFAULT_TARGET, parse_addresses
from switchyard._options import GPU_REQUIREMENTS
from switchyard.cli.batch import DEFAULT_CHUNK_SIZE, batch_file
from switchyard.cli.exits import EXIT_STATUS_HELP
from switchyard.cli.top import DEFAULT_INTERVAL
from switchyard.client import TASK_STATES
from switchyard.exceptions import InvalidArgument
from switchyard.security import TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV, TLS_SERVER_NAME_ENV
from switchyard.wire import TOKEN_ENV, TOKEN_FILE_ENV

__all__ = ["TASK_FLAGS", "DefaultsHelpFormatter", "build_parser", "task_arguments", "usage_problem"]

DRAIN_POLL_SECONDS = 0.5
"""How often ``drain --wait`` looks at the worker (default of ``--interval``)."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default: ``(default: X)`` is added to each option whose
    help does not mention its default already; an option that is unset unless given shows
    ``(default: not set)``. On/off flags and positionals are left as they are."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default is argparse.SUPPRESS
            or action.nargs == 0  # store_true/store_false/help: off unless given
        ):
            return text
        default = action.default
        if default is None or default == "" or default == [] or default == {}:
            shown = "not set"
        elif isinstance(default, list | tuple):
            shown = ",".join(str(item) for item in default)
        else:
            shown = str(default)
        # argparse %-formats help strings: a literal % must be doubled.
        return f"{text} (default: {shown.replace('%', '%%')})"


# --- argument types: reject bad input while parsing, before any network call -------------


def _json_of(kind: type, name: str, example: str, text: str) -> Any:
    where = ""
    if text.startswith("@"):
        path, where = text[1:], f" in {text[1:] or '(no file named)'}"
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise argparse.ArgumentTypeError(f"cannot read {path or '(no file named)'}: {reason}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        shown = "" if where else f": {text!r}"
        raise argparse.ArgumentTypeError(f"not valid JSON{where} ({exc}){shown}") from exc
    if not isinstance(value, kind):
        got = f"a JSON {type(value).__name__}{where}" if where else repr(text)
        raise argparse.ArgumentTypeError(f"must be a JSON {name}, e.g. '{example}'; got {got}")
    return value


def json_array(text: str) -> list[Any]:
    """``--args``: a JSON array, or ``@FILE`` holding one (``@-``: stdin)."""
    return cast(list[Any], _json_of(list, "array", '[1, "a"]', text))


def json_object(text: str) -> dict[str, Any]:
    """``--kwargs``: a JSON object, or ``@FILE`` holding one (``@-``: stdin)."""
    return cast(dict[str, Any], _json_of(dict, "object", '{"path": "a.mp3"}', text))


def label(text: str) -> tuple[str, str]:
    """``--label k=v``: one required worker label."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE; got {text!r}")
    return key, value.strip()


def priority(text: str) -> int:
    """``--priority``: 0 (scheduler decides) or 1-10."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be an integer 0-10; got {text!r}") from exc
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"must be 0 (scheduler decides) or 1-10; got {value}")
    return value


def _int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    """An argparse type for integers >= ``minimum``; errors say ``must be <wording>``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"must be {wording}; got {text!r}") from exc
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}; got {value}")
        return value

    return parse


non_negative_int = _int_at_least(0, "a non-negative integer")
"""A count such as ``--gpu-memory-mb``."""
positive_int = _int_at_least(1, "a positive integer")
"""A count that must be at least 1, such as ``--limit``."""


def positive_float(text: str) -> float:
    """A duration such as ``--timeout``."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a number of seconds; got {text!r}") from exc
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0; got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A duration that may be 0, such as ``--failover-timeout``."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a number of seconds; got {text!r}") from exc
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0; got {value}")
    return value


def scheduler_addresses(text: str) -> str:
    """``--scheduler``: ``HOST:PORT`` or several, comma-separated; kept as the text given."""
    try:
        parse_addresses(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc
    return text


# --- the task options -------------------------------------------------------------------------


def _unchanged(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class TaskFlag:
    """One command-line flag that fills one :class:`~switchyard._options.TaskOptions` field."""

    flag: str
    """The flag, e.g. ``--gpu-memory-mb``; argparse stores it under ``gpu_memory_mb``."""
    option: str
    """The ``TaskOptions`` field (and ``submit``/``explain`` keyword) it fills."""
    settings: dict[str, Any]
    """``add_argument`` keywords; each has an explicit ``default`` (the flag's "not given")."""
    to_option: Callable[[Any], Any] = field(default=_unchanged)
    """Turns the parsed value into the field's value (repeatable ``KEY=VALUE`` pairs → a dict)."""

    @property
    def dest(self) -> str:
        """The attribute argparse stores the flag's value under."""
        return self.flag.removeprefix("--").replace("-", "_")


TASK_FLAGS: tuple[TaskFlag, ...] = (
    TaskFlag("--args", "args", {"type": json_array, "default": [], "metavar": "JSON|@FILE", "help": "positional arguments, a JSON array (default: none)"}),
    TaskFlag("--kwargs", "kwargs", {"type": json_object, "default": {}, "metavar": "JSON|@FILE", "help": "keyword arguments, a JSON object (default: none)"}),
    TaskFlag("--content-type", "content_type", {"default": "", "metavar": "T", "help": "audio, video, image, document, web, text, youtube, ... (default: none; rules or --gpu decide)"}),
    TaskFlag("--gpu", "gpu", {"choices": GPU_REQUIREMENTS, "default": "unspecified", "help": "GPU need (default: unspecified, classification decides)"}),
    TaskFlag("--gpu-memory-mb", "gpu_memory_mb", {"type": non_negative_int, "default": 0, "metavar": "N", "help": "GPU memory needed on one device, MiB (default: 0, no stated need)"}),
    TaskFlag("--priority", "priority", {"type": priority, "default": 0, "metavar": "N", "help": "1 (lowest) to 10 (default: 0, the scheduler decides)"}),
    TaskFlag("--queue", "queue", {"default": "", "metavar": "Q", "help": "logical queue override (default: classification chooses)"}),
    TaskFlag("--idempotency-key", "idempotency_key", {"default": "", "metavar": "K", "help": "same key returns the original task (default: one made up per submission)"}),
    TaskFlag(
        "--label", "labels",
        {"type": label, "action": "append", "default": [], "metavar": "KEY=VALUE", "help": "worker label the task requires (repeatable; default: none)"},
        dict,
    ),
    TaskFlag(
        "--prefer-label", "preferred_labels",
        {
            "type": label, "action": "append", "default": [], "metavar": "KEY=VALUE",
            "help": "worker label the task prefers: such workers score higher, any capable worker may run it (repeatable; default: none)",
        },
        dict,
    ),
    TaskFlag("--user-initiated", "user_initiated", {"action": "store_true", "default": False, "help": "a person waits for this task (raises priority)"}),
    TaskFlag("--retry-policy", "retry_policy", {"default": "", "metavar": "NAME", "help": "named retry policy of the scheduler's configuration (default: the queue's)"}),
    TaskFlag("--soft-time-limit", "soft_time_limit", {"type": positive_float, "default": None, "metavar": "S", "help": "soft time limit, seconds (default: the queue's)"}),
    TaskFlag("--hard-time-limit", "hard_time_limit", {"type": positive_float, "default": None, "metavar": "S", "help": "hard time limit, seconds (default: the queue's)"}),
    TaskFlag("--batch-size", "batch_size", {"type": non_negative_int, "default": 0, "metavar": "N", "help": "size of the batch the task belongs to (> 10 lowers priority)"}),
    TaskFlag(
        "--allow-unschedulable", "allow_unschedulable",
        {
            "action": "store_true", "default": False,
            "help": "accept the task even if no known worker could ever run it (a worker that can is expected to join)",
        },
    ),
)
"""The options that describe a task, shared by ``submit`` and ``explain``, in ``--help`` order."""


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    for task_flag in TASK_FLAGS:
        parser.add_argument(task_flag.flag, **task_flag.settings)


def task_arguments(options: argparse.Namespace) -> dict[str, Any]:
    """The parsed task options as ``TaskOptions`` fields by name: ``submit``'s and ``explain``'s
    keyword arguments (``args`` and ``kwargs`` included)."""
    return {flag.option: flag.to_option(getattr(options, flag.dest)) for flag in TASK_FLAGS}


def _given_task_flags(options: argparse.Namespace) -> list[str]:
    return [flag.flag for flag in TASK_FLAGS if getattr(options, flag.dest) != flag.settings["default"]]


# --- parser ---------------------------------------------------------------------------------


def _add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    # Sub-commands repeat the global options with SUPPRESS defaults, so `switchyard queues --json`
    # works as well as `switchyard --json queues` without one overwriting the other.
    default_scheduler: Any = argparse.SUPPRESS if in_subcommand else os.environ.get("SWITCHYARD_SCHEDULER", DEFAULT_TARGET)
    default_json: Any = argparse.SUPPRESS if in_subcommand else False
    default_failover: Any = argparse.SUPPRESS if in_subcommand else DEFAULT_FAILOVER_TIMEOUT
    parser.add_argument(
        "--scheduler",
        type=scheduler_addresses,
        metavar="HOST:PORT[,HOST:PORT...]",
        default=default_scheduler,
        help=(
            "scheduler address, or several schedulers sharing one Redis (the leader is found and "
            f"followed) (env SWITCHYARD_SCHEDULER, default {DEFAULT_TARGET})"
        ),
    )
    parser.add_argument(
        "--failover-timeout",
        type=non_negative_float,
        metavar="S",
        default=default_failover,
        help=(
            "how long to keep retrying and reconnecting when the scheduler is unavailable "
            f"(restart, failover); 0 tries each address once (default {DEFAULT_FAILOVER_TIMEOUT:g})"
        ),
    )
    parser.add_argument("--json", action="store_true", default=default_json, help="print JSON instead of text")
    _add_security_options(parser, in_subcommand=in_subcommand)


def _add_security_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """TLS and the token (docs/security.md). Unset flags fall back to the SWITCHYARD_* variables,
    read by the client (`switchyard.security`); a token is never a flag, as a command line is
    visible to every user of the machine."""
    unset: Any = argparse.SUPPRESS if in_subcommand else None
    parser.add_argument("--tls", action="store_true", default=argparse.SUPPRESS if in_subcommand else False,
                        help="use TLS, trusting the system's CAs (implied by --tls-ca/--tls-cert)")
    parser.add_argument("--tls-ca", metavar="FILE", default=unset,
                        help=f"PEM CA the scheduler's certificate must chain to; turns TLS on (env {TLS_CA_ENV})")
    parser.add_argument("--tls-cert", metavar="FILE", default=unset,
                        help=f"client certificate (PEM) for a scheduler that requires one (mTLS) (env {TLS_CERT_ENV})")
    parser.add_argument("--tls-key", metavar="FILE", default=unset,
                        help=f"private key (PEM) of --tls-cert (env {TLS_KEY_ENV})")
    parser.add_argument("--tls-server-name", metavar="NAME", default=unset,
                        help="name the scheduler's certificate must carry when it differs from the host dialled "
                        f"(env {TLS_SERVER_NAME_ENV})")
    parser.add_argument("--token-file", metavar="FILE", default=unset,
                        help=f"file holding the token sent as 'authorization: Bearer ...' (env {TOKEN_FILE_ENV}; "
                        f"or the token itself in {TOKEN_ENV})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``switchyard``; ``command`` holds the sub-command's name."""
    parser = argparse.ArgumentParser(
        prog="switchyard",
        description="Submit, inspect and control work on a Switchyard scheduler.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=DefaultsHelpFormatter,
    )
    _add_global_options(parser, in_subcommand=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(name, help=help_text, description=help_text, epilog=EXIT_STATUS_HELP,
                                    formatter_class=DefaultsHelpFormatter)
        _add_global_options(sub, in_subcommand=True)
        # Checks argparse cannot express report through the sub-command's own usage line.
        sub.set_defaults(usage_error=sub.error)
        return sub

    submit = command("submit", "submit one task")
    submit.add_argument("task_name", metavar="TASK_NAME", help="Celery task name, e.g. media.transcribe_audio")
    _add_task_options(submit)
    submit.add_argument("--wait", action="store_true", help="wait for the task to finish; exit 0 only if it succeeded")
    submit.add_argument("--timeout", type=positive_float, default=None, metavar="S", help="with --wait: give up after S seconds, exit 4 (default: wait as long as it takes)")

    batch = command("submit-batch", "submit the tasks of a file (one JSON object per line), in atomic chunks")
    batch.add_argument("file", type=batch_file, metavar="FILE",
                       help='JSON Lines, one task per line: {"task_name": ..., "kwargs": {...}, "priority": 8, ...} '
                       "(or one JSON array of them; - reads stdin)")
    batch.add_argument("--chunk-size", type=positive_int, default=DEFAULT_CHUNK_SIZE, metavar="N",
                       help="tasks per SubmitBatch call; each chunk is accepted whole or not at all")
    batch.add_argument("--wait", action="store_true", help="wait for every task to finish; exit 0 only if all succeeded")
    batch.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                       help="with --wait: give up after S seconds in all, exit 4 (default: wait as long as it takes)")

    explain = command(
        "explain",
        "dry run: how a task would be classified, which worker would take it now, and why the others would not",
    )
    target = explain.add_mutually_exclusive_group(required=True)
    target.add_argument("task_name", metavar="TASK_NAME", nargs="?", help="explain a task as submit would send it")
    target.add_argument("--task-id", metavar="ID", help="explain an existing pending task instead (default: none)")
    _add_task_options(explain)

    get = command("get", "show one task")
    get.add_argument("task_id", metavar="ID")

    watch = command("watch", "print a line per state change until the task ends; exit 0 only if it succeeded")
    watch.add_argument("task_id", metavar="ID")
    watch.add_argument("--timeout", type=positive_float, default=None, metavar="S", help="give up after S seconds, exit 4 (default: wait as long as it takes)")

    cancel = command("cancel", "cancel a task")
    cancel.add_argument("task_id", metavar="ID")

    tasks = command("tasks", "list tasks, newest first (--state running: the active tasks)")
    tasks.add_argument("--state", action="append", choices=TASK_STATES, default=[], metavar="STATE",
                       help=f"only tasks in this state (repeatable): {', '.join(TASK_STATES)}")
    tasks.add_argument("--queue", default="", metavar="Q", help="only this queue")
    tasks.add_argument("--worker", default="", metavar="W", help="only tasks whose current or last attempt went to worker W")
    tasks.add_argument("--name", default="", metavar="N", help="only tasks of this Celery task name")
    tasks.add_argument("--limit", type=positive_int, default=50, metavar="N", help="show at most N tasks (default 50)")
    tasks.add_argument("--page-token", default="", metavar="T", help="go on where an earlier listing stopped (it prints T)")

    command("queues", "statistics of every logical queue")
    command("workers", "workers known to the scheduler")

    pause = command("pause", "stop handing out a queue's tasks")
    pause.add_argument("queue", metavar="QUEUE")
    resume = command("resume", "hand out a paused queue's tasks again")
    resume.add_argument("queue", metavar="QUEUE")
    drain = command("drain", "give a worker nothing new; it finishes what it has")
    drain.add_argument("worker_id", metavar="WORKER")
    drain.add_argument("--wait", action="store_true", help="return once the worker is idle (drained); exit 1 if it is lost or undrained first")
    drain.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                       help="with --wait: give up after S seconds, exit 4 (default: wait as long as it takes)")
    drain.add_argument("--interval", type=positive_float, default=DRAIN_POLL_SECONDS, metavar="S",
                       help="with --wait: seconds between looks at the worker")
    undrain = command("undrain", "give a drained worker new work again (does nothing to a worker that is not drained)")
    undrain.add_argument("worker_id", metavar="WORKER")
    unquarantine = command("unquarantine", "end a worker's quarantine now and forget its recent failures")
    unquarantine.add_argument("worker_id", metavar="WORKER")
    top = command("top", "live view of queues, workers and the leader; q or Ctrl-C quits")
    top.add_argument("--once", action="store_true", help="print one frame as plain text and exit")
    top.add_argument("--interval", type=positive_float, default=DEFAULT_INTERVAL, metavar="S", help="seconds between frames")

    dead = command("dead-letters", "tasks that failed for good, newest first")
    dead.add_argument("--queue", default="", metavar="Q", help="only this queue (default: every queue)")
    dead.add_argument("--limit", type=positive_int, default=100, metavar="N", help="at most N, up to 1000")
    retry = command("retry-dead-letter", "put a dead-lettered task back to pending with a fresh retry budget")
    retry.add_argument("task_id", metavar="ID")
    purge = command("purge-dead-letters", "delete dead letters: --all, every one of --queue Q, or the given ids")
    purge.add_argument("task_ids", metavar="ID", nargs="*", help="task ids of the dead letters to delete")
    purge.add_argument("--queue", default="", metavar="Q", help="every dead letter of this queue")
    purge.add_argument("--all", action="store_true", help="every dead letter")
    return parser


def usage_problem(options: argparse.Namespace) -> str | None:
    """What is wrong with a parsed command line that argparse itself cannot check, or None."""
    if options.command in ("submit", "explain"):
        soft, hard = options.soft_time_limit, options.hard_time_limit
        if soft is not None and hard is not None and soft > hard:
            return f"--soft-time-limit ({soft:g}) must not exceed --hard-time-limit ({hard:g})"
    if options.command == "explain" and options.task_id is not None:
        given = _given_task_flags(options)
        if given:
            return f"--task-id explains an existing task and takes no task options (got {', '.join(given)})"
    if options.command == "purge-dead-letters":
        chosen = [name for name, used in (("ID", options.task_ids), ("--queue", options.queue), ("--all", options.all)) if used]
        if len(chosen) != 1:
            what = "nothing" if not chosen else " and ".join(chosen)
            return f"give exactly one of --all, --queue Q or ID... (got {what})"
    return None
