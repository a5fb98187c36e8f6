"""scripts/sagemaker_pipeline.py run --local: SDK v3's local executor runs the training
job and the evaluation processing job on the real images, reads evaluation.json from S3 (moto's,
through AWS_ENDPOINT_URL_S3) for the condition, and takes both branches."""
from __future__ import annotations

import json
import shutil

import boto3
import pytest

from scripts import sagemaker_pipeline, upload_data
from scripts.local_endpoint import free_port
from tests.conftest import MOTO_REGION, ROOT, moto_environment, required


@pytest.fixture
def local_s3(moto_url, monkeypatch, train_image, serve_image, demo_data):
    if shutil.which("docker-compose") is None:
        required("SageMaker local mode needs docker-compose (apt-get install docker-compose)")
    environment = moto_environment(moto_url)
    environment["AWS_ENDPOINT_URL_S3"] = environment.pop("AWS_ENDPOINT_URL")  # S3 only
    for key, value in {**environment, "IMAGE_PREFIX": "byoc-test",
                       "PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", region_name=MOTO_REGION)
    if "pipeline-demo" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="pipeline-demo",
                         CreateBucketConfiguration={"LocationConstraint": MOTO_REGION})
        upload_data.upload(demo_data, "s3://pipeline-demo/data", s3)
    return s3


def run(*extra: str) -> int:
    return sagemaker_pipeline.main([
        "--local", "run", "--name", "demo", "--data", "s3://pipeline-demo/data",
        "--output", "s3://pipeline-demo/runs",
        "--hyperparameters", str(ROOT / "scripts" / "demo_hyperparameters.json"),
        "--hp", "epochs=4", "--hp", "export_int8=false", "--threshold", "0.5", *extra])


def evaluations(s3) -> list[dict]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pipeline-demo", Prefix="runs/").get(
        "Contents", []) if o["Key"].endswith("evaluation/evaluation.json")]
    return [json.loads(s3.get_object(Bucket="pipeline-demo", Key=k)["Body"].read()) for k in keys]


def test_a_good_model_passes_the_condition_and_a_poor_one_fails_naming_it(local_s3, capsys):
    assert run() == 0
    out = capsys.readouterr().out
    for step in ("Train", "Evaluate", "CheckAccuracy"):
        assert f"{step:<16} Succeeded" in out, out
    assert f"{'CreateModel':<16} Succeeded" in out, out
    [evaluation] = evaluations(local_s3)
    accuracy = evaluation["multiclass_classification_metrics"]["accuracy"]["value"]
    assert accuracy >= 0.5 and evaluation["images"] == 60

    # One epoch, and a threshold no model reaches: the fail step says which figure missed which.
    assert run("--param", "hp_epochs=1", "--param", "AccuracyThreshold=1.01") == 1
    out = capsys.readouterr().out
    assert f"{'AccuracyTooLow':<16} Failed" in out and "CreateModel" not in out, out
    assert "is below AccuracyThreshold 1.01" in out and "test top-1 0." in out
    assert len(evaluations(local_s3)) == 2
