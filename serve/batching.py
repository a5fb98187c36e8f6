"""Dynamic batching: concurrent requests' images through one network run.

A GPU runs a batch of 8 in little more time than a batch of 1, so requests decoded on their own
threads (on the CPU) hand their inputs to one batching thread, which waits for others to join,
up to max_images in all, runs the network once, and gives each request its own rows back: the
answers are those the request would have had alone. It waits only while another request is
decoding (or waiting to), and at most max_wait_s after the first: a lone request, or the last
of a burst, runs at once. The thread starts on the first call, in the worker (never in
gunicorn's master, before the fork).
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

POLL_S = 0.0005  # how often a batch being gathered looks whether anyone is still decoding


@dataclass
class _Job:
    inputs: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class Batcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_images: int,
                 max_wait_s: float):
        self.run, self.max_images, self.max_wait_s = run, max_images, max_wait_s
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._started = threading.Lock()
        self._thread: threading.Thread | None = None
        self._carried: _Job | None = None  # the job that did not fit the last batch: next first
        self._decoding = 0  # requests that will bring inputs: a batch waits for them
        self._count = threading.Lock()

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Around a request's decoding (and its wait for a core to decode on)."""
        with self._count:
            self._decoding += 1
        try:
            yield
        finally:
            with self._count:
                self._decoding -= 1

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """The network's output for these inputs, computed in a batch with others'."""
        if self._thread is None:
            with self._started:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="batcher",
                                                    daemon=True)
                    self._thread.start()
        job = _Job(inputs)
        self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _gather(self) -> list[_Job]:
        """The first job waiting, and those that join it within max_wait_s while requests are
        decoding, up to max_images (a request larger than the room left opens the next batch)."""
        jobs = [self._carried or self._jobs.get()]
        self._carried = None
        images = len(jobs[0].inputs)
        deadline = time.perf_counter() + self.max_wait_s
        while images < self.max_images:
            try:
                job = self._jobs.get(timeout=min(POLL_S, max(0.0, deadline - time.perf_counter())))
            except queue.Empty:
                if self._decoding and time.perf_counter() < deadline:
                    continue
                break
            if images + len(job.inputs) > self.max_images:
                self._carried = job
                break
            jobs.append(job)
            images += len(job.inputs)
        return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._gather()
            try:
                outputs = self.run(np.concatenate([job.inputs for job in jobs]))
                start = 0
                for job in jobs:
                    job.result = outputs[start:start + len(job.inputs)]
                    start += len(job.inputs)
            except BaseException as e:  # every request of the batch answers the failure
                for job in jobs:
                    job.error = e
            finally:
                for job in jobs:
                    job.done.set()
