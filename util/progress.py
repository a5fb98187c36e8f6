"""Progress of the client-side commands that take minutes: a bar redrawn in place on a terminal,
plain lines every so often anywhere else (a log file, CI, CloudWatch), so that no carriage
return ever lands in a log.

    with Progress("uploading", total=len(files), unit="files") as progress:
        for path in files:
            ...
            progress.update()

    for image in track(images, "packing", total=len(images)): ...
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


class Progress:
    def __init__(self, what: str, total: float | None = None, unit: str = "", scale: float = 1,
                 stream: TextIO | None = None, every_s: float = 30, tty: bool | None = None):
        """scale: units per counted item (1e-6 counts bytes as MB); every_s: how often a plain
        line is written when the stream is not a terminal."""
        self.what, self.total, self.unit, self.scale = what, total, unit, scale
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.done = 0.0
        self.started = self.last = time.monotonic()
        self.closed = False

    def _text(self, now: float) -> str:
        done = self.done * self.scale
        rate = done / max(now - self.started, 1e-9)
        if self.total:
            total = self.total * self.scale
            share = min(self.done / self.total, 1.0)
            eta = (total - done) / rate if rate > 0 else 0
            text = f"{self.what}: {done:,.{self._digits}f}/{total:,.{self._digits}f} {self.unit}"
            text += f" ({100 * share:.0f}%, {rate:,.1f} {self.unit}/s, {eta:.0f} s left)"
            if self.tty:
                bar = "#" * int(30 * share)
                text = f"{self.what} [{bar:<30}] " + text.split(": ", 1)[1]
            return text
        return f"{self.what}: {done:,.{self._digits}f} {self.unit} ({rate:,.1f} {self.unit}/s)"

    @property
    def _digits(self) -> int:
        return 0 if self.scale == 1 else 1

    def update(self, n: float = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty:
            if now - self.last >= 0.1:
                self.stream.write("\r" + self._text(now) + "\033[K")
                self.stream.flush()
                self.last = now
        elif now - self.last >= self.every_s:
            self.stream.write(self._text(now) + "\n")
            self.stream.flush()
            self.last = now

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        end = f"{self._text(now)}, done in {now - self.started:.1f} s"
        self.stream.write(("\r" + end + "\033[K\n") if self.tty else end + "\n")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], what: str, total: int | None = None, unit: str = "",
          **options) -> Iterator[T]:
    """Each item of items, counted."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(what, total, unit, **options) as progress:
        for item in items:
            yield item
            progress.update()
