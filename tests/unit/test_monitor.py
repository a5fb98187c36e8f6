"""The drift monitor on traffic captured from the real server (serve.app in-process, on a model a
real training run wrote with its baseline): unchanged traffic raises nothing, shifted traffic
(other classes, darker, rotated) is named; bad captures are counted and skipped."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from artifact import baseline
from monitor import capture, profile
from monitor.run import MonitorError, monitor
from scripts.make_demo_data import generate
from tests.conftest import ROOT, rendered_dom, tiny_args


@pytest.fixture(scope="module")
def drift_data(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("drift") / "data", {"train": 8, "valid": 25, "test": 25})


@pytest.fixture(scope="module")
def model(drift_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("drift-model")
    cmd = [sys.executable, "-m", "train.train", "--data-dir", str(drift_data), "--output-root",
           str(out), "--cache-dir", str(out / "cache"),
           *tiny_args(epochs=4, model_name="drift-shapes", export_int8="false")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "drift baseline of 150 validation images written" in result.stdout + result.stderr
    return out / "model"


@pytest.fixture(scope="module")
def client(model):
    from serve.app import create_app
    from serve.predictor import load_predictor
    from serve.settings import Settings

    return create_app(Settings(model_dir=model), predictor=load_predictor(model, "onnx")).test_client()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def capture_traffic(client, bodies: list[tuple[bytes, str]], folder: Path, hour="10") -> Path:
    """Each body through the server, written as SageMaker's data capture writes it."""
    lines = []
    for i, (body, kind) in enumerate(bodies):
        answer = client.post("/invocations", data=body, content_type=kind)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        lines.append(json.dumps(capture.record(body, kind, answer.get_data(), "application/json",
                                               f"2026-12-01T{hour}:{i % 60:02d}:00Z", f"e{i}")))
    path = folder / "dogs" / "AllTraffic" / "2026" / "12" / "01" / hour / "part-0.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return folder


def split_images(drift_data, classes=None):
    paths = sorted((drift_data / "test").glob("*/*"))
    return [p for p in paths if classes is None or p.parent.name in classes]


