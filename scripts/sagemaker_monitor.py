"""The drift monitor (monitor/) on a schedule: by default a SageMaker Pipeline of one processing
step that runs `python -m monitor.run` in the training image over the endpoint's captured
traffic of the last hour (or day), started by an EventBridge Scheduler schedule. SageMaker
Model Monitor, closed to new customers, only with --model-monitor.

    python -m scripts.sagemaker_monitor create --endpoint-name dogs --output s3://BUCKET/monitoring \
        [--schedule hourly|daily] [--alarm-topic arn:aws:sns:REGION:ACCOUNT:TOPIC] [--model-monitor]
    python -m scripts.sagemaker_monitor delete --endpoint-name dogs
    # the same pipeline on this machine, in SageMaker local mode, over a capture folder or prefix
    python -m scripts.sagemaker_monitor --local run --capture s3://demo/capture/dogs \
        --model-data s3://demo/model.tar.gz --output s3://demo/monitoring \
        --param WindowEnd=2026-12-01T11:00:00Z

The endpoint must capture its traffic (scripts/sagemaker_deploy.py --capture). The model is the
one the endpoint serves (its model.tar.gz, found through the endpoint, or --model-data), whose
baseline.json training wrote. Each execution compares the whole period before its start time,
rounded down to the period (a run that starts late still compares the hour before: each hour
once; the pipeline parameter WindowEnd replaces the start time, for a backfill), writes
drift.json, constraint_violations.json, statistics.json and drift_report.html under
<output>/<execution id>, and puts its figures to CloudWatch (BYOC/ImageDrift: violations,
images_compared, feature_baseline_drift_<feature>, by Endpoint and MonitoringSchedule);
--alarm-topic adds an alarm on violations that notifies an SNS topic. With --model-monitor,
Model Monitor runs monitor.run instead (its own metrics; an execution with violations ends as
CompletedWithViolations). Run the monitor here on the same files with monitor.run --capture.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass

from botocore.exceptions import ClientError

from monitor import METRIC_NAMESPACE
from scripts import common

RESULTS = "/opt/ml/processing/resultdata"  # where Model Monitor's output_path points
CAPTURE = "/opt/ml/processing/input/endpoint"
MODEL = "/opt/ml/processing/model"  # the pipeline step's inputs and output
CAPTURE_COPY = "/opt/ml/processing/capture"
OUTPUT = "/opt/ml/processing/output"
STEP = "DriftMonitor"
# EventBridge Scheduler, ten minutes into the period: data capture writes an hour's files late.
CRON = {"hourly": "10 * * * ? *", "daily": "10 0 * * ? *"}
SNS_TOPIC = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}")


def schedule_name(endpoint: str) -> str:
    """The pipeline's, its EventBridge schedule's and Model Monitor's schedule's name."""
    return f"{endpoint}-image-drift"


def alarm_name(endpoint: str) -> str:
    return f"{endpoint}-image-drift-violations"


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


def drift_pipeline(session, *, name: str, endpoint: str, image_uri: str, role: str,
                   instance_type: str, model_data: str, capture: str, output: str, period: str,
                   max_runtime_s: int, local: bool = False):
    """The Pipeline object (nothing is sent until upsert). On AWS the step reads the capture
    straight from S3, only the window's hour folders; in local mode it gets the capture as an
    input."""
    from sagemaker.core.processing import Processor
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.parameters import ParameterString
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import ProcessingStep

    window_end = ParameterString("WindowEnd", default_value="")  # "": the execution's start
    processor = Processor(
        role=role, image_uri=image_uri, instance_count=1, instance_type=instance_type,
        entrypoint=["python", "-m", "monitor.run"], base_job_name="byoc-image-drift",
        max_runtime_in_seconds=max_runtime_s, sagemaker_session=session)
    inputs = [common.processing_input(model_data, MODEL, "model")]
    if local:
        inputs.append(common.processing_input(capture, CAPTURE_COPY, "capture"))
    arguments = [
        "--capture", CAPTURE_COPY if local else capture, "--model", MODEL, "--out", OUTPUT,
        # One string each: local mode renders the start time as a number otherwise.
        Join(on="", values=["--window-before=", ExecutionVariables.START_DATETIME]),
        Join(on="", values=["--window-end=", window_end]), "--period", period,
        "--endpoint-name", endpoint, "--schedule-name", name,
        # Local mode's container cannot reach CloudWatch: the figures stay in drift.json.
        *([] if local else ["--publish-metrics"]),
    ]
    step = ProcessingStep(name=STEP, step_args=processor.run(
        inputs=inputs, arguments=arguments,
        outputs=[common.processing_output(OUTPUT, Join(on="/", values=[
            output.rstrip("/"), ExecutionVariables.PIPELINE_EXECUTION_ID]), "drift")]))
    return Pipeline(name=name, parameters=[window_end], steps=[step], sagemaker_session=session)


@dataclass(frozen=True)
class MonitorSpec:
    """Which endpoint is watched, how often, where the reports go, and on what (--endpoint-name,
    --output, --schedule, --instance-type, --max-runtime-s, --model-data)."""
    endpoint: str
    output: str
    schedule: str = "hourly"
    instance_type: str = "ml.m5.xlarge"
    max_runtime_s: int = 3600
    model_data: str | None = None  # default: the model the endpoint serves


def monitor_spec(args: argparse.Namespace) -> MonitorSpec:
    return MonitorSpec(endpoint=args.endpoint_name, output=args.output, schedule=args.schedule,
                       instance_type=args.instance_type, max_runtime_s=args.max_runtime_s,
                       model_data=args.model_data)


def create_pipeline(target: common.Launch, session, spec: MonitorSpec,
                    alarm_topic: str | None = None, scheduler_role: str | None = None) -> str:
    """Upsert the pipeline, schedule it, and add the violations alarm when asked for."""
    from sagemaker.mlops.workflow.triggers import PipelineSchedule

    image = common.pushed_image("train", target, session.boto_region_name)
    model_data, capture = served_model(session, spec.endpoint)
    name = schedule_name(spec.endpoint)
    pipeline = drift_pipeline(
        common.pipeline_session(False, session.boto_region_name), name=name,
        endpoint=spec.endpoint, image_uri=image,
        role=common.role(target), instance_type=spec.instance_type,
        model_data=spec.model_data or model_data,
        capture=f"{capture['DestinationS3Uri'].rstrip('/')}/{spec.endpoint}",
        output=spec.output, period=spec.schedule, max_runtime_s=spec.max_runtime_s)
    pipeline.upsert(role_arn=common.role(target))
    pipeline.put_triggers(triggers=[PipelineSchedule(name=name, cron=CRON[spec.schedule])],
                          role_arn=scheduler_role or common.role(target))
    if alarm_topic:
        period = {"hourly": 3600, "daily": 86400}[spec.schedule]
        session.boto_session.client("cloudwatch").put_metric_alarm(
            AlarmName=alarm_name(spec.endpoint),
            AlarmDescription=f"image drift on endpoint {spec.endpoint} "
                             "(scripts/sagemaker_monitor.py): see drift_report.html",
            Namespace=METRIC_NAMESPACE, MetricName="violations",
            Dimensions=[{"Name": "Endpoint", "Value": spec.endpoint},
                        {"Name": "MonitoringSchedule", "Value": name}],
            Statistic="Maximum", Period=period, EvaluationPeriods=1, Threshold=0.0,
            ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching",
            AlarmActions=[alarm_topic])
    return name


def create_model_monitor(target: common.Launch, sagemaker_session, spec: MonitorSpec,
                         cloudwatch_metrics: bool = True) -> str:
    """The same monitor as a Model Monitor custom monitoring schedule (existing customers)."""
    from sagemaker.core.model_monitor import (CronExpressionGenerator, EndpointInput, ModelMonitor,
                                              MonitoringOutput)

    image = common.pushed_image("train", target, sagemaker_session.boto_region_name)
    model_data, _ = served_model(sagemaker_session, spec.endpoint)
    model_data = spec.model_data or model_data
    monitor = ModelMonitor(
        role=common.role(target), image_uri=image,
        instance_count=1, instance_type=spec.instance_type,
        entrypoint=["python", "-m", "monitor.run"],
        # as the SDK's DefaultModelMonitor does with enable_cloudwatch_metrics (its default)
        env={"BYOC_MODEL_DATA": model_data,
             "publish_cloudwatch_metrics": "Enabled" if cloudwatch_metrics else "Disabled"},
        base_job_name="byoc-image-drift", max_runtime_in_seconds=spec.max_runtime_s,
        sagemaker_session=sagemaker_session)
    name = schedule_name(spec.endpoint)
    monitor.create_monitoring_schedule(
        endpoint_input=EndpointInput(endpoint_name=spec.endpoint, destination=CAPTURE),
        output=MonitoringOutput(source=RESULTS, destination=spec.output.rstrip("/")),
        monitor_schedule_name=name,
        schedule_cron_expression={"hourly": CronExpressionGenerator.hourly(),
                                  "daily": CronExpressionGenerator.daily()}[spec.schedule])
    return name


def delete_monitoring_schedules(client, endpoint: str, timeout_s: float = 600) -> list[str]:
    """The endpoint's Model Monitor schedules (this script's, and any other), each deleted and
    waited for until SageMaker no longer knows it, as the SDK's ModelMonitor waits."""
    names = [s["MonitoringScheduleName"] for s in client.list_monitoring_schedules(
        EndpointName=endpoint)["MonitoringScheduleSummaries"]]
    for name in names:
        client.delete_monitoring_schedule(MonitoringScheduleName=name)
    started = time.monotonic()
    for name in names:
        common.wait_until_gone(
            lambda: client.describe_monitoring_schedule(MonitoringScheduleName=name),
            f"monitoring schedule {name}", started, timeout_s, poll_s=5)
    return [f"monitoring schedule {name}" for name in names]


