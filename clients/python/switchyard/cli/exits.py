"""The ``switchyard`` command line's exit statuses: one table, the same for every command.

====  ====================  ===============================================================
code  name                  when
====  ====================  ===============================================================
0     EXIT_OK               the command did what was asked (``submit --wait``, ``watch``,
                            ``submit-batch --wait``: the task(s) succeeded; ``drain --wait``:
                            the worker is drained and idle; ``top``: quit with q or Ctrl-C)
1     EXIT_FAILURE          the scheduler refused the request (``NOT_FOUND``,
                            ``INVALID_ARGUMENT``, ``FAILED_PRECONDITION``, ...), or the work
                            waited for ended otherwise (a task failed, was dead-lettered or
                            cancelled; a draining worker was lost or undrained meanwhile)
2     EXIT_USAGE            bad usage: unknown command or flag, a malformed value, an
                            unreadable ``@file`` or batch file; nothing was sent
3     EXIT_UNAVAILABLE      no scheduler could be reached (``UNAVAILABLE`` after
                            ``--failover-timeout``)
4     EXIT_TIMEOUT          ``--timeout`` ran out before the task (or the drain) finished,
                            or the scheduler did not answer in time (``DEADLINE_EXCEEDED``)
130   EXIT_INTERRUPTED      interrupted (Ctrl-C) while waiting
====  ====================  ===============================================================

Errors print one line on stderr, ``error: <CODE>: <message>``; usage errors print the
command's usage line first.
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STATUS_HELP",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = (
    "exit status: 0 ok, 1 refused by the scheduler or the task did not succeed, 2 bad usage, "
    "3 scheduler unreachable, 4 timed out, 130 interrupted"
)
"""The table in one line, for the end of every ``--help``."""
