"""Progress bars for long ``switchyard`` work, drawn only on a terminal.

A bar is one line redrawn in place (carriage return, then the line erased to its end); when the
stream is not a terminal (a pipe, a file, a test capturing output) nothing is drawn at all, so
scripts see exactly the lines they saw before. Lines printed while a bar shows go through
:meth:`ProgressBar.print`, which takes the bar away, prints, and puts it back.
"""

from __future__ import annotations

from typing import TextIO

__all__ = ["ProgressBar", "format_bar"]

BAR_WIDTH = 30
"""Characters between the brackets."""

_ERASE_LINE = "\r\x1b[K"


def format_bar(done: float, total: float, width: int = BAR_WIDTH) -> str:
    """``[##########..........]  50%``: ``done`` of ``total`` (a share of 1 when total is 1)."""
    share = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = int(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {share * 100:3.0f}%"


class ProgressBar:
    """A bar on ``stream``, drawn only when ``stream`` is a terminal (or ``enabled`` says so)."""

    def __init__(self, stream: TextIO, total: float, label: str = "", *, enabled: bool | None = None) -> None:
        self.stream = stream
        self.total = total
        self.label = label
        self.enabled = _is_terminal(stream) if enabled is None else enabled
        self._shown = ""

    def update(self, done: float, note: str = "") -> None:
        """Show ``done`` of the total, with ``note`` after the bar; redraws only on a change."""
        if not self.enabled:
            return
        line = " ".join(part for part in (self.label, format_bar(done, self.total), note) if part)
        if line != self._shown:
            self.stream.write(_ERASE_LINE + line)
            self.stream.flush()
            self._shown = line

    def print(self, text: str) -> None:
        """Print ``text`` as a line of its own, the bar (if shown) moved below it."""
        shown = self._shown
        self.clear()
        print(text, file=self.stream)
        if shown:
            self.stream.write(shown)
            self._shown = shown
        self.stream.flush()

    def clear(self) -> None:
        """Take the bar away (the cursor is left at the start of the empty line)."""
        if self._shown:
            self.stream.write(_ERASE_LINE)
            self.stream.flush()
            self._shown = ""


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
