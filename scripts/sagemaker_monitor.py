"""The drift monitor (monitor/) as a SageMaker Model Monitor custom monitoring schedule: every
hour (or day) Model Monitor hands the hour's captured traffic of the endpoint to the training
image, which runs `python -m monitor.run` on it against the served model's baseline.

    python -m scripts.sagemaker_monitor create --endpoint-name dogs --output s3://BUCKET/monitoring \
        [--schedule hourly|daily] [--instance-type ml.m5.xlarge]
    python -m scripts.sagemaker_monitor delete --endpoint-name dogs

The endpoint must capture its traffic (scripts/sagemaker_deploy.py --capture). The model is the
one the endpoint serves (its model.tar.gz, found through the endpoint, or --model-data), whose
baseline.json training wrote. Each run writes drift.json, constraint_violations.json,
statistics.json and drift_report.html under --output, and its figures as CloudWatch metrics
(feature_baseline_drift_<feature>, violations, images_compared; --no-cloudwatch-metrics: not);
an execution with violations ends as CompletedWithViolations. Run the monitor here on the same
files with monitor.run --capture.
"""
from __future__ import annotations

import argparse
import sys

from scripts import common

RESULTS = "/opt/ml/processing/resultdata"  # where Model Monitor's output_path points
CAPTURE = "/opt/ml/processing/input/endpoint"


def schedule_name(endpoint: str) -> str:
    return f"{endpoint}-image-drift"


def served_model(sagemaker_session, endpoint: str) -> tuple[str, dict]:
    """(model.tar.gz of the endpoint's first variant, its data capture config); SystemExit
    saying what to do when the endpoint does not capture."""
    client = sagemaker_session.sagemaker_client
    config = client.describe_endpoint_config(EndpointConfigName=client.describe_endpoint(
        EndpointName=endpoint)["EndpointConfigName"])
    capture = config.get("DataCaptureConfig", {})
    if not capture.get("EnableCapture"):
        raise SystemExit(f"endpoint {endpoint} captures no traffic: deploy it with "
                         "scripts/sagemaker_deploy.py --capture s3://... first")
    model = client.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    container = model.get("PrimaryContainer") or model["Containers"][0]
    if container.get("ModelDataUrl"):
        return container["ModelDataUrl"], capture
    package = client.describe_model_package(ModelPackageName=container["ModelPackageName"])
    return package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"], capture


def create(args: argparse.Namespace, sagemaker_session) -> str:
    from sagemaker.model_monitor import (CronExpressionGenerator, EndpointInput, ModelMonitor,
                                         MonitoringOutput)

    model_data, _ = served_model(sagemaker_session, args.endpoint_name)
    model_data = args.model_data or model_data
    monitor = ModelMonitor(
        role=common.role(args), image_uri=common.image_uri("train", args, sagemaker_session),
        instance_count=1, instance_type=args.instance_type,
        entrypoint=["python", "-m", "monitor.run"],
        # as the SDK's DefaultModelMonitor does with enable_cloudwatch_metrics (its default)
        env={"BYOC_MODEL_DATA": model_data,
             "publish_cloudwatch_metrics": "Enabled" if args.cloudwatch_metrics else "Disabled"},
        base_job_name="byoc-image-drift", max_runtime_in_seconds=args.max_runtime_s,
        sagemaker_session=sagemaker_session)
    cron = {"hourly": CronExpressionGenerator.hourly(),
            "daily": CronExpressionGenerator.daily()}[args.schedule]
    name = schedule_name(args.endpoint_name)
    monitor.create_monitoring_schedule(
        endpoint_input=EndpointInput(endpoint_name=args.endpoint_name, destination=CAPTURE),
        output=MonitoringOutput(source=RESULTS, destination=args.output.rstrip("/")),
        monitor_schedule_name=name, schedule_cron_expression=cron)
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("create", help="schedule the drift monitor on an endpoint")
    make.add_argument("--endpoint-name", required=True)
    make.add_argument("--output", required=True, help="s3:// prefix for the monitor's reports")
    make.add_argument("--model-data", help="the served model.tar.gz (default: the endpoint's)")
    make.add_argument("--schedule", choices=("hourly", "daily"), default="hourly")
    make.add_argument("--instance-type", default="ml.m5.xlarge")
    make.add_argument("--max-runtime-s", type=int, default=3600)
    make.add_argument("--no-cloudwatch-metrics", dest="cloudwatch_metrics", action="store_false",
                      help="do not publish each run's figures as CloudWatch metrics")
    remove = commands.add_parser("delete", help="delete the endpoint's drift schedule")
    remove.add_argument("--endpoint-name", required=True)
    args = parser.parse_args(argv)
    if args.local:
        parser.error("monitoring schedules run on AWS; here, run python -m monitor.run on a "
                     "capture folder")
    if args.command == "create" and not args.output.startswith("s3://"):
        parser.error("--output must be an s3:// prefix")
    sagemaker_session = common.session(args)
    if args.command == "create":
        print(f"monitoring schedule: {create(args, sagemaker_session)}")
    else:
        name = schedule_name(args.endpoint_name)
        sagemaker_session.sagemaker_client.delete_monitoring_schedule(MonitoringScheduleName=name)
        print(f"deleted monitoring schedule {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
