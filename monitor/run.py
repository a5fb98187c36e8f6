"""Compare a window of captured traffic with the model's training-time baseline.

    python -m monitor.run --capture s3://BUCKET/capture/dogs --model s3://.../model.tar.gz \
        --out drift/ [--since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z]

--capture is a folder or s3:// prefix of data capture files, --model the model the endpoint
serves (a folder, a model.tar.gz, or one on S3): its baseline.json and its network, which
computes the images' features. Writes drift.json (every check), constraint_violations.json and
statistics.json (Model Monitor's names) and drift_report.html to --out.

As a SageMaker Model Monitor custom monitoring schedule, the training image runs this with no
arguments: the capture folder, output folder and window come from Model Monitor's environment
(dataset_source, output_path, start_time, end_time) and the model from BYOC_MODEL_DATA
(scripts/sagemaker_monitor.py sets it). With publish_cloudwatch_metrics=Enabled, it also writes
CloudWatch metrics where Model Monitor publishes them from (/opt/ml/output/metrics/cloudwatch):
per check feature_baseline_drift_<feature> (1 when violated), and images_compared and
violations, with the Endpoint and MonitoringSchedule dimensions.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from artifact.baseline import BaselineError, check_baseline, describe_images
from artifact.manifest import ARCHIVE_FILE, BASELINE_FILE, ArtifactError, read_manifest, unpacked
from monitor import METRIC_NAMESPACE, report
from monitor.capture import CaptureError, Skipped, read
from monitor.profile import ALPHA, compare
from util.progress import track

log = logging.getLogger("monitor")
MIN_WINDOW = 30  # below this a window is compared, with a warning: tests have little power
FAILURE_MESSAGE = Path("/opt/ml/output/message")  # a processing job's failure reason
CLOUDWATCH_METRICS = Path("/opt/ml/output/metrics/cloudwatch/cloudwatch_metrics.jsonl")
ISO = "%Y-%m-%dT%H:%M:%SZ"


class MonitorError(Exception):
    """What the user must fix: said in one message, no traceback."""


def model_folder(source: str, work: Path) -> Path:
    """A model folder from a folder, a model.tar.gz, or an s3:// model.tar.gz."""
    if source.startswith("s3://"):
        import boto3

        from util.s3 import split_s3_uri

        bucket, key = split_s3_uri(source)
        local = work / ARCHIVE_FILE
        boto3.client("s3").download_file(bucket, key, str(local))
        source = str(local)
    try:
        return unpacked(source, work)
    except ArtifactError as e:
        raise MonitorError(f"--model: {e}") from None


def load(folder: Path):
    from artifact.network import ClassifierWithFeatures, load_trained

    try:
        manifest = read_manifest(folder)
    except (ArtifactError, OSError) as e:
        raise MonitorError(f"{folder} is not a model folder: {e}") from None
    baseline_path = folder / BASELINE_FILE
    if not baseline_path.is_file():
        raise MonitorError(f"{folder} has no {BASELINE_FILE}: training writes it (drift_baseline="
                           "true, the default); retrain, or make one with monitor.baseline")
    baseline = json.loads(baseline_path.read_text())
    try:
        check_baseline(baseline, manifest)
    except BaselineError as e:
        raise MonitorError(str(e)) from None
    return manifest, baseline, ClassifierWithFeatures(load_trained(folder, manifest))


def window_items(capture: str, manifest, skipped: Skipped, since=None, until=None):
    """(image, answer) of every captured image answered by this model."""
    import boto3

    s3 = boto3.client("s3") if capture.startswith("s3://") else None
    for request in read(capture, skipped, s3, since, until):
        model = request.model or {}
        if model and (model.get("name"), model.get("version")) != (manifest.name,
                                                                   manifest.version):
            skipped.add(f"answered by model {model.get('name')} version {model.get('version')}, "
                        f"not {manifest.name} version {manifest.version}", request.time or "?")
            continue
        yield from zip(request.images, request.answers)