@pytest.fixture(scope="module")
def unchanged(client, drift_data, tmp_path_factory):
    """The test split as it is: the same distribution the validation images come from."""
    bodies = [(p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg")
              for p in split_images(drift_data)]
    return capture_traffic(client, bodies, tmp_path_factory.mktemp("unchanged"))


def shifted_bodies(drift_data) -> list[tuple[bytes, str]]:
    """Two of the six classes only, half as bright, turned a quarter."""
    bodies = []
    for path in split_images(drift_data, {"001.Red_disc", "002.Green_square"}):
        with Image.open(path) as image:
            darker = ImageEnhance.Brightness(image.convert("RGB")).enhance(0.5)
            bodies.append((jpeg(darker.transpose(Image.Transpose.ROTATE_90)), "image/jpeg"))
    return bodies


def test_unchanged_traffic_raises_no_violation(unchanged, model, tmp_path):
    summary = monitor(str(unchanged), str(model), tmp_path)
    assert summary["images"] == 150 and summary["skipped"]["total"] == 0
    assert summary["violations"] == [], summary["checks"]
    assert {c["feature_name"] for c in summary["checks"]} == {*baseline.STATISTICS, "predicted_class"}
    assert json.loads((tmp_path / "constraint_violations.json").read_text()) == {"violations": []}
    statistics = json.loads((tmp_path / "statistics.json").read_text())
    assert statistics["dataset"]["item_count"] == 150
    assert {f["name"] for f in statistics["features"]} == set(baseline.STATISTICS)


def test_shifted_traffic_names_what_moved(client, drift_data, model, tmp_path):
    folder = capture_traffic(client, shifted_bodies(drift_data), tmp_path / "capture")
    summary = monitor(str(folder), str(model), tmp_path / "out")
    named = {v["feature_name"] for v in summary["violations"]}
    # (The demo's sizes are as often portrait as landscape: a quarter turn leaves them alike.)
    assert {"predicted_class", "brightness", "red", "green", "blue", "feature_distance"} <= named, (
        summary["checks"])
    brightness = next(v for v in summary["violations"] if v["feature_name"] == "brightness")
    assert "mean luma" in brightness["description"] and "KS distance" in brightness["description"]
    on_file = json.loads((tmp_path / "out" / "constraint_violations.json").read_text())
    assert {v["feature_name"] for v in on_file["violations"]} == named
    assert all(v["constraint_check_type"] == "baseline_drift_check" for v in on_file["violations"])


def test_the_report_renders_its_plots_in_a_browser(client, drift_data, model, tmp_path):
    folder = capture_traffic(client, shifted_bodies(drift_data), tmp_path / "capture")
    monitor(str(folder), str(model), tmp_path / "out")
    dom = rendered_dom((tmp_path / "out" / "drift_report.html").as_uri(), tmp_path / "profile")
    checks = len(baseline.STATISTICS) + 1
    assert f'data-plots-loaded="{checks}"' in dom
    assert 'id="plot-predicted_class"' in dom and "VIOLATION" in dom


def test_bad_records_are_counted_and_skipped(unchanged, model, tmp_path):
    folder = Path(shutil.copytree(unchanged, tmp_path / "capture"))
    [part] = folder.rglob("*.jsonl")
    good = part.read_text().splitlines()
    not_an_image = capture.record(b"not an image", "image/jpeg", b'{"predictions": []}',
                                  "application/json", "2026-12-01T10:59:00Z", "bad-image")
    csv = capture.record(b"1,2,3", "text/csv", b"{}", "application/json", "2026-12-01T10:59:00Z",
                         "csv")
    part.write_text("\n".join(good + ["{not json", json.dumps({"hello": 1}), json.dumps(csv),
                                      json.dumps(not_an_image)]) + "\n")
    summary = monitor(str(folder), str(model), tmp_path / "out")
    assert summary["images"] == 150 and summary["skipped"]["total"] == 4
    reasons = " | ".join(summary["skipped"]["reasons"])
    assert "unreadable record (not JSON)" in reasons and "no captureData" in reasons
    assert "text/csv is not one the server takes" in reasons and "not a readable image" in reasons


def test_another_models_capture_is_refused_naming_both(unchanged, model, tmp_path):
    folder = Path(shutil.copytree(unchanged, tmp_path / "capture"))
    [part] = folder.rglob("*.jsonl")
    part.write_text(part.read_text().replace('\\"name\\": \\"drift-shapes\\"',
                                             '\\"name\\": \\"cats\\"'))
    with pytest.raises(MonitorError, match="holds no image.*150 answered by model cats"):
        monitor(str(folder), str(model), tmp_path / "out")


def test_an_empty_window_and_a_missing_capture_say_so(unchanged, model, tmp_path):
    with pytest.raises(MonitorError, match="holds no image to compare.*from 2026-12-02"):
        monitor(str(unchanged), str(model), tmp_path / "a", since="2026-12-02T00:00:00Z")
    with pytest.raises(MonitorError, match="does not exist"):
        monitor(str(tmp_path / "nowhere"), str(model), tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MonitorError, match="no .jsonl capture file"):
        monitor(str(tmp_path / "empty"), str(model), tmp_path / "c")


def test_a_baseline_of_another_model_version_is_refused(unchanged, model, tmp_path):
    other = Path(shutil.copytree(model, tmp_path / "model"))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["version"] = "retrained"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MonitorError, match="baseline was made by model drift-shapes version .* "
                                           "but the model is drift-shapes version retrained"):
        monitor(str(unchanged), str(other), tmp_path / "out")


def test_ks_distance_against_quantiles():
    """Against scipy-free known values: a sample of the baseline itself is close, a shifted one
    is as far as the shift makes it."""
    rng = np.random.default_rng(0)
    quantiles = np.quantile(rng.normal(size=20000), baseline.QUANTILES)
    assert profile.ks_distance(quantiles, rng.normal(size=2000)) < 0.05
    # N(0.5, 1) against N(0, 1): the CDFs differ most at 0.25, by 2 * Phi(0.25) - 1 = 0.197.
    assert profile.ks_distance(quantiles, rng.normal(0.5, size=20000)) == pytest.approx(0.197, abs=0.02)
    constant = np.full(101, 500.0)  # every validation image 500 pixels wide
    assert profile.ks_distance(constant, np.full(50, 500.0)) == 0.0
    assert profile.ks_distance(constant, np.full(50, 700.0)) == 1.0


