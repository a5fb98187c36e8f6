"""util/progress.py: a bar in place on a terminal, plain lines in a log."""
from __future__ import annotations

import io

from util import progress as progress_module
from util.progress import Progress, track


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_log_gets_periodic_lines_and_no_carriage_return(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    log = io.StringIO()
    with Progress("uploading", total=100, unit="files", stream=log, every_s=30) as progress:
        for _ in range(100):
            clock.now += 1  # one file a second: a line at 30, 60 and 90 s, and the last
            progress.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\033" not in log.getvalue()
    assert lines == [
        "uploading: 30/100 files (30%, 1.0 files/s, 70 s left)",
        "uploading: 60/100 files (60%, 1.0 files/s, 40 s left)",
        "uploading: 90/100 files (90%, 1.0 files/s, 10 s left)",
        "uploading: 100/100 files (100%, 1.0 files/s, 0 s left), done in 100.0 s"]


def test_a_terminal_gets_one_bar_redrawn_in_place(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    terminal = io.StringIO()
    with Progress("downloading x.zip", total=2_000_000, unit="MB", scale=1e-6, stream=terminal,
                  tty=True) as progress:
        for _ in range(4):
            clock.now += 1
            progress.update(500_000)
    text = terminal.getvalue()
    assert text.count("\n") == 1 and text.endswith("\033[K\n")  # one line, ended once
    assert text.count("\r") == 5  # four redraws and the last
    assert "\rdownloading x.zip [###############               ] 1.0/2.0 MB (50%" in text
    assert "2.0/2.0 MB (100%, 0.5 MB/s, 0 s left), done in 4.0 s" in text


def test_track_counts_what_it_yields():
    log = io.StringIO()
    assert list(track(range(3), "packing", unit="images", stream=log)) == [0, 1, 2]
    assert log.getvalue().startswith("packing: 3/3 images (100%")
