"""Container tests build and run the real images. Without Docker they skip, except under CI
(CI=true), where a missing Docker daemon is an error: CI must never pass by skipping them."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.local_endpoint import free_port
from scripts.make_demo_data import generate
from tests.conftest import ROOT, required


def docker_available() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/container/" in str(item.fspath):
            item.add_marker(pytest.mark.container)


@pytest.fixture(scope="session")
def docker():
    if not docker_available():
        required("no Docker daemon: container tests need `docker info` to work")


def build(target: str, platform: str | None = None) -> str:
    """Build an image with docker/build.sh (BASE_IMAGE etc. from the environment): for this
    machine's Docker, as local runs do, or for platform (tagged latest-<architecture>)."""
    tag = f"latest-{platform.split('/')[1]}" if platform else "latest"
    env = {**os.environ, "IMAGE_PREFIX": "byoc-test", "TAG": tag}
    env.pop("DOCKER_DEFAULT_PLATFORM", None)
    if platform:
        env["PLATFORM"] = platform
    result = subprocess.run([str(ROOT / "docker" / "build.sh"), target], env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return f"byoc-test-{target}:{tag}"


def emulation_ready() -> str | None:
    """Why arm64 containers cannot run on this amd64 machine, or None when QEMU runs them."""
    probe = subprocess.run(["docker", "run", "--rm", "--platform", "linux/arm64",
                            os.environ.get("BASE_IMAGE_ARM64", "python:3.11-slim"), "uname", "-m"],
                           capture_output=True, text=True)
    if probe.stdout.strip() == "aarch64":
        return None
    return ("arm64 containers do not run here (apt-get install qemu-user-static binfmt-support, "
            f"see .ci/run): {probe.stderr.strip()[-300:]}")


@pytest.fixture(scope="session")
def train_image(docker) -> str:
    return build("train")


@pytest.fixture(scope="session")
def serve_image(docker) -> str:
    return build("serve")


@pytest.fixture(scope="session")
def serve_image_arm64(docker) -> str:
    """The CPU serving image for Graviton, built once under emulation (QEMU)."""
    reason = emulation_ready()
    if reason:
        required(reason)
    return build("serve", "linux/arm64")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("demo") / "data")


@dataclass(frozen=True)
class Flow:
    work: Path  # --work: the job, its log (train.log) and the MLflow store
    output: str  # what the newcomer reads
    mlflow_port: int


@pytest.fixture(scope="session")
def local_flow(train_image, serve_image, demo_data, tmp_path_factory) -> Flow:
    """The README's first command, scripts/run_local_flow.sh, run once as a newcomer runs it: on
    the demo data (made here as the flow makes it), in a folder of its own and on free ports."""
    work = tmp_path_factory.mktemp("local-flow")
    mlflow_port = free_port()
    result = subprocess.run(
        [str(ROOT / "scripts" / "run_local_flow.sh"), "--data", str(demo_data),
         "--work", str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PORT": str(free_port()), "MLFLOW_PORT": str(mlflow_port)})
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return Flow(work, result.stdout, mlflow_port)


@pytest.fixture(scope="session")
def demo_job(local_flow):
    """The README's demo training job, as the flow ran it in the training container: a job of an
    account opened today (no SageMaker Debugger hook), recorded in MLflow: (job dir, its log)."""
    return local_flow.work / "job", (local_flow.work / "train.log").read_text()


BUILDKIT_BRIDGE = "byoc-buildkit0"


@pytest.fixture(scope="session")
def buildkit_docker(docker, tmp_path_factory) -> dict[str, str]:
    """A second Docker daemon, as Docker Desktop and Docker Engine 29 build and push: BuildKit
    (buildx) and the containerd image store, with their default provenance attestations
    (tests/container/buildkit_docker.sh unpacks Debian trixie's). It runs beside this machine's
    daemon on a socket, a bridge and folders of its own (given `--bridge none`, dockerd would
    delete the other daemon's docker0). What it yields: the environment in which `docker` is
    its CLI, with buildx, talking to it."""
    if os.geteuid() != 0:
        required("a second Docker daemon needs root")
    unpacked = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "byoc-tests" / \
        "buildkit-docker"
    fetched = subprocess.run([str(ROOT / "tests" / "container" / "buildkit_docker.sh"),
                              str(unpacked)], capture_output=True, text=True, timeout=900)
    if fetched.returncode != 0:
        required(f"Debian trixie's Docker could not be unpacked: {fetched.stderr[-2000:]}")
    run = tmp_path_factory.mktemp("bk")
    (run / "daemon.json").write_text('{"features": {"containerd-snapshotter": true}}')
    subprocess.run(["ip", "link", "add", BUILDKIT_BRIDGE, "type", "bridge"], capture_output=True)
    subprocess.run(["ip", "addr", "add", "10.213.77.1/24", "dev", BUILDKIT_BRIDGE],
                   capture_output=True)
    subprocess.run(["ip", "link", "set", BUILDKIT_BRIDGE, "up"], check=True)
    # trixie's binaries first, then bookworm's runc (trixie's needs a newer libc)
    path = f"{unpacked / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"
    started = []
    for command in (
            [str(unpacked / "bin" / "containerd"), "--address", str(run / "containerd.sock"),
             "--root", str(run / "containerd"), "--state", str(run / "containerd-state")],
            [str(unpacked / "bin" / "dockerd"), "--containerd", str(run / "containerd.sock"),
             "--data-root", str(run / "data"), "--exec-root", str(run / "exec"),
             "--pidfile", str(run / "docker.pid"), "-H", f"unix://{run / 'docker.sock'}",
             "--bridge", BUILDKIT_BRIDGE, "--iptables=false", "--ip6tables=false",
             "--ip-forward=false", "--ip-masq=false", "--config-file", str(run / "daemon.json")]):
        log = open(run / f"{Path(command[0]).name}.log", "w")
        started.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PATH": path},
                                        start_new_session=True))
        time.sleep(1)
    env = {**os.environ, "DOCKER_HOST": f"unix://{run / 'docker.sock'}",
           "DOCKER_CONFIG": str(unpacked / "config"), "PATH": f"{unpacked / 'bin'}:{os.environ['PATH']}"}
    env.pop("DOCKER_DEFAULT_PLATFORM", None)
    try:
        for _ in range(60):
            info = subprocess.run(["docker", "info", "-f", "{{.DriverStatus}}"], env=env,
                                  capture_output=True, text=True)
            if info.returncode == 0:
                break
            time.sleep(0.5)
        assert "io.containerd.snapshotter" in info.stdout, (
            info.stderr + (run / "dockerd.log").read_text()[-3000:])
        yield env
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(timeout=60)
        subprocess.run(["ip", "link", "del", BUILDKIT_BRIDGE], capture_output=True)
