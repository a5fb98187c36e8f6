"""The serving image, run exactly as a SageMaker endpoint runs it, on the model the training
container trained: /opt/ml/model mounted read-only, `serve`, port 8080."""
from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from scripts.local_endpoint import (content_type, docker_command, free_port, start_container,
                                    wait_until_healthy)
from tests.conftest import ROOT

CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"


class Endpoint:
    def __init__(self, image: str, model_dir: Path, env: dict | None = None,
                 start_timeout_s: float = 120, mount_at: str = "/opt/ml/model"):
        self.start_timeout_s = start_timeout_s
        self.name = f"byoc-test-serve-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inside = int((env or {}).get("SAGEMAKER_BIND_TO_PORT", 8080))
        self.cmd = docker_command(image, model_dir, self.port, self.name, env, inside, mount_at)

    def __enter__(self):
        started = time.perf_counter()
        try:
            start_container(self.cmd, self.port)
            self.ready_s = wait_until_healthy(self.url, self.name, self.start_timeout_s)
        except BaseException:
            self.__exit__()  # a start that failed or hung (QEMU's deadlock) leaves no container
            raise
        self.started_s = time.perf_counter() - started
        return self

    def __exit__(self, *exc):
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)

    def logs(self) -> str:
        result = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return result.stdout + result.stderr

    def post(self, body: bytes, content_type="image/jpeg", **headers):
        return requests.post(f"{self.url}/invocations", data=body, timeout=60,
                             headers={"Content-Type": content_type, **headers})


@pytest.fixture(scope="module")
def endpoint(serve_image, demo_job):
    with Endpoint(serve_image, demo_job[0] / "model") as running:
        yield running


def test_ping_answers_within_seconds_of_start(endpoint, demo_job):
    assert endpoint.started_s < 30
    ping = requests.get(f"{endpoint.url}/ping", timeout=2)
    assert ping.status_code == 200 and ping.json()["model"]["backend"] == "onnx"
    assert "telemetry" not in endpoint.logs().lower()  # ONNX Runtime's is switched off
    # What serves is what the int8 copy's gate decided in training: the copy when it passed.
    # (Whether it passes depends on the CPU that trained it: the demo passes on Intel's
    # AVX-512 VNNI machines, not on an AMD EPYC's.)
    passed = json.loads((demo_job[0] / "model" / "manifest.json").read_text())[
        "precisions"]["int8"]["passed"]
    assert ping.json()["model"]["precision"] == ("int8" if passed else "fp32")
    assert ("in int8 (top-1 agreement with fp32" if passed else
            "in fp32 (the int8 copy failed its gate") in endpoint.logs()


def test_classifies_the_demo_test_images_as_training_evaluated_them(endpoint, demo_data, demo_job):
    """Every test image, as JPEG or PNG, through HTTP: the served accuracy is training's."""
    paths = sorted((demo_data / "test").glob("*/*"))
    assert {content_type(p) for p in paths} >= {"image/jpeg", "image/png"}
    correct = 0
    for path in paths:
        response = endpoint.post(path.read_bytes(), content_type(path))
        assert response.status_code == 200, response.text
        correct += response.json()["predictions"][0]["label"] == path.parent.name
    evaluation = json.loads((demo_job[0] / "output" / "data" / "evaluation.json").read_text())
    assert evaluation["images"] == len(paths)
    # Training evaluated fp32; the int8 copy, if it serves, may differ on the images its gate
    # allowed.
    int8 = json.loads((demo_job[0] / "model" / "manifest.json").read_text())["precisions"]["int8"]
    allowed = round((1 - int8["agreement"]) * int8["images"]) if int8["passed"] else 0
    assert abs(correct - round(evaluation["test_top1"] * len(paths))) <= allowed
    assert correct / len(paths) >= 0.95


