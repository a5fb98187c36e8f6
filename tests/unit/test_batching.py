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


def test_concurrent_callers_share_runs_and_each_gets_its_own_rows():
    run, sizes = recording()
    batcher = Batcher(run, max_images=8, max_wait_s=0.05)
    inputs = [np.full((1 + i % 3, 2), i, np.float32) for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        outputs = list(pool.map(batcher, inputs))
    for given, got in zip(inputs, outputs):
        np.testing.assert_array_equal(got, given * 10)
    assert sum(sizes) == sum(len(x) for x in inputs)
    assert max(sizes) <= 8 and len(sizes) < len(inputs)  # batched, within the bound


def test_a_lone_caller_waits_no_longer_than_the_bound():
    run, sizes = recording(delay_s=0.0)
    batcher = Batcher(run, max_images=8, max_wait_s=0.03)
    started = time.perf_counter()
    np.testing.assert_array_equal(batcher(np.ones((1, 2))), np.full((1, 2), 10))
    assert time.perf_counter() - started < 0.5 and sizes == [1]


def test_a_failed_run_fails_every_request_of_its_batch_and_not_the_next():
    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            time.sleep(0.05)
            raise RuntimeError("CUDA out of memory")
        return batch

    batcher = Batcher(run, max_images=8, max_wait_s=0.05)
    barrier = threading.Barrier(3)

    def call(_):
        barrier.wait()
        try:
            return batcher(np.ones((1, 2)))
        except RuntimeError as e:
            return str(e)

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(call, range(3)))
    assert answers.count("CUDA out of memory") == calls[0]
    assert batcher(np.ones((1, 2))).shape == (1, 2)  # the thread lives on


def test_a_request_larger_than_the_room_left_opens_the_next_batch():
    run, sizes = recording()
    batcher = Batcher(run, max_images=4, max_wait_s=0.1)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher, np.ones((3, 2)))
        time.sleep(0.01)
        second = pool.submit(batcher, np.ones((3, 2)))
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
        x = batched.decode(image)[None]
        barrier.wait()
        return batched.probabilities(x)

    with ThreadPoolExecutor(len(images)) as pool:
        together = list(pool.map(predict, images))
    assert max(runs) > 1 and sum(runs) == len(images)
    for image, probabilities in zip(images, together):
        expected = alone.probabilities(alone.decode(image)[None])
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
        assert probabilities.argmax() == expected.argmax()


@pytest.mark.parametrize("env, expected", [({}, 0), ({"BYOC_DYNAMIC_BATCH": "16"}, 16)])
def test_dynamic_batch_settings(env, expected):
    from serve.settings import Settings

    settings = Settings.from_environment({**env, "BYOC_DYNAMIC_BATCH_WAIT_MS": "2"})
    assert settings.dynamic_batch == expected and settings.dynamic_batch_wait_s == 0.002