def delete_drift_monitor(sagemaker_session, endpoint: str) -> list[str]:
    """Whichever of the two monitors the endpoint has: the schedule, the pipeline and the alarm,
    and Model Monitor's schedules. Returns what it deleted."""
    client, deleted = sagemaker_session.sagemaker_client, []
    name = schedule_name(endpoint)
    boto = sagemaker_session.boto_session
    try:
        boto.client("scheduler").delete_schedule(Name=name)
        deleted.append(f"EventBridge schedule {name}")
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    try:
        client.describe_pipeline(PipelineName=name)
        client.delete_pipeline(PipelineName=name)
        deleted.append(f"pipeline {name}")
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("ResourceNotFound", "ValidationException"):
            raise
    deleted += common.delete_alarm(boto.client("cloudwatch"), alarm_name(endpoint))
    return deleted + delete_monitoring_schedules(client, endpoint)


def run_local(args: argparse.Namespace) -> int:
    """The pipeline, executed by SDK v3's local executor on this machine's Docker."""
    target = common.launch(args)
    session = common.pipeline_session(True, args.region)
    name = schedule_name(args.endpoint_name)
    pipeline = drift_pipeline(
        session, name=name, endpoint=args.endpoint_name,
        image_uri=common.image_uri("train", target), role=common.role(target),
        instance_type="local",
        model_data=common.uri(args.model_data, True), capture=common.uri(args.capture, True),
        output=common.uri(args.output, True), period=args.schedule,
        max_runtime_s=args.max_runtime_s, local=True)
    pipeline.create(role_arn=common.role(target))
    parameters = common.name_values(args.param, "--param")
    unknown = set(parameters) - {"WindowEnd"}
    if unknown:
        raise SystemExit(f"--param {', '.join(sorted(unknown))}: the pipeline's one parameter "
                         "is WindowEnd")
    try:
        execution = pipeline.start(parameters=parameters)
    finally:
        common.remove_local_containers("train", image_tag=args.image_tag)
    [step] = execution.list_steps()["PipelineExecutionSteps"]
    print(f"{step['StepName']} {step.get('StepStatus')} {step.get('FailureReason', '')}".strip())
    return 0 if step.get("StepStatus") == "Succeeded" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("create", help="schedule the drift monitor on an endpoint")
    local = commands.add_parser("run", help="with --local: execute the pipeline once, here")
    for command in (make, local):
        command.add_argument("--endpoint-name", required=True)
        command.add_argument("--output", required=True, help="s3:// prefix for the reports")
        command.add_argument("--schedule", choices=("hourly", "daily"), default="hourly",
                             help="how often, and the window each run compares")
        command.add_argument("--instance-type", default="ml.m5.xlarge")
        command.add_argument("--max-runtime-s", type=int, default=3600)
    make.add_argument("--model-data", help="the served model.tar.gz (default: the endpoint's)")
    make.add_argument("--alarm-topic", metavar="SNS_ARN",
                      help="a CloudWatch alarm on violations notifies this SNS topic")
    make.add_argument("--scheduler-role", help="the role EventBridge Scheduler assumes to start "
                                               "the pipeline (default: --role)")
    make.add_argument("--model-monitor", action="store_true",
                      help="a SageMaker Model Monitor schedule instead (closed to new customers)")
    make.add_argument("--no-cloudwatch-metrics", dest="cloudwatch_metrics", action="store_false",
                      help="with --model-monitor: do not publish each run's figures")
    local.add_argument("--model-data", required=True, help="the model.tar.gz (s3:// or a file)")
    local.add_argument("--capture", required=True,
                       help="the endpoint's capture (s3:// or a folder: <prefix>/<endpoint>)")
    local.add_argument("--param", action="append", default=[], metavar="WindowEnd=TIME")
    remove = commands.add_parser("delete", help="delete the endpoint's drift monitor")
    remove.add_argument("--endpoint-name", required=True)
    args = parser.parse_args(argv)
    if args.command == "run":
        if not args.local:
            parser.error("run is for --local; on AWS: create (the schedule starts it)")
        for flag, value in (("--model-data", args.model_data), ("--capture", args.capture),
                            ("--output", args.output)):
            common.check_s3_uri(flag, value, local=True)
        return run_local(args)
    if args.local:
        parser.error("schedules run on AWS; here: run --local, or python -m monitor.run")
    if args.command == "create":
        common.check_s3_uri("--output", args.output, local_mode=False)
        common.check_s3_uri("--model-data", args.model_data, local_mode=False)
        if args.alarm_topic and not SNS_TOPIC.fullmatch(args.alarm_topic):
            parser.error(f"--alarm-topic {args.alarm_topic!r} is not an SNS topic ARN "
                         "(arn:aws:sns:<region>:<account>:<topic>)")
        if args.alarm_topic and args.model_monitor:
            parser.error("--alarm-topic is for the pipeline's metrics; with --model-monitor, "
                         "alarm on Model Monitor's own")
        if len(schedule_name(args.endpoint_name)) > 64:
            parser.error(f"endpoint name {args.endpoint_name!r} is too long: the schedule "
                         f"{schedule_name(args.endpoint_name)!r} may have 64 characters")
    target = common.launch(args)
    sagemaker_session = common.session(target)
    if args.command == "create":
        if args.model_monitor:
            name = create_model_monitor(target, sagemaker_session, monitor_spec(args),
                                        args.cloudwatch_metrics)
            print(f"monitoring schedule: {name}")
        else:
            name = create_pipeline(target, sagemaker_session, monitor_spec(args),
                                   args.alarm_topic, args.scheduler_role)
            print(f"pipeline and EventBridge schedule: {name}")
    else:
        deleted = delete_drift_monitor(sagemaker_session, args.endpoint_name)
        for item in deleted or [f"nothing: endpoint {args.endpoint_name} has no drift monitor"]:
            print(f"deleted {item}")
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
