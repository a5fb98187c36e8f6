"""scripts/sagemaker_monitor.py run --local: the drift monitor's pipeline, executed offline by the
SDK's LocalPipelineSession on the real training image, over captured traffic of the demo model
(moto's S3 holds the capture, the model.tar.gz and the reports): unchanged traffic raises no
violation, shifted traffic does."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from scripts import sagemaker_monitor
from tests.container.test_pipeline_local import local_s3  # noqa: F401 (a fixture)
from tests.unit.test_monitor import capture_traffic


@pytest.fixture
def drift_bucket(local_s3, demo_job, demo_data, tmp_path):  # noqa: F811
    """s3://monitor-demo: the demo model's model.tar.gz, and its capture of an hour (10:00 on
    2026-12-01) of unchanged and of shifted traffic, answered by the real server."""
    from PIL import Image, ImageEnhance

    from serve.app import create_app
    from serve.predictor import load_predictor
    from serve.settings import Settings

    model = demo_job[0] / "model"
    s3 = local_s3
    if "monitor-demo" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="monitor-demo",
                         CreateBucketConfiguration={"LocationConstraint": s3.meta.region_name})
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for path in model.iterdir():
            tar.add(path, arcname=path.name)
    s3.put_object(Bucket="monitor-demo", Key="model.tar.gz", Body=archive.getvalue())
    client = create_app(Settings(model_dir=model),
                        predictor=load_predictor(model, "onnx")).test_client()
    tests = sorted((demo_data / "test").glob("*/*"))
    unchanged = [(p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg")
                 for p in tests]
    shifted = []
    # Two classes of six, darker and turned: 40 images, so that the shift in predicted classes
    # is past doubt whatever the model makes of them (20 left it at the threshold)
    for path in tests + sorted((demo_data / "valid").glob("*/*")):
        if path.parent.name in ("001.Red_disc", "002.Green_square"):
            with Image.open(path) as image:
                darker = ImageEnhance.Brightness(image.convert("RGB")).enhance(0.5)
                buffer = io.BytesIO()
                darker.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=90)
                shifted.append((buffer.getvalue(), "image/jpeg"))
    for name, bodies in (("unchanged", unchanged), ("shifted", shifted)):
        folder = capture_traffic(client, bodies, tmp_path / name)
        for path in folder.rglob("*.jsonl"):
            s3.upload_file(str(path), "monitor-demo",
                           f"capture/{name}/{path.relative_to(folder).as_posix()}")
    return s3


def run(traffic: str) -> int:
    return sagemaker_monitor.main([
        "--local", "run", "--endpoint-name", "dogs",
        "--capture", f"s3://monitor-demo/capture/{traffic}/dogs",
        "--model-data", "s3://monitor-demo/model.tar.gz",
        "--output", f"s3://monitor-demo/monitoring/{traffic}",
        # The hour before 11:00, as an execution started at 11:10 compares (the schedule's
        # start time would be this machine's clock: the capture is of a fixed hour).
        "--param", "WindowEnd=2026-12-01T11:10:00Z"])


def drift(s3, traffic: str) -> dict:
    [key] = [o["Key"] for o in s3.list_objects_v2(
        Bucket="monitor-demo", Prefix=f"monitoring/{traffic}/")["Contents"]
        if o["Key"].endswith("/drift.json")]
    return json.loads(s3.get_object(Bucket="monitor-demo", Key=key)["Body"].read())


def test_the_local_pipeline_judges_unchanged_and_shifted_traffic(drift_bucket, capsys):
    assert run("unchanged") == 0, capsys.readouterr().out
    assert "DriftMonitor Succeeded" in capsys.readouterr().out
    unchanged = drift(drift_bucket, "unchanged")
    assert unchanged["images"] == 60 and unchanged["violations"] == []

    assert run("shifted") == 0, capsys.readouterr().out
    shifted = drift(drift_bucket, "shifted")
    violated = {v["feature_name"] for v in shifted["violations"]}
    assert {"predicted_class", "brightness"} <= violated