def test_json_batch_and_top_k(endpoint, demo_data):
    paths = sorted((demo_data / "test").glob("*/*"))[::15]
    body = json.dumps({"images": [base64.b64encode(p.read_bytes()).decode() for p in paths]})
    response = endpoint.post(body.encode(), "application/json", **{CUSTOM: "top_k=5"})
    assert response.status_code == 200, response.text
    one_by_one = [endpoint.post(p.read_bytes(), content_type(p), **{CUSTOM: "top_k=5"}).json()
                  for p in paths]
    assert response.json()["results"] == [{"predictions": r["predictions"]} for r in one_by_one]
    assert all(len(r["predictions"]) == 5 for r in one_by_one)


def png(width: int, height: int, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_client_error_is_a_json_4xx_and_the_server_stays_up(endpoint, demo_data):
    jpeg = next(iter(sorted((demo_data / "test").glob("*/*.jpg")))).read_bytes()
    cases = [
        (endpoint.post(jpeg, "text/csv"), 415),
        (endpoint.post(b""), 400),
        (endpoint.post(b"this is not an image"), 400),
        (endpoint.post(jpeg[: len(jpeg) // 3]), 400),
        (endpoint.post(b"{bad json", "application/json"), 400),
        (endpoint.post(bytes(6 * 1024 * 1024 + 1)), 413),  # SageMaker's 6 MB default
        (endpoint.post(png(10000, 9000, "L"), "image/png"), 400),  # 90 Mpixel > 50 Mpixel limit
        (endpoint.post(jpeg, Accept="text/csv"), 406),
        (endpoint.post(jpeg, **{CUSTOM: "top_k=zero"}), 400),
        (requests.get(f"{endpoint.url}/predict", timeout=5), 404),
        (requests.get(f"{endpoint.url}/invocations", timeout=5), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.text)
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"] and "Traceback" not in response.text
    assert endpoint.post(jpeg).status_code == 200
    assert "Traceback" not in endpoint.logs()


def test_a_truncated_upload_loses_nothing(endpoint, demo_data):
    """A client that promises more bytes than it sends, then gives up: the worker survives."""
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"\xff\xd8\xff" * 100)
        s.shutdown(socket.SHUT_WR)
        answer = s.recv(4096)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer
    png_path = next(iter(sorted((demo_data / "test").glob("*/*.png"))))
    assert endpoint.post(png_path.read_bytes(), "image/png").status_code == 200


def test_50_concurrent_requests_are_all_answered(endpoint, demo_data):
    paths = sorted((demo_data / "test").glob("*/*"))[:50]

    def call(path):
        return endpoint.post(path.read_bytes(), content_type(path))

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(call, paths))
    assert [r.status_code for r in responses] == [200] * 50
    labels = [r.json()["predictions"][0]["label"] for r in responses]
    assert sum(label == p.parent.name for label, p in zip(labels, paths)) >= 0.9 * len(paths)


def test_workers_run_unprivileged_and_the_master_as_root(endpoint):
    processes = subprocess.run(["docker", "top", endpoint.name, "-o", "pid,user,args"],
                               capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    users = [line.split()[1] for line in processes if "serve.server" in line]
    assert users.count("root") == 1 and len(users) >= 2, processes


def test_sigterm_stops_the_server_cleanly_within_seconds(serve_image, demo_job):
    with Endpoint(serve_image, demo_job[0] / "model") as running:
        started = time.perf_counter()
        subprocess.run(["docker", "stop", "-t", "30", running.name], check=True, capture_output=True)
        stopped = time.perf_counter() - started
        code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", running.name],
                              capture_output=True, text=True).stdout.strip()
        log = running.logs()
    assert code == "0" and stopped < 5, (code, stopped, log[-2000:])
    assert "Shutting down: Master" in log


def test_honours_sagemaker_bind_to_port_and_worker_settings(serve_image, demo_job):
    labels = json.loads(subprocess.run(
        ["docker", "inspect", "-f", "{{json .Config.Labels}}", serve_image],
        capture_output=True, text=True, check=True).stdout)
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    env = {"SAGEMAKER_BIND_TO_PORT": "9090", "SAGEMAKER_MODEL_SERVER_WORKERS": "3"}
    with Endpoint(serve_image, demo_job[0] / "model", env) as endpoint:
        log = endpoint.logs()
    assert "3 worker(s)" in log and "on port 9090" in log


def container_names() -> set[str]:
    return set(subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], check=True,
                              capture_output=True, text=True).stdout.split())


def test_a_server_that_never_answers_ends_the_wait_with_its_log(serve_image, demo_job):
    """Listening on another port than the one published: the wait's error carries the log, and
    the container goes (a start that QEMU deadlocked is retried in a fresh one: test_serve_arm64)."""
    endpoint = Endpoint(serve_image, demo_job[0] / "model", {"SAGEMAKER_BIND_TO_PORT": "9090"},
                        start_timeout_s=5)
    endpoint.cmd = [part.replace(":9090", ":8080") for part in endpoint.cmd]
    with pytest.raises(TimeoutError, match=r"(?s)not ready within 5 s; the end of its log:.*"
                                           r"on port 9090"):
        with endpoint:
            pass
    assert endpoint.name not in container_names()


def test_local_endpoint_on_a_taken_port_says_so_in_one_line_and_leaves_no_container(
        serve_image, demo_job, demo_data):
    image = min((demo_data / "test").glob("*/*.jpg"))
    before = container_names()
    with socket.socket() as taken:  # what a developer's own server on 8080 does to the flow
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "scripts.local_endpoint", "--image", serve_image, "--model",
             str(demo_job[0] / "model"), "--port", str(port), str(image)],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: port {port} is taken on this machine") and "--port" in line
    assert container_names() == before


