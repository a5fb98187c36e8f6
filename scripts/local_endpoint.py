"""Run the serving image exactly as a SageMaker endpoint runs it, and classify images through it.

    python -m scripts.local_endpoint --image byoc-serve:latest --model local_run/job/model \
        demo_data/test/001.Red_disc/Red_disc_0000.png photo.jpg

Mounts the model folder read-only at /opt/ml/model (where SageMaker unpacks model.tar.gz), runs
`docker run ... IMAGE serve` with port 8080 published, waits for GET /ping, POSTs each image's
raw bytes to /invocations with its Content-Type, prints the top-k and the timings, and removes
the container.
"""
from __future__ import annotations

import argparse
import mimetypes
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from artifact.content_types import ANY_IMAGE_TYPE, JSON_TYPE


def free_port() -> int:
    """A TCP port nothing listens on now, for a container or server started next."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker_command(image: str, model_dir: Path, port: int, name: str,
                   env: dict[str, str] | None = None, container_port: int = 8080,
                   mount_at: str = "/opt/ml/model") -> list[str]:
    """container_port: where the server listens inside (SAGEMAKER_BIND_TO_PORT, default 8080);
    mount_at: /opt/ml/models for a multi-model endpoint's folder of models."""
    cmd = ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{container_port}",
           "-v", f"{model_dir.resolve()}:{mount_at}:ro"]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    return cmd + [image, "serve"]


def wait_for_http(url: str, timeout: float = 240,
                  ready: Callable[[requests.Response], bool] = lambda r: r.status_code == 200,
                  stopped: Callable[[], str | None] = lambda: None) -> float:
    """Seconds until GET url gives a ready answer. stopped() says why the server is gone (or
    None while it runs), which ends the wait at once; past the timeout, TimeoutError."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if ready(requests.get(url, timeout=2)):
                return time.perf_counter() - started
        except requests.RequestException:
            pass
        reason = stopped()
        if reason is not None:
            raise RuntimeError(reason)
        time.sleep(0.05)
    raise TimeoutError(f"{url} was not ready within {timeout:.0f} s")


def container_log(container: str, lines: int = 60) -> str:
    logs = subprocess.run(["docker", "logs", "--tail", str(lines), container],
                          capture_output=True, text=True)
    return logs.stdout + logs.stderr


def container_stopped(container: str) -> str | None:
    """None while the container runs; else its log."""
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container],
                           capture_output=True, text=True).stdout.strip()
    if state == "true":
        return None
    return f"the serving container stopped:\n{container_log(container)}"


def wait_until_healthy(url: str, container: str, timeout: float = 240) -> float:
    """Seconds until GET /ping answered 200 (SageMaker allows 4 minutes); fails if the container
    exits, or, past the timeout, with the end of its log."""
    try:
        return wait_for_http(f"{url}/ping", timeout,
                             stopped=lambda: container_stopped(container))
    except TimeoutError as e:
        raise TimeoutError(f"{e}; the end of its log:\n{container_log(container)}") from None


def content_type(path: Path) -> str:
    guessed = mimetypes.guess_type(path.name)[0]
    return guessed if guessed and guessed.startswith("image/") else ANY_IMAGE_TYPE


def classify(url: str, path: Path, top_k: int = 3) -> tuple[dict, float]:
    """The endpoint's JSON answer for one image file, and the round trip in seconds."""
    started = time.perf_counter()
    response = requests.post(
        f"{url}/invocations", data=path.read_bytes(), timeout=60,
        headers={"Content-Type": content_type(path), "Accept": JSON_TYPE,
                 "X-Amzn-SageMaker-Custom-Attributes": f"top_k={top_k}"})
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.text.strip()}")
    return response.json(), elapsed


def start_container(command: list[str], port: int) -> None:
    """`docker run -d`; RuntimeError with Docker's reason when it fails (a container it created
    but could not start is left for the caller to remove)."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        return
    # Docker's first line says why ("docker: Error response from daemon: ..."), then how to get help
    reason = (result.stderr.strip().splitlines() or ["no reason given"])[0].removeprefix("docker: ")
    if "already allocated" in reason or "address already in use" in reason:
        raise RuntimeError(f"port {port} is taken on this machine ({reason}): --port picks "
                           "another (PORT=... for scripts/run_local_flow.sh)")
    raise RuntimeError(f"docker could not start the serving container: {reason}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="byoc-serve:latest")
    parser.add_argument("--model", required=True, type=Path, help="a model folder written by train/")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args()
    for path in [args.model / "manifest.json", *args.images]:
        if not path.is_file():
            parser.error(f"{path} is not a file")

    name = f"byoc-endpoint-{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:{args.port}"
    started = time.perf_counter()
    try:
        start_container(docker_command(args.image, args.model, args.port, name), args.port)
        ready = wait_until_healthy(url, name)
        print(f"endpoint healthy {ready:.2f} s after `docker run` "
              f"({time.perf_counter() - started:.2f} s with container creation)")
        for path in args.images:
            answer, elapsed = classify(url, path, args.top_k)
            print(f"{path} ({content_type(path)}, {path.stat().st_size // 1024} kB): "
                  f"{elapsed * 1000:.0f} ms")
            for p in answer["predictions"]:
                print(f"    {p['probability']:7.2%}  {p['label']}")
        stopping = time.perf_counter()
        subprocess.run(["docker", "stop", name], check=True, stdout=subprocess.DEVNULL)
        print(f"stopped by SIGTERM in {time.perf_counter() - stopping:.2f} s")
    except (RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
