"""The launch scripts in SageMaker local mode (SDK v3, docker compose): train on two instances
with ModelTrainer's local container mode, deploy and predict a JPEG and a PNG through v3's local
engine, delete the endpoint, run a batch transform over a folder of images, and leave no
containers behind."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import tarfile

import pytest

from scripts import (common, sagemaker_batch_transform, sagemaker_cleanup, sagemaker_deploy,
                     sagemaker_invoke, sagemaker_train)
from scripts.local_endpoint import free_port
from scripts.sagemaker_model import ModelSource
from tests.conftest import ROOT, required


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
        required("SageMaker local mode needs docker-compose (apt-get install docker-compose)")
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

    session = common.local_session()
    target = common.Launch(local=True)
    name = sagemaker_deploy.deploy(target, session, ModelSource(model_data=str(model_data)),
                                   "byoc-test-local")
    try:
        jpeg = sorted(demo_data.glob("test/*/*.jpg"))[0]
        png = sorted(demo_data.glob("test/*/*.png"))[0]
        runtime = session.sagemaker_runtime_client
        by_script = sagemaker_invoke.with_boto3(runtime, name, png, top_k=4)
        by_jpeg = sagemaker_invoke.with_boto3(runtime, name, jpeg)
        # The seed's own call shape, unchanged: the content type alone.
        seed = json.loads(runtime.invoke_endpoint(EndpointName=name, ContentType="image/png",
                                                  Body=png.read_bytes())["Body"].read())
    finally:
        deleted = sagemaker_cleanup.delete_endpoint(session, name)
    int8 = json.load(tarfile.open(model_data).extractfile("manifest.json"))["precisions"]["int8"]
    assert by_script["model"] == {"name": "demo-shapes", "version": job_name,
                               "architecture": "resnet18", "backend": "onnx",
                               "precision": "int8" if int8["passed"] else "fp32"}
    assert len(by_script["predictions"]) == 4 and len(by_jpeg["predictions"]) == 3
    assert seed["predictions"] == by_script["predictions"][:3]
    assert deleted[:2] == ["endpoint byoc-test-local", "endpoint config byoc-test-local"]
    assert deleted[2].startswith("model byoc-test-serve")
    assert our_containers() == []


def test_batch_transform_over_a_folder_of_images(local_mode, demo_job, demo_data, phone_photo,
                                                 tmp_path, capsys):
    """MultiRecord over JSON lines, in local mode; a broken file is answered, not fatal, and a
    photo above MaxPayloadInMB (a 200-megapixel 3.4 MB JPEG, 1 MB here) is classified."""
    job, _ = demo_job
    # Local mode unpacks the archive beside itself and mounts that folder: it must be readable
    # by the server's unprivileged workers (pytest's tmp_path is private).
    (tmp_path / "artifact").mkdir(mode=0o755)
    model_data = tmp_path / "artifact" / "model.tar.gz"
    with tarfile.open(model_data, "w:gz") as archive:
        for item in (job / "model").iterdir():
            archive.add(item, arcname=item.name)
    images = shutil.copytree(demo_data / "test", tmp_path / "photos")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (images / "phone.jpg").write_bytes(phone_photo["baseline"])
    output = tmp_path / "transform"
    code = sagemaker_batch_transform.main([
        "--local", "--model-data", str(model_data), "--images", str(images),
        "--output", str(output), "--records-per-file", "25", "--max-payload-mb", "1"])
    assert code == 0
    rows = list(csv.DictReader((output / "predictions.csv").open()))
    assert len(rows) == 62 and len(list((output / "input").glob("*.jsonl"))) == 3
    broken = next(r for r in rows if r["file"] == "broken.jpg")
    assert broken["label"] == "" and "not an image" in broken["error"]
    phone = next(r for r in rows if r["file"] == "phone.jpg")
    assert phone["label"] and not phone["error"] and "above the payload limit" in phone["note"]
    classified = [r for r in rows if r["file"] not in ("broken.jpg", "phone.jpg")]
    assert all(r["error"] == "" and r["label"] for r in classified)
    right = sum(r["label"] == r["file"].split("/")[0] for r in classified)
    assert right >= 0.9 * len(classified)  # the demo model's test accuracy is >= 95%
    assert "61 images classified, 1 failed" in capsys.readouterr().out
    assert our_containers() == []
