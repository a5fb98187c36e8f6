"""The CPU serving image for Graviton (linux/arm64), run as a SageMaker endpoint runs it, under
emulation (QEMU) on this amd64 machine, on the demo model: its answers are the amd64 image's, in
int8 and in fp32, one image at a time, in a batch transform's JSON lines, and on a multi-model
endpoint. Emulation proves behaviour, never speed: no timing here means anything.

The int8 copy's gate (top-1 agreement with fp32, in the manifest) was measured in training with
the x86 kernels of ONNX Runtime; on arm64 it runs other int8 kernels. Under QEMU the arm64
kernels compute exactly what they compute on a Graviton, so agreeing here with the amd64 image on
every image is the gate's evidence carried over to arm64, for this model and these images."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest
import requests

from scripts.local_endpoint import content_type, docker_command, free_port, wait_until_healthy
from tests.container.test_serve_container import Endpoint

PRECISIONS = {"int8": {}, "fp32": {"BYOC_PRECISION": "fp32"}}


def sample(demo_data) -> list:
    """Two test images of each class, JPEG and PNG among them: every answer is compared."""
    return [path for folder in sorted((demo_data / "test").iterdir())
            for path in sorted(folder.iterdir())[:2]]


def top1(answer: dict) -> str:
    return answer["predictions"][0]["label"]


def answers(image: str, model_dir, images: list, env: dict | None = None) -> dict:
    """What an endpoint of image says about images: the machine it runs on, the precision it
    serves, the top-1 of each image sent alone and of each record of one JSON-lines batch."""
    with Endpoint(image, model_dir, env) as endpoint:
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
        arm = answers(serve_image_arm64, demo_job[0] / "model", images, env)
        assert (x86["machine"], arm["machine"]) == ("x86_64", "aarch64")
        assert x86["precision"] == arm["precision"] == precision
        assert arm["alone"] == x86["alone"] == arm["batch"] == x86["batch"], precision


def test_the_arm64_image_is_a_multi_model_endpoint_too(serve_image, serve_image_arm64, demo_job,
                                                       demo_data, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(demo_job[0] / "model", models / "demo" / "model")
    images = sample(demo_data)[::4]
    expected = answers(serve_image, demo_job[0] / "model", images)["alone"]
    name, port = f"byoc-test-mme-arm64-{free_port()}", free_port()
    subprocess.run(docker_command(serve_image_arm64, models, port, name,
                                  {"SAGEMAKER_MULTI_MODEL": "true"},
                                  mount_at="/opt/ml/models"), check=True, capture_output=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, name, timeout=180)
        loaded = requests.post(f"{url}/models", timeout=120, json={
            "model_name": "demo", "url": "/opt/ml/models/demo/model"})
        assert loaded.status_code == 200, loaded.text
        for path in images:
            response = requests.post(f"{url}/models/demo/invoke", data=path.read_bytes(),
                                     headers={"Content-Type": content_type(path)}, timeout=60)
            assert response.status_code == 200, response.text
            assert top1(response.json()) == expected[path.name]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


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
