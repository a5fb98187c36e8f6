"""The CPU serving image for Graviton (linux/arm64), run as a SageMaker endpoint runs it, under
emulation (QEMU) on this amd64 machine, on the demo model: its answers are the amd64 image's, in
int8 and in fp32, one image at a time, in a batch transform's JSON lines, and on a multi-model
endpoint. Emulation proves behaviour, never speed: no timing here means anything.

The int8 copy's gate (top-1 agreement with fp32, in the manifest) was measured in training with
the x86 kernels of ONNX Runtime; on arm64 it runs other int8 kernels. Under QEMU the arm64
kernels compute exactly what they compute on a Graviton, so agreeing here with the amd64 image on
every image is the gate's evidence carried over to arm64, for this model and these images.

QEMU's user mode itself deadlocks now and then as a forked process starts (a gunicorn worker as
it loads ONNX Runtime, its threads asleep on QEMU's own locks, not the program's: the class of
bug of astral-sh/uv#6105; one start in 10 to 40 on this machine). What timed out (a
healthy start takes seconds) is tried again in a fresh container, as SageMaker replaces an
instance that fails its health check; three in a row fail the test, with the last one's log. A
hang of our own would repeat every time, and the amd64 image runs the same code natively."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from typing import TypeVar

import pytest
import requests

from scripts.local_endpoint import content_type
from tests.container.test_serve_container import Endpoint

# Each precision asked for by name: which one serves by default is the gate's choice, made on the
# CPU that trained the model.
PRECISIONS = {"int8": {"BYOC_PRECISION": "int8"}, "fp32": {"BYOC_PRECISION": "fp32"}}
EMULATED_START_S, STARTS = 90, 3  # ceilings: a healthy emulated start takes seconds
T = TypeVar("T")


def under_qemu(attempt: Callable[[], T]) -> T:
    """attempt() again, from a fresh container, when QEMU deadlocked it (it timed out)."""
    for tried in range(1, STARTS + 1):
        try:
            return attempt()
        except (TimeoutError, requests.Timeout):
            if tried == STARTS:
                raise
    raise AssertionError("unreachable")


def sample(demo_data) -> list:
    """Two test images of each class, JPEG and PNG among them: every answer is compared."""
    return [path for folder in sorted((demo_data / "test").iterdir())
            for path in sorted(folder.iterdir())[:2]]


def top1(answer: dict) -> str:
    return answer["predictions"][0]["label"]


def answers(image: str, model_dir, images: list, env: dict | None = None) -> dict:
    """What an endpoint of image says about images: the machine it runs on, the precision it
    serves, the top-1 of each image sent alone and of each record of one JSON-lines batch."""
    with Endpoint(image, model_dir, env, EMULATED_START_S) as endpoint:
        machine = subprocess.run(["docker", "exec", endpoint.name, "uname", "-m"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        ping = requests.get(f"{endpoint.url}/ping", timeout=10)
        assert ping.status_code == 200, ping.text
        alone = {}
        for path in images:
            response = endpoint.post(path.read_bytes(), content_type(path))
            assert response.status_code == 200, response.text
            alone[path.name] = top1(response.json())
        lines = "\n".join(json.dumps({"id": path.name, "image": base64.b64encode(
            path.read_bytes()).decode()}) for path in images)
        response = requests.post(f"{endpoint.url}/invocations", data=lines.encode(), timeout=120,
                                 headers={"Content-Type": "application/jsonlines",
                                          "Accept": "application/jsonlines"})
        assert response.status_code == 200, response.text
        batch = {record["id"]: top1(record)
                 for record in map(json.loads, response.text.splitlines())}
    return {"machine": machine, "precision": ping.json()["model"]["precision"], "alone": alone,
            "batch": batch}


def test_the_arm64_image_answers_as_the_amd64_one_in_int8_and_fp32(serve_image, serve_image_arm64,
                                                                    demo_job, demo_data):
    images = sample(demo_data)
    assert {path.suffix for path in images} >= {".jpg", ".png"}
    for precision, env in PRECISIONS.items():
        x86 = answers(serve_image, demo_job[0] / "model", images, env)
        arm = under_qemu(lambda: answers(serve_image_arm64, demo_job[0] / "model", images, env))
        assert (x86["machine"], arm["machine"]) == ("x86_64", "aarch64")
        assert x86["precision"] == arm["precision"] == precision
        assert arm["alone"] == x86["alone"] == arm["batch"] == x86["batch"], precision


def test_the_arm64_image_is_a_multi_model_endpoint_too(serve_image, serve_image_arm64, demo_job,
                                                       demo_data, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(demo_job[0] / "model", models / "demo" / "model")
    images = sample(demo_data)[::4]
    expected = answers(serve_image, demo_job[0] / "model", images)["alone"]

    def served_on_arm64() -> dict:
        with Endpoint(serve_image_arm64, models, {"SAGEMAKER_MULTI_MODEL": "true"},
                      EMULATED_START_S, mount_at="/opt/ml/models") as endpoint:
            loaded = requests.post(f"{endpoint.url}/models", timeout=EMULATED_START_S, json={
                "model_name": "demo", "url": "/opt/ml/models/demo/model"})
            assert loaded.status_code == 200, loaded.text
            answers = {}
            for path in images:
                response = requests.post(f"{endpoint.url}/models/demo/invoke",
                                         data=path.read_bytes(), timeout=60,
                                         headers={"Content-Type": content_type(path)})
                assert response.status_code == 200, response.text
                answers[path.name] = top1(response.json())
            return answers

    assert under_qemu(served_on_arm64) == expected


def test_local_mode_refuses_an_image_of_another_architecture(serve_image_arm64, monkeypatch,
                                                             tmp_path):
    """sagemaker_deploy --local reads the local image's architecture before anything starts."""
    from scripts import sagemaker_deploy

    monkeypatch.setenv("IMAGE_PREFIX", "byoc-test")
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"")
    with pytest.raises(SystemExit, match="byoc-test-serve:latest-arm64 is arm64, but this "
                                         "machine's Docker runs amd64: build it for this "
                                         "machine with docker/build.sh serve"):
        sagemaker_deploy.main(["--local", "--model-data", str(archive),
                               "--image-tag", "latest-arm64"])
