"""The launch scripts in SageMaker local mode (SDK v2, docker-compose): train on two instances,
deploy, predict a JPEG and a PNG with the SDK's Predictor and with boto3, delete the endpoint,
and leave no containers behind."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tarfile

import pytest

from scripts import common, sagemaker_cleanup, sagemaker_deploy, sagemaker_invoke, sagemaker_train
from scripts.local_endpoint import free_port
from tests.conftest import ROOT


def our_containers() -> list[str]:
    names = []
    for target in ("train", "serve"):
        names += subprocess.run(
            ["docker", "ps", "-a", "--format", "{{.Names}}", "--filter",
             "label=com.docker.compose.project", "--filter", f"ancestor=byoc-test-{target}:latest"],
            capture_output=True, text=True, check=True).stdout.split()
    return names


@pytest.fixture
def local_mode(monkeypatch, train_image, serve_image):
    if shutil.which("docker-compose") is None:
        message = "SageMaker local mode needs docker-compose (apt-get install docker-compose)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv("IMAGE_PREFIX", "byoc-test")
    monkeypatch.setenv("PORT", str(free_port()))
    assert our_containers() == []


def test_train_on_two_instances_deploy_predict_and_delete(local_mode, demo_data, tmp_path, capsys):
    output = tmp_path / "output"
    code = sagemaker_train.main([
        "--local", "--data", str(demo_data), "--output", str(output), "--instance-count", "2",
        "--hyperparameters", str(ROOT / "scripts" / "demo_hyperparameters.json"),
        "--hp", "epochs=3", "--hp", "image_size=48"])
    assert code == 0
    printed = capsys.readouterr().out
    job_name = printed.split("training job: ")[1].split()[0]
    model_data = output / "model.tar.gz"
    assert f"model: file://{model_data}" in printed
    with tarfile.open(model_data) as archive:
        assert {"manifest.json", "model.safetensors", "model.onnx"} <= set(archive.getnames())
    assert our_containers() == []  # the two training containers are gone

    args = argparse.Namespace(
        local=True, region=None, role=None, image_tag="latest", model_data=str(model_data),
        endpoint_name="byoc-test-local", instance_type="local", instance_count=1, gpu=False,
        serverless=False, memory_mb=0, max_concurrency=0, autoscale_max=0,
        invocations_per_instance=100)
    session = common.local_session()
    predictor = sagemaker_deploy.deploy(args, session)
    try:
        jpeg = sorted(demo_data.glob("test/*/*.jpg"))[0]
        png = sorted(demo_data.glob("test/*/*.png"))[0]
        by_sdk = sagemaker_invoke.with_predictor(predictor, png, top_k=4)
        by_boto3 = sagemaker_invoke.with_boto3(session.sagemaker_runtime_client,
                                               "byoc-test-local", jpeg)
        # The seed's own call shapes, unchanged.
        seed_sdk = predictor.predict(png.read_bytes(), initial_args={"ContentType": "image/png"})
    finally:
        deleted = sagemaker_cleanup.delete_endpoint(session, "byoc-test-local")
    assert by_sdk["model"] == {"name": "demo-shapes", "version": job_name,
                               "architecture": "resnet18", "backend": "onnx"}
    assert len(by_sdk["predictions"]) == 4 and len(by_boto3["predictions"]) == 3
    assert seed_sdk["predictions"] == by_sdk["predictions"][:3]
    assert deleted[:2] == ["endpoint byoc-test-local", "endpoint config byoc-test-local"]
    assert deleted[2].startswith("model byoc-test-serve")
    assert our_containers() == []