def test_the_cpu_image_carries_onnx_runtime_and_neither_torch_nor_mlflow(serve_image):
    """Training's tracking (mlflow) and the GPU image's PyTorch stay out of the CPU image."""
    probe = ("import importlib.util as u; print(','.join(m for m in ('onnxruntime', 'torch', "
             "'mlflow') if u.find_spec(m)))")
    found = subprocess.run(["docker", "run", "--rm", "--entrypoint", "/opt/venv/bin/python",
                            serve_image, "-c", probe], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert found == "onnxruntime"


def test_a_missing_model_stops_the_container_saying_why(serve_image, tmp_path):
    result = subprocess.run(["docker", "run", "--rm", "-v", f"{tmp_path}:/opt/ml/model:ro",
                             serve_image, "serve"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "cannot serve: no manifest.json in /opt/ml/model" in result.stderr


def test_the_gpu_image_serves_the_same_answers_with_pytorch(docker, demo_job, demo_data,
                                                           serve_image):
    """The PyTorch image (for GPU endpoints) on this CPU against the CPU image in fp32: same
    top-1, probabilities within 1e-4."""
    from tests.container.conftest import build

    with Endpoint(build("serve-gpu"), demo_job[0] / "model") as gpu, Endpoint(
            serve_image, demo_job[0] / "model", {"BYOC_PRECISION": "fp32"}) as endpoint:
        assert requests.get(f"{gpu.url}/ping", timeout=2).json()["model"]["backend"] == "torch"
        assert requests.get(f"{endpoint.url}/ping", timeout=2).json()["model"]["precision"] == (
            "fp32")
        for path in sorted((demo_data / "test").glob("*/*"))[::5]:
            body = path.read_bytes()
            ours = gpu.post(body, content_type(path), **{CUSTOM: "top_k=6"}).json()["predictions"]
            onnx = endpoint.post(body, content_type(path), **{CUSTOM: "top_k=6"}).json()["predictions"]
            assert ours[0]["label"] == onnx[0]["label"], path
            by_label = {p["label"]: p["probability"] for p in onnx}
            for p in ours:
                assert p["probability"] == pytest.approx(by_label[p["label"]], abs=1e-4)
