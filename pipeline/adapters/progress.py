"""Progress of a long command on a terminal: a bar on stderr, redrawn at most five times a
second, nothing at all when stderr is not a terminal (a pipe or a log file gets the
command's one summary line instead).

What a bar counts is what is done, never what was merely started: `ingest` and `tenants
load` count the records the broker acknowledged; the ledger readers count records read."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_S = 0.2
WIDTH = 30

# Set by the CLI for commands run by a person; library use and the workers stay silent.
enabled = False


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.on = enabled and self.stream.isatty()
        self._drawn = 0.0

    def update(self, done: int, note: str = "") -> None:
        if self.on and time.monotonic() - self._drawn >= REDRAW_S:
            self._draw(done, note)

    def finish(self, done: int, note: str = "") -> None:
        if self.on:
            self._draw(done, note)
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, done: int, note: str) -> None:
        filled = WIDTH * min(done, self.total) // max(self.total, 1)
        text = f"\r{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{self.total}"
        self.stream.write(text + (f" {note}" if note else "") + "\x1b[K")
        self.stream.flush()
        self._drawn = time.monotonic()
