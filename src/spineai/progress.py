"""Progress reporting shared by the command line and Slicer.

Long engine functions take ``progress``: a callable ``progress(done, total, message)``. The command
line passes a ``TextProgress`` bar; Slicer passes a callback that updates its progress bar and raises
``Cancelled`` when the user pressed Cancel, which unwinds the engine function cleanly.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

from spineai.errors import SpineAIError

ProgressCallback = Callable[[int, int, str], None]


class Cancelled(SpineAIError):
    """The user cancelled a long operation; nothing partial was written."""


def report(progress: Optional[ProgressCallback], done: int, total: int, message: str = "") -> None:
    if progress is not None:
        progress(done, total, message)


class TextProgress:
    """A dependency-free progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str = "", width: int = 30, stream=None, eta: bool = False):
        self.label, self.width, self.eta = label, width, eta
        self.stream = stream if stream is not None else sys.stderr
        self._last = 0.0
        self._start = time.perf_counter()

    def __call__(self, done: int, total: int, message: str = "") -> None:
        now = time.perf_counter()
        final = total > 0 and done >= total
        if not final and now - self._last < 0.1:
            return
        self._last = now
        frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = now - self._start
        eta = f" ETA {elapsed * (total - done) / done:5.0f}s" if self.eta and 0 < done < total else ""
        line = f"\r{self.label} [{bar}] {done}/{total} {elapsed:5.1f}s{eta} {message}"[:120]
        self.stream.write(line.ljust(80))
        if final:
            self.stream.write("\n")
        self.stream.flush()
