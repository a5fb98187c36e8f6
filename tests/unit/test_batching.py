"""serve/batching.py: concurrent requests share network runs, and each gets its own answer."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serve.batching import Batcher
from serve.predictor import load_predictor


def recording(delay_s: float = 0.02):
    """A stand-in network (row i -> 10 * row i) that records the batch sizes it ran."""
    sizes = []

    def run(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        time.sleep(delay_s)
        return batch * 10
    return run, sizes


def decoded_then_sent(batcher: Batcher, barrier: threading.Barrier | None = None):
    """A caller as the server's request threads are: it decodes (announced), then sends."""
    def call(inputs: np.ndarray) -> np.ndarray:
        with batcher.decoding():
            if barrier is not None:
                barrier.wait()
        return batcher(inputs)
    return call


def test_concurrent_callers_share_runs_and_each_gets_its_own_rows():
    run, sizes = recording()
    batcher = Batcher(run, max_images=8, max_wait_s=0.05)
    inputs = [np.full((1 + i % 3, 2), i, np.float32) for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        outputs = list(pool.map(decoded_then_sent(batcher), inputs))
    for given, got in zip(inputs, outputs):
        np.testing.assert_array_equal(got, given * 10)
    assert sum(sizes) == sum(len(x) for x in inputs)
    assert max(sizes) <= 8 and len(sizes) < len(inputs)  # batched, within the bound


def test_a_lone_caller_runs_at_once_and_one_with_a_request_decoding_waits_for_it():
    """The wait bound is an hour here: a batch waits only while another request decodes."""
    run, sizes = recording(delay_s=0.0)
    batcher = Batcher(run, max_images=8, max_wait_s=3600)
    with ThreadPoolExecutor(2) as pool:
        alone = pool.submit(batcher, np.ones((1, 2)))
        np.testing.assert_array_equal(alone.result(timeout=30), np.full((1, 2), 10))
        assert sizes == [1]
        entered, leave = threading.Event(), threading.Event()

        def slow_decoder():
            with batcher.decoding():
                entered.set()
                leave.wait(30)
            return batcher(np.full((1, 2), 2.0))

        other = pool.submit(slow_decoder)
        assert entered.wait(30)
        first = pool.submit(batcher, np.ones((1, 2)))
        time.sleep(0.2)
        assert not first.done()  # waiting for the request still decoding
        leave.set()
        np.testing.assert_array_equal(first.result(timeout=30), np.full((1, 2), 10))
        np.testing.assert_array_equal(other.result(timeout=30), np.full((1, 2), 20))
    assert sizes == [1, 2]


def test_a_failed_run_fails_every_request_of_its_batch_and_not_the_next():
    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            time.sleep(0.05)
            raise RuntimeError("CUDA out of memory")
        return batch

    batcher = Batcher(run, max_images=8, max_wait_s=0.05)
    send = decoded_then_sent(batcher, threading.Barrier(3))

    def call(_):
        try:
            return send(np.ones((1, 2)))
        except RuntimeError as e:
            return str(e)

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(call, range(3)))
    assert answers.count("CUDA out of memory") == calls[0]
    assert batcher(np.ones((1, 2))).shape == (1, 2)  # the thread lives on


def test_a_request_larger_than_the_room_left_opens_the_next_batch():
    run, sizes = recording()
    batcher = Batcher(run, max_images=4, max_wait_s=0.1)
    send = decoded_then_sent(batcher, threading.Barrier(2))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(send, np.ones((3, 2)))
        second = pool.submit(send, np.ones((3, 2)))
        first.result(), second.result()
    assert sizes == [3, 3]


def test_batched_answers_are_the_unbatched_ones(trained_model, small_data_master):
    """PyTorch on this machine's CPU, 8 concurrent requests: one or a few network runs, and every
    request's probabilities what it would have got alone."""
    alone = load_predictor(trained_model, "torch", 2)
    batched = load_predictor(trained_model, "torch", 2, batch_images=8, batch_wait_s=0.05)
    runs = []
    batched.metrics = type("Metrics", (), {
        "decoded": lambda self, seconds: None,
        "inferred": lambda self, seconds, images, precision: runs.append(images)})()
    images = [p.read_bytes() for p in sorted((small_data_master / "test").glob("*/*"))[:8]]
    barrier = threading.Barrier(len(images))

    def predict(image: bytes):
        barrier.wait()
        return batched.classify([image], 3)[0]

    with ThreadPoolExecutor(len(images)) as pool:
        together = list(pool.map(predict, images))
    assert max(runs) > 1 and sum(runs) == len(images)
    for image, answer in zip(images, together):
        expected = alone.predict([image], 3)[0]
        assert [p["label"] for p in answer] == [p["label"] for p in expected]
        for got, want in zip(answer, expected):
            assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)


@pytest.mark.parametrize("env, expected", [({}, 0), ({"BYOC_DYNAMIC_BATCH": "16"}, 16)])
def test_dynamic_batch_settings(env, expected):
    from serve.settings import Settings

    settings = Settings.from_environment({**env, "BYOC_DYNAMIC_BATCH_WAIT_MS": "2"})
    assert settings.dynamic_batch == expected and settings.dynamic_batch_wait_s == 0.002
