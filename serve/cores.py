"""The CPU's cores, handed out to requests: first come, first served, one core per request.

A request's CPU work (decoding its images and, on ONNX Runtime, the network) waits for a core
of its worker process, in the order the requests arrived, and holds it until its network run
is done. A request alone on the machine (no other request in any worker, running or waiting)
takes every core of its process for the network, the lowest latency; under load, each core
runs one request's single-threaded work at a time. Nothing runs more threads than there are
cores, so no request is slowed by another's threads (which makes the tail: a multi-threaded
run waits for its slowest thread), and none overtakes another. Reading and answering the HTTP
request happen outside, on the request's own thread: gunicorn has more threads than cores, so
a /ping never waits behind invocations (bench/serving.py measures all of it).

Requests in flight are counted across the worker processes in a shared array with a cell per
worker, made when this module is imported, before gunicorn forks the workers. Each worker
writes its own cell; the master clears the cell of a worker that died, so requests it left
unfinished are not counted for ever.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterator


class Turn:
    """A request's hold on cores: one, or all of its process' while it runs alone."""

    def __init__(self, cores: "Cores"):
        self._cores = cores
        self.held = 1

    def take_all(self) -> bool:
        """Whether this request is the only one on the machine; then it holds every core of its
        process, runs its network on all the machine's, and calls give_back."""
        if self.held == 1 and self._cores._take_rest():
            self.held = self._cores.count
            return True
        return False

    def give_back(self) -> None:
        """Keep one core, and hand the others to the requests that wait."""
        self._cores._release(self.held - 1)
        self.held = 1


class Cores:
    def __init__(self, cells: int = 64):
        self.cells = multiprocessing.Array("i", cells)  # requests in flight, per worker
        self.cell = 0
        self.count = len(os.sched_getaffinity(0))  # the server sets its workers' share
        self._lock = threading.Lock()
        self._free = self.count
        self._waiting: deque[threading.Event] = deque()

    def use_cell(self, worker: int) -> None:
        """In a new worker process (gunicorn's post_fork): its own cell."""
        self.cell = worker % len(self.cells)

    def clear(self, worker: int) -> None:
        """In the master, when a worker exits: its requests no longer count."""
        with self.cells.get_lock():
            self.cells[worker % len(self.cells)] = 0

    def configure(self, count: int) -> None:
        """The cores this process hands out (its share of the machine), before any request."""
        with self._lock:
            self._free += count - self.count
            self.count = count

    def in_flight(self) -> int:
        """Requests holding or waiting for a core, in every worker."""
        with self.cells.get_lock():
            return sum(self.cells)

    @contextlib.contextmanager
    def turn(self) -> Iterator[Turn]:
        """Wait for a core, in arrival order; hold it for the block."""
        self._count(+1)
        ready = None
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
            else:
                ready = threading.Event()
                self._waiting.append(ready)
        try:
            if ready is not None:
                ready.wait()  # a request that ends hands its core to the first in line
            turn = Turn(self)
            try:
                yield turn
            finally:
                self._release(turn.held)
        finally:
            self._count(-1)

    def _count(self, change: int) -> None:
        with self.cells.get_lock():
            self.cells[self.cell] += change

    def _take_rest(self) -> bool:
        with self._lock:
            if self._free != self.count - 1 or self._waiting or self.in_flight() != 1:
                return False
            self._free = 0
            return True

    def _release(self, count: int) -> None:
        with self._lock:
            for _ in range(count):
                if self._waiting:
                    self._waiting.popleft().set()
                else:
                    self._free += 1


CORES = Cores()