def statistics_file(window, checks) -> dict:
    """Model Monitor's statistics.json layout, one numerical feature per number."""
    features = []
    for check in checks:
        values = np.array(check.window, dtype=float)
        if check.feature_name == "predicted_class":
            continue
        features.append({"name": check.feature_name, "inferred_type": "Fractional",
                         "numerical_statistics": {
                             "common": {"num_present": len(values), "num_missing": 0},
                             "mean": float(values.mean()), "sum": float(values.sum()),
                             "std_dev": float(values.std()), "min": float(values.min()),
                             "max": float(values.max())}})
    return {"version": 0.0, "dataset": {"item_count": window.images}, "features": features}


def monitor(capture: str, model: str, out: Path, since=None, until=None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        manifest, baseline, network = load(model_folder(model, Path(work)))
        skipped = Skipped()
        try:
            items = list(window_items(capture, manifest, skipped, since, until))
        except CaptureError as e:
            raise MonitorError(str(e)) from None
        window = describe_images(track(items, "describing the captured images", unit="images"),
                          manifest, network,
                          on_error=lambda i, reason: skipped.add(reason, f"image {i + 1}"))
    if window.images == 0:
        reasons = "; ".join(f"{n} {r} (first at {skipped.examples[r]})"
                            for r, n in skipped.reasons.most_common())
        raise MonitorError(f"the window holds no image to compare (capture {capture}"
                           f"{', from ' + since if since else ''}{', until ' + until if until else ''})"
                           + (f"; skipped: {reasons}" if reasons else ""))
    if window.images < MIN_WINDOW:
        log.warning("only %d images in the window: the tests can tell little from so few",
                    window.images)
    checks = compare(baseline, window)
    violations = [{"feature_name": c.feature_name, "constraint_check_type": "baseline_drift_check",
                   "description": c.description} for c in checks if c.violated]
    summary = {
        "model": {"name": manifest.name, "version": manifest.version},
        "images": window.images, "baseline_images": baseline["images"],
        "skipped": {"total": skipped.total, "reasons": dict(skipped.reasons)},
        "significance": ALPHA,
        "checks": [{"feature_name": c.feature_name, "statistic": c.statistic,
                    "threshold": c.threshold, "violated": c.violated,
                    "description": c.description} for c in checks],
        "violations": violations,
    }
    (out / "drift.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "constraint_violations.json").write_text(
        json.dumps({"violations": violations}, indent=2) + "\n")
    (out / "statistics.json").write_text(json.dumps(statistics_file(window, checks), indent=2))
    report.write(out / "drift_report.html", checks=checks, baseline=baseline, facts={
        "model": f"{manifest.name} version {manifest.version}", "capture": capture,
        "window": f"{since or 'start'} to {until or 'end'}", "images compared": window.images,
        "baseline images": baseline["images"], "records or images skipped": skipped.total,
        "significance": ALPHA})
    return summary


PERIODS = {"hourly": 3600, "daily": 86400}


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 time (with or without fractions, Z or an offset; naive means UTC) or epoch
    seconds, as a UTC datetime: SageMaker Pipelines' StartDateTime, or a time typed by hand."""
    text = text.strip()
    try:
        return datetime.datetime.fromtimestamp(float(text), datetime.timezone.utc)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MonitorError(f"{text!r} is not a time: give ISO 8601, such as "
                           "2026-12-01T13:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def window_before(moment: str, period: str) -> tuple[str, str]:
    """(since, until): the whole period that ends where `moment` is rounded down to the period,
    so a run that starts late still compares the period before, and each period once."""
    seconds = PERIODS[period]
    start = parse_time(moment).timestamp()
    until = datetime.datetime.fromtimestamp(start - start % seconds, datetime.timezone.utc)
    since = until - datetime.timedelta(seconds=seconds)
    return since.strftime(ISO), until.strftime(ISO)


def cloudwatch_metrics(summary: dict, endpoint: str | None, schedule: str | None,
                       timestamp: str) -> list[dict]:
    """The window's figures as CloudWatch PutMetricData datums (Model Monitor's custom-container
    format has the same), with the Endpoint and MonitoringSchedule dimensions, timed at the
    window's end."""
    dimensions = [{"Name": name, "Value": value} for name, value in (
        ("Endpoint", endpoint), ("MonitoringSchedule", schedule)) if value]
    figures = [("images_compared", summary["images"], "Count"),
               ("violations", len(summary["violations"]), "Count")]
    figures += [(f"feature_baseline_drift_{check['feature_name']}", int(check["violated"]), "None")
                for check in summary["checks"]]
    return [{"MetricName": name, "Timestamp": timestamp, "Dimensions": dimensions,
             "Value": float(value), "Unit": unit} for name, value, unit in figures]


def publish(metrics: list[dict], cloudwatch, namespace: str = METRIC_NAMESPACE) -> None:
    """PutMetricData, at most 1000 datums a request (CloudWatch's limit)."""
    for start in range(0, len(metrics), 1000):
        chunk = [{**m, "Timestamp": parse_time(m["Timestamp"])} for m in metrics[start:start + 1000]]
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=chunk)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    environ = os.environ
    model_monitor = "dataset_source" in environ  # run by a monitoring schedule
    parser.add_argument("--capture", default=environ.get("dataset_source"))
    parser.add_argument("--model", default=environ.get("BYOC_MODEL_DATA"))
    parser.add_argument("--out", default=environ.get("output_path"))
    parser.add_argument("--since", default=environ.get("start_time"), help="ISO time, inclusive")
    parser.add_argument("--until", default=environ.get("end_time"), help="ISO time, exclusive")
    parser.add_argument("--window-before", metavar="TIME",
                        help="compare the whole --period before TIME rounded down to it (a "
                             "pipeline passes its execution's start time)")
    parser.add_argument("--window-end", default="", metavar="TIME",
                        help="with --window-before: this time instead (a backfill), when given")
    parser.add_argument("--period", choices=PERIODS, default="hourly")
    parser.add_argument("--publish-metrics", action="store_true",
                        help=f"put the figures to CloudWatch ({METRIC_NAMESPACE}) with "
                             "PutMetricData")
    parser.add_argument("--endpoint-name", default=environ.get("sagemaker_endpoint_name"),
                        help="the metrics' Endpoint dimension")
    parser.add_argument("--schedule-name", default=environ.get("sagemaker_monitoring_schedule_name"),
                        help="the metrics' MonitoringSchedule dimension")
    args = parser.parse_args(argv)
    missing = [f"--{name}" for name in ("capture", "model", "out") if not getattr(args, name)]
    if missing:
        parser.error(f"give {', '.join(missing)}")
    try:
        since, until = args.since, args.until
        if args.window_before:
            since, until = window_before(args.window_end or args.window_before, args.period)
            log.info("window %s to %s (the %s period before %s)", since, until, args.period,
                     args.window_end or args.window_before)
        summary = monitor(args.capture, args.model, Path(args.out), since, until)
    except MonitorError as e:
        log.error("%s", e)
        if model_monitor:
            FAILURE_MESSAGE.parent.mkdir(parents=True, exist_ok=True)
            FAILURE_MESSAGE.write_text(str(e))
        return 1
    timestamp = until or time.strftime(ISO, time.gmtime())
    metrics = cloudwatch_metrics(summary, args.endpoint_name, args.schedule_name, timestamp)
    if environ.get("publish_cloudwatch_metrics") == "Enabled":
        CLOUDWATCH_METRICS.parent.mkdir(parents=True, exist_ok=True)
        CLOUDWATCH_METRICS.write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if args.publish_metrics:
        import boto3

        publish(metrics, boto3.client("cloudwatch"))
        log.info("published %d metrics to CloudWatch %s", len(metrics), METRIC_NAMESPACE)
    for check in summary["checks"]:
        log.info("%s %s: %s", "VIOLATION" if check["violated"] else "ok", check["feature_name"],
                 check["description"])
    log.info("%d images compared, %d skipped; %d violations; report %s",
             summary["images"], summary["skipped"]["total"], len(summary["violations"]),
             Path(args.out) / "drift_report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
