"""serve.server as a process (gunicorn for real, no Docker): start, readiness, failures, SIGTERM."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from scripts.local_endpoint import free_port, wait_for_http
from tests.conftest import ROOT


def start(model_dir, *args, output=subprocess.PIPE, **env):
    """The server as a process; output: where its log goes (a file, for a long run: a full pipe
    would block the workers)."""
    port = free_port()
    environment = {**os.environ, "BYOC_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port),
                   "SAGEMAKER_MODEL_SERVER_WORKERS": "2", **env}
    process = subprocess.Popen([sys.executable, "-m", "serve.server", *(args or ["serve"])],
                               cwd=ROOT, env=environment, stdout=output,
                               stderr=subprocess.STDOUT, text=True)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(process, url, log_file=None, timeout=60):
    """Until /ping answers 200; the server's log as the error if it exits first."""
    def log() -> str:
        return log_file.seek(0) or log_file.read() if log_file else process.stdout.read()

    wait_for_http(f"{url}/ping", timeout,
                  stopped=lambda: None if process.poll() is None else log())


def test_serves_then_stops_cleanly_on_sigterm(trained_model, small_data_master):
    process, url = start(trained_model)
    try:
        wait_ready(process, url)
        image = next(iter(sorted((small_data_master / "test").glob("*/*.png")))).read_bytes()
        response = requests.post(f"{url}/invocations", data=image,
                                 headers={"Content-Type": "image/png"}, timeout=10)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3
        # A chunked body has no Content-Length to refuse early: Werkzeug caps it at the limit,
        # and the app reads on past the cap to answer 413 instead of a silently cut image.
        chunks = (image for _ in range(6 * 1024 * 1024 // len(image) + 1))
        response = requests.post(f"{url}/invocations", data=chunks,
                                 headers={"Content-Type": "image/png"}, timeout=10)
        assert response.status_code == 413 and "BYOC_MAX_PAYLOAD_MB" in response.json()["error"]
        in_two_chunks = iter([image[:1000], image[1000:]])
        assert requests.post(f"{url}/invocations", data=in_two_chunks, timeout=10,
                             headers={"Content-Type": "image/png"}).status_code == 200
        sent = time.time()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.time() - sent < 5
    finally:
        process.kill()
    log = process.stdout.read()
    assert "ready in" in log and "Shutting down: Master" in log


def test_a_model_that_fails_to_load_stops_the_server_with_the_reason(trained_model, tmp_path):
    model = shutil.copytree(trained_model, tmp_path / "model")
    for name in ("model.onnx", "model.int8.onnx"):  # whichever precision it would serve
        (model / name).write_bytes(b"truncated")
    process, url = start(model)
    try:
        code = process.wait(timeout=60)
    finally:
        process.kill()
    log = process.stdout.read()
    assert code != 0 and "cannot load the onnx model" in log, log


def loading_worker(process) -> int:
    """The pid of the server's first worker, as soon as gunicorn forked it."""
    import psutil

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = psutil.Process(process.pid).children()
        if children:
            return children[0].pid
        time.sleep(0.01)
    raise TimeoutError("the server started no worker within 30 s")


def test_a_load_longer_than_the_request_timeout_ends_in_a_ready_server(trained_model):
    """gunicorn kills a worker silent for longer than the request timeout, timed from its first
    heartbeat, after the load: a load of seconds (PyTorch's import among it) on a timeout of one
    second ends in a ready server (SageMaker waits minutes for a large model's first /ping)."""
    process, url = start(trained_model, BYOC_BACKEND="torch", SAGEMAKER_MODEL_SERVER_WORKERS="1",
                         SAGEMAKER_MODEL_SERVER_TIMEOUT="1")
    try:
        wait_ready(process, url)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    log = process.stdout.read()
    loaded_in = float(re.search(r"ready in ([0-9.]+) s", log)[1])
    assert loaded_in > 1.5, log  # the premise: silent this long, a worker would be killed
    assert "WORKER TIMEOUT" not in log and log.count("Booting worker") == 1, log


@pytest.mark.parametrize("sent, code, message", [
    # the kernel's OOM killer sends SIGKILL: gunicorn would start worker after worker, each to die
    (signal.SIGKILL, 1, "died while it loaded the model (its signal is logged above: SIGKILL is "
                        "most often the memory limit)"),
    (signal.SIGSEGV, 1, "was sent SIGSEGV"),  # a crash in a native library as it loads
])
def test_a_worker_that_dies_while_it_loads_stops_the_server(trained_model, sent, code, message):
    process, url = start(trained_model, BYOC_BACKEND="torch", SAGEMAKER_MODEL_SERVER_WORKERS="1")
    try:
        os.kill(loading_worker(process), sent)
        assert process.wait(timeout=60) == code
    finally:
        process.kill()
    log = process.stdout.read()
    assert message in log and "ready in" not in log, log
    assert log.count("Booting worker") <= 1, log  # no other started (the first may not have said)


def test_sigterm_while_a_worker_loads_stops_the_server_cleanly(trained_model):
    process, url = start(trained_model, BYOC_BACKEND="torch", SAGEMAKER_MODEL_SERVER_WORKERS="1")
    try:
        loading_worker(process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    assert "died while it loaded" not in process.stdout.read()


@pytest.mark.parametrize("args, env, code, message", [
    (["serve"], {"BYOC_MODEL_DIR": "/nonexistent"}, 1, "cannot serve: no manifest.json in /nonexistent"),
    (["serve"], {"SAGEMAKER_MODEL_SERVER_WORKERS": "many"}, 1, "is not a whole number"),
    (["train"], {}, 2, "this is the serving image: run it with `serve`"),
])
def test_wrong_starts_exit_at_once_saying_why(trained_model, args, env, code, message):
    process, _ = start(trained_model, *args, **env)
    assert process.wait(timeout=30) == code
    assert message in process.stdout.read()


def test_metrics_add_up_across_worker_processes(trained_model, small_data_master, tmp_path):
    """Two sync workers share the requests; every scrape, whichever worker answers it, counts
    all of them."""
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client.parser import text_string_to_metric_families

    image = next(iter(sorted((small_data_master / "test").glob("*/*.png")))).read_bytes()
    log_file = open(tmp_path / "server.log", "w+")
    process, url = start(trained_model, output=log_file, BYOC_REQUEST_THREADS="1")

    def send(i: int) -> int:
        body = image if i % 4 else b"not an image"
        return requests.post(f"{url}/invocations", data=body, timeout=30,
                             headers={"Content-Type": "image/png"}).status_code

    try:
        wait_ready(process, url, log_file)
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(send, range(40)))
        scrapes = [requests.get(f"{url}/metrics", timeout=10).text for _ in range(6)]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert statuses.count(200) == 30 and statuses.count(400) == 10
    log = (tmp_path / "server.log").read_text()
    refusing = {line.split()[2] for line in log.splitlines() if "-> 400" in line}
    assert len(refusing) == 2, refusing  # both workers answered some
    for text in scrapes:
        counts = {(s.labels.get("status"), s.labels.get("route")): s.value
                  for family in text_string_to_metric_families(text)
                  for s in family.samples if s.name == "byoc_requests_total"}
        assert counts[("200", "/invocations")] == 30 and counts[("400", "/invocations")] == 10


def in_flight(scrape: str) -> float:
    """byoc_requests_in_flight of a /metrics scrape: requests holding or waiting for a core."""
    from prometheus_client.parser import text_string_to_metric_families

    return next(s.value for family in text_string_to_metric_families(scrape)
                for s in family.samples if s.name == "byoc_requests_in_flight")


def probe_while_invocations_queue(model_dir, photo: bytes, log_path, path: str) -> dict:
    """GET path of a one-worker, one-core server while 16 invocations of photo hold or wait for
    the core, and once more when all are answered. Synchronised on the server's own count of
    them (byoc_requests_in_flight), not on time: the probe goes once at least 4 are in flight,
    and the count is read again the moment it answered. {"probe", "in_flight_before",
    "in_flight_after", "statuses", "after"}."""
    from concurrent.futures import ThreadPoolExecutor

    log_file = open(log_path, "w+")
    process, url = start(model_dir, output=log_file, SAGEMAKER_MODEL_SERVER_WORKERS="1",
                         BYOC_PARALLEL_REQUESTS="1")

    def invoke(_) -> int:
        return requests.post(f"{url}/invocations", data=photo, timeout=120,
                             headers={"Content-Type": "image/jpeg"}).status_code

    try:
        wait_ready(process, url, log_file)
        with ThreadPoolExecutor(16) as pool:
            answered = [pool.submit(invoke, i) for i in range(16)]
            before = 0.0
            while before < 4:
                assert not all(f.done() for f in answered), "the invocations never queued"
                before = in_flight(requests.get(f"{url}/metrics", timeout=30).text)
            probe = requests.get(f"{url}{path}", timeout=30)
            after_probe = in_flight(requests.get(f"{url}/metrics", timeout=30).text)
            statuses = [f.result() for f in answered]
        after = requests.get(f"{url}{path}", timeout=30)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"probe": probe, "in_flight_before": before, "in_flight_after": after_probe,
            "statuses": statuses, "after": after}


def test_a_ping_answers_at_once_while_invocations_queue_for_the_cores(trained_model, phone_photo,
                                                                       tmp_path):
    """SageMaker pings a busy endpoint too: a /ping must not wait behind the invocations queued
    for the cores (serve/cores.py), which wait in arrival order, each answered. A /ping behind
    them would answer only once all that were in flight before it were done."""
    run = probe_while_invocations_queue(trained_model, phone_photo["baseline"],
                                        tmp_path / "server.log", "/ping")
    assert run["probe"].status_code == 200 and run["statuses"] == [200] * 16
    assert run["in_flight_after"] >= 1, run  # invocations queued before it were still there


def test_sagemakers_scraper_gets_prometheus_text_while_invocations_queue(trained_model,
                                                                         phone_photo, tmp_path):
    """Every endpoint config the kit creates turns detailed observability on: SageMaker then
    scrapes GET /metrics on 8080 every 60 s, busy or not. Under a queue of invocations, a scrape
    must not wait behind them (as /ping does not), and must be Prometheus text that counts
    what was answered; its own count of requests in flight says it answered amid them."""
    from prometheus_client.parser import text_string_to_metric_families

    run = probe_while_invocations_queue(trained_model, phone_photo["baseline"],
                                        tmp_path / "server.log", "/metrics")
    scrape = run["probe"]
    assert scrape.status_code == 200 and run["statuses"] == [200] * 16
    assert scrape.headers["Content-Type"].startswith("text/plain")  # Prometheus text format
    assert in_flight(scrape.text) >= 2, scrape.text[-500:]  # one at the core, more waiting
    families = {family.name: family for family in text_string_to_metric_families(run["after"].text)}
    answered = {s.labels.get("status"): s.value for s in families["byoc_requests"].samples
                if s.name == "byoc_requests_total" and s.labels.get("route") == "/invocations"}
    assert answered["200"] == 16
