"""serve.server as a process (gunicorn for real, no Docker): start, readiness, failures, SIGTERM."""
from __future__ import annotations

import os
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
    (model / "model.onnx").write_bytes(b"truncated")
    process, url = start(model)
    try:
        code = process.wait(timeout=60)
    finally:
        process.kill()
    log = process.stdout.read()
    assert code != 0 and "cannot load the onnx model" in log, log


@pytest.mark.parametrize("args, env, code, message", [
    (["serve"], {"BYOC_MODEL_DIR": "/nonexistent"}, 1, "cannot serve: no manifest.json in /nonexistent"),
    (["serve"], {"SAGEMAKER_MODEL_SERVER_WORKERS": "many"}, 1, "is not a whole number"),
    (["train"], {}, 2, "this is the serving image: run it with `serve`"),
])
def test_wrong_starts_exit_at_once_saying_why(trained_model, args, env, code, message):
    process, _ = start(trained_model, *args, **env)
    assert process.wait(timeout=30) == code
    assert message in process.stdout.read()