def test_run_as_a_monitoring_schedule_runs_it(unchanged, model, tmp_path):
    """No arguments: Model Monitor's environment says where the capture, the output and the
    window are, BYOC_MODEL_DATA which model; a failure goes to the processing job's message."""
    import os
    import tarfile

    from monitor import run

    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as archive:
        for path in model.iterdir():
            archive.add(path, arcname=path.name)
    env = {**os.environ, "dataset_source": str(unchanged), "output_path": str(tmp_path / "out"),
           "start_time": "2026-12-01T10:00:00Z", "end_time": "2026-12-01T11:00:00Z",
           "sagemaker_endpoint_name": "dogs", "BYOC_MODEL_DATA": str(tmp_path / "model.tar.gz"),
           "publish_cloudwatch_metrics": "Disabled"}
    result = subprocess.run([sys.executable, "-m", "monitor.run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stderr  # progress as plain lines in a job's log
    for name in ("drift.json", "constraint_violations.json", "statistics.json",
                 "drift_report.html"):
        assert (tmp_path / "out" / name).is_file(), name
    assert not run.CLOUDWATCH_METRICS.exists()  # publish_cloudwatch_metrics=Disabled
    assert json.loads((tmp_path / "out" / "drift.json").read_text())["images"] == 150

    env["start_time"] = "2026-12-02T10:00:00Z"  # an hour with no traffic
    result = subprocess.run([sys.executable, "-m", "monitor.run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "holds no image to compare" in result.stderr


def test_metrics_for_cloudwatch_when_the_schedule_publishes_them(client, drift_data, model,
                                                                 tmp_path, monkeypatch):
    """publish_cloudwatch_metrics=Enabled: a datum per line in Model Monitor's format, with the
    endpoint and schedule as dimensions; Disabled (the test above): no file."""
    from monitor import run

    folder = capture_traffic(client, shifted_bodies(drift_data), tmp_path / "capture")
    metrics_file = tmp_path / "metrics" / "cloudwatch" / "cloudwatch_metrics.jsonl"
    monkeypatch.setattr(run, "CLOUDWATCH_METRICS", metrics_file)
    for key, value in {"dataset_source": str(folder), "output_path": str(tmp_path / "out"),
                       "BYOC_MODEL_DATA": str(model), "sagemaker_endpoint_name": "dogs",
                       "sagemaker_monitoring_schedule_name": "dogs-image-drift",
                       "end_time": "2026-12-01T11:00:00Z",
                       "publish_cloudwatch_metrics": "Enabled"}.items():
        monkeypatch.setenv(key, value)
    assert run.main([]) == 0
    data = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    by_name = {d["MetricName"]: d for d in data}
    summary = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert by_name["images_compared"]["Value"] == summary["images"] > 0
    assert by_name["violations"]["Value"] == len(summary["violations"]) > 0
    assert by_name["feature_baseline_drift_brightness"]["Value"] == 1.0
    assert len(data) == 2 + len(summary["checks"])
    for datum in data:
        assert datum["Timestamp"] == "2026-12-01T11:00:00Z"
        assert datum["Dimensions"] == [{"Name": "Endpoint", "Value": "dogs"},
                                       {"Name": "MonitoringSchedule", "Value": "dogs-image-drift"}]
        assert set(datum) == {"MetricName", "Timestamp", "Dimensions", "Value", "Unit"}


def test_reads_the_capture_from_s3(aws, unchanged, model, tmp_path):
    """The same capture under an s3:// prefix (moto's S3), listed across pages."""
    s3 = aws.client("s3")
    for path in unchanged.rglob("*.jsonl"):
        s3.upload_file(str(path), "data", f"capture/{path.relative_to(unchanged)}")
    summary = monitor("s3://data/capture", str(model), tmp_path)
    assert summary["images"] == 150 and summary["violations"] == []


# AWS's documented capture record (Model Monitor's "view collected data" example, a CSV model),
# and the same layout carrying a JPEG and this server's answer, as SageMaker writes them: one
# JSON object per line, the response type with a charset, inferenceId in the metadata.
AWS_EXAMPLE = ('{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT",'
               '"data":"69,0,153.7,109,194.0,105,256.1,114,14.1,6,2.6,0,0,0,0,0,0,1,0,1,0,0,0",'
               '"encoding":"CSV"},"endpointOutput":{"observedContentType":"text/csv; charset='
               'utf-8","mode":"OUTPUT","data":"0.0254181120544672","encoding":"CSV"}},'
               '"eventMetadata":{"eventId":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","inferenceId":'
               '"0","inferenceTime":"2019-11-22T08:24:40Z"},"eventVersion":"0"}')


def test_records_in_awss_documented_layout(tmp_path):
    import base64

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "JPEG")
    answer = {"model": {"name": "m", "version": "1"},
              "predictions": [{"label": "x", "index": 4, "probability": 0.75}]}
    image_line = json.loads(AWS_EXAMPLE)
    image_line["captureData"] = {
        "endpointInput": {"observedContentType": "image/jpeg", "mode": "INPUT",
                          "data": base64.b64encode(buffer.getvalue()).decode(),
                          "encoding": "BASE64"},
        "endpointOutput": {"observedContentType": "application/json; charset=utf-8",
                           "mode": "OUTPUT", "data": json.dumps(answer), "encoding": "JSON"}}
    hour = tmp_path / "dogs" / "AllTraffic" / "2019" / "11" / "22" / "08"
    hour.mkdir(parents=True)
    (hour / "08-24-40-000-aaaa.jsonl").write_text(AWS_EXAMPLE + "\n" + json.dumps(image_line) + "\n")
    skipped = capture.Skipped()
    [request] = list(capture.read(str(tmp_path), skipped))
    assert request.images == [buffer.getvalue()] and request.answers == [(4, 0.75)]
    assert request.model == {"name": "m", "version": "1"}
    assert request.time == "2019-11-22T08:24:40Z"
    assert dict(skipped.reasons) == {"request content type text/csv is not one the server takes": 1}


@pytest.mark.parametrize("moment, period, window", [
    ("2026-12-01T13:55:12.345Z", "hourly", ("2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z")),
    ("2026-12-01T13:00:00+00:00", "hourly", ("2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z")),
    ("2026-12-01T14:30:00+01:00", "hourly", ("2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z")),
    ("2026-12-01 13:10:00", "hourly", ("2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z")),
    ("1796130612.5", "hourly", ("2026-12-01T12:00:00Z", "2026-12-01T13:00:00Z")),
    ("2026-12-02T00:10:00Z", "daily", ("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z")),
])
def test_a_pipeline_run_compares_the_whole_period_before_its_start(moment, period, window):
    """A run started late (13:55) still compares 12:00 to 13:00: each hour once."""
    from monitor.run import window_before

    assert window_before(moment, period) == window


def test_a_time_that_is_not_one_is_refused():
    from monitor.run import window_before

    with pytest.raises(MonitorError, match="'yesterday' is not a time"):
        window_before("yesterday", "hourly")


def test_only_the_windows_hour_folders_are_read(tmp_path):
    for hour in ("09", "10", "11"):
        path = tmp_path / "dogs" / "AllTraffic" / "2026" / "12" / "01" / hour / "part.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("not json\n")
    skipped = capture.Skipped()
    assert list(capture.read(str(tmp_path), skipped, since="2026-12-01T10:00:00Z",
                             until="2026-12-01T11:00:00Z")) == []
    assert skipped.total == 1 and "/10/part.jsonl:1" in next(iter(skipped.examples.values()))


def test_a_pipeline_run_publishes_its_figures_to_cloudwatch(aws, client, drift_data, model,
                                                            tmp_path):
    """--window-before (the execution's start) picks the hour before; --publish-metrics puts the
    figures with PutMetricData, read back here through CloudWatch's own API (moto's)."""
    import datetime

    from monitor import run

    folder = capture_traffic(client, shifted_bodies(drift_data), tmp_path / "capture")
    assert run.main(["--capture", str(folder), "--model", str(model), "--out", str(tmp_path / "out"),
                     "--window-before", "2026-12-01T11:07:31Z", "--publish-metrics",
                     "--endpoint-name", "dogs", "--schedule-name", "dogs-image-drift"]) == 0
    cloudwatch = aws.client("cloudwatch")
    dimensions = [{"Name": "Endpoint", "Value": "dogs"},
                  {"Name": "MonitoringSchedule", "Value": "dogs-image-drift"}]
    listed = cloudwatch.list_metrics(Namespace=run.METRIC_NAMESPACE)["Metrics"]
    names = {m["MetricName"] for m in listed}
    assert {"violations", "images_compared", "feature_baseline_drift_brightness"} <= names
    assert all(m["Dimensions"] == dimensions for m in listed)
    points = cloudwatch.get_metric_statistics(
        Namespace=run.METRIC_NAMESPACE, MetricName="violations", Dimensions=dimensions,
        StartTime=datetime.datetime(2026, 12, 1, 10, tzinfo=datetime.timezone.utc),
        EndTime=datetime.datetime(2026, 12, 1, 12, tzinfo=datetime.timezone.utc),
        Period=3600, Statistics=["Maximum"])["Datapoints"]
    summary = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert [p["Maximum"] for p in points] == [float(len(summary["violations"]))]
    assert points[0]["Timestamp"] == datetime.datetime(2026, 12, 1, 11, tzinfo=datetime.timezone.utc)
