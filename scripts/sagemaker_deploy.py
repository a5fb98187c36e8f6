"""Deploy a trained model.tar.gz on the custom serving image (SDK v2 Model) to an endpoint.

    # real-time endpoint on AWS (CPU image; --gpu for the PyTorch image on a GPU instance)
    python -m scripts.sagemaker_deploy --model-data s3://BUCKET/runs/JOB/output/model.tar.gz \
        --role arn:aws:iam::ACCOUNT:role/SageMakerRole --instance-type ml.c5.xlarge \
        [--autoscale-max 4] [--endpoint-name dogs]
    # serverless endpoint on AWS (CPU only; pay per request)
    python -m scripts.sagemaker_deploy --model-data s3://... --role ... --serverless --memory-mb 2048
    # asynchronous endpoint on AWS (large images, queued requests; results written to S3)
    python -m scripts.sagemaker_deploy --model-data s3://... --role ... --async-output s3://BUCKET/async
    # an approved version from the model registry (scripts/sagemaker_registry.py), recording a
    # fifth of the requests and answers to S3 for the drift monitor
    python -m scripts.sagemaker_deploy --model-package arn:aws:sagemaker:...:model-package/dogs/3 \
        --role ... --capture s3://BUCKET/capture --capture-percent 20
    # on this machine, in SageMaker local mode: serves until Ctrl-C, then deletes the endpoint
    python -m scripts.sagemaker_deploy --local --model-data local_run/sagemaker/model.tar.gz

Prints the endpoint name, for scripts/sagemaker_invoke.py and scripts/sagemaker_cleanup.py.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

from scripts import common
from scripts.local_endpoint import wait_for_http
from scripts.sagemaker_cleanup import backlog_alarm_name, delete_endpoint
from scripts.sagemaker_registry import require_approved


def make_model(args: argparse.Namespace, sagemaker_session, env: dict | None = None):
    from sagemaker.model import Model, ModelPackage

    from scripts.sagemaker_invoke import ImagePredictor

    if getattr(args, "model_package", None):
        # Checked here: the SDK's ModelPackage approves an unapproved version when it deploys it.
        require_approved(sagemaker_session, args.model_package)
        return ModelPackage(role=common.role(args), model_package_arn=args.model_package,
                            env=env or {}, predictor_cls=ImagePredictor,
                            sagemaker_session=sagemaker_session)
    return Model(
        image_uri=common.image_uri("serve-gpu" if args.gpu else "serve", args, sagemaker_session),
        model_data=common.uri(args.model_data, args.local),
        role=common.role(args),
        env=env or {},
        predictor_cls=ImagePredictor,
        sagemaker_session=sagemaker_session,
    )


def async_env(max_payload_mb: int) -> dict:
    """Asynchronous inference takes bodies up to 1 GB and an hour per request: the server's
    real-time limits (6 MB, 60 s) would refuse what it exists for."""
    return {"BYOC_MAX_PAYLOAD_MB": str(max_payload_mb), "SAGEMAKER_MODEL_SERVER_TIMEOUT": "600"}


def data_capture(args: argparse.Namespace, sagemaker_session):
    """SageMaker's data capture: a share of the requests and of the answers, written to S3 as
    JSON lines. Image bodies are stored base64 (SageMaker encodes every content type it is not
    told is CSV or JSON); JSON batches and answers are stored as JSON text."""
    if not getattr(args, "capture", None):
        return None
    from sagemaker.model_monitor import DataCaptureConfig

    from artifact.content_types import JSON_TYPE

    return DataCaptureConfig(
        enable_capture=True, sampling_percentage=args.capture_percent,
        destination_s3_uri=args.capture.rstrip("/"), capture_options=["REQUEST", "RESPONSE"],
        json_content_types=[JSON_TYPE], sagemaker_session=sagemaker_session)


def deploy(args: argparse.Namespace, sagemaker_session, env: dict | None = None):
    """Create the endpoint and return its Predictor, once /ping passes."""
    if getattr(args, "async_output", None):
        env = {**async_env(args.async_max_payload_mb), **(env or {})}
    model = make_model(args, sagemaker_session, env)
    name = args.endpoint_name or f"byoc-{time.strftime('%Y%m%d-%H%M%S')}"
    capture = data_capture(args, sagemaker_session)
    if getattr(args, "async_output", None):
        from sagemaker.async_inference import AsyncInferenceConfig

        output = args.async_output.rstrip("/")
        predictor = model.deploy(
            initial_instance_count=args.instance_count, instance_type=args.instance_type,
            endpoint_name=name, wait=False, data_capture_config=capture,
            async_inference_config=AsyncInferenceConfig(
                output_path=f"{output}/output", failure_path=f"{output}/failures",
                max_concurrent_invocations_per_instance=args.max_concurrency))
    elif args.serverless:
        from sagemaker.serverless import ServerlessInferenceConfig

        predictor = model.deploy(endpoint_name=name, wait=False, serverless_inference_config=(
            ServerlessInferenceConfig(memory_size_in_mb=args.memory_mb,
                                      max_concurrency=args.max_concurrency)))
    else:
        instance_type = ("local_gpu" if args.gpu else "local") if args.local else args.instance_type
        predictor = model.deploy(initial_instance_count=args.instance_count,
                                 instance_type=instance_type, endpoint_name=name, wait=False,
                                 data_capture_config=capture)
    # The SDK's own wait sleeps before its first look; these look first.
    if args.local:
        wait_for_local_endpoint(sagemaker_session)
    else:
        wait_in_service(sagemaker_session, name)
    if args.autoscale_max and not args.local:
        if getattr(args, "async_output", None):
            autoscale_async(sagemaker_session, name, args.autoscale_max,
                            args.backlog_per_instance)
        else:
            autoscale(sagemaker_session, name, args.instance_count, args.autoscale_max,
                      args.invocations_per_instance)
    return predictor


def wait_in_service(sagemaker_session, name: str) -> None:
    from botocore.exceptions import WaiterError

    client = sagemaker_session.sagemaker_client
    print(f"creating endpoint {name} (usually 5-10 minutes)")
    try:
        client.get_waiter("endpoint_in_service").wait(
            EndpointName=name, WaiterConfig={"Delay": 15, "MaxAttempts": 160})
    except WaiterError:
        reason = client.describe_endpoint(EndpointName=name).get("FailureReason", "unknown")
        raise SystemExit(f"endpoint {name} did not come into service: {reason} (the serving "
                         "container's log is in CloudWatch: /aws/sagemaker/Endpoints/" + name + ")")


def wait_for_local_endpoint(sagemaker_session, timeout: float = 240) -> None:
    port = sagemaker_session.config["local"]["serving_port"]
    try:
        wait_for_http(f"http://localhost:{port}/ping", timeout)
    except TimeoutError:
        raise SystemExit(f"the local endpoint did not pass /ping on port {port} in {timeout:.0f} s"
                         ) from None


def autoscale(sagemaker_session, endpoint: str, minimum: int, maximum: int,
              invocations_per_instance: int) -> None:
    """Target tracking on invocations per instance, between minimum and maximum instances."""
    client = sagemaker_session.boto_session.client("application-autoscaling")
    resource = f"endpoint/{endpoint}/variant/AllTraffic"
    client.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=minimum, MaxCapacity=maximum)
    client.put_scaling_policy(
        PolicyName=f"{endpoint}-invocations", ServiceNamespace="sagemaker", ResourceId=resource,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(invocations_per_instance),
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 300, "ScaleOutCooldown": 60})


def autoscale_async(sagemaker_session, endpoint: str, maximum: int, backlog: int) -> None:
    """An asynchronous endpoint scales on its queue, down to zero instances when it is empty:
    target tracking on the backlog per instance, and a step policy, alarmed on
    HasBacklogWithoutCapacity, that starts the first instance again (with no instance there is
    no backlog per instance for target tracking to act on)."""
    client = sagemaker_session.boto_session.client("application-autoscaling")
    resource = f"endpoint/{endpoint}/variant/AllTraffic"
    target = {"ServiceNamespace": "sagemaker", "ResourceId": resource,
              "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    client.register_scalable_target(**target, MinCapacity=0, MaxCapacity=maximum)
    client.put_scaling_policy(
        **target, PolicyName=f"{endpoint}-backlog", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(backlog),
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
                "Statistic": "Average"},
            "ScaleInCooldown": 600, "ScaleOutCooldown": 120})
    from_zero = client.put_scaling_policy(
        **target, PolicyName=f"{endpoint}-from-zero", PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average",
            "Cooldown": 300, "StepAdjustments": [{"MetricIntervalLowerBound": 0,
                                                  "ScalingAdjustment": 1}]})
    sagemaker_session.boto_session.client("cloudwatch").put_metric_alarm(
        AlarmName=backlog_alarm_name(endpoint), MetricName="HasBacklogWithoutCapacity",
        Namespace="AWS/SageMaker", Statistic="Average", Period=60, EvaluationPeriods=2,
        DatapointsToAlarm=2, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing", Dimensions=[{"Name": "EndpointName", "Value": endpoint}],
        AlarmActions=[from_zero["PolicyARN"]])


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-data",
                        help="the training job's model.tar.gz (s3://, or a file with --local)")
    source.add_argument("--model-package",
                        help="an Approved version's ARN from the model registry (AWS only)")
    parser.add_argument("--endpoint-name", default=None)
    parser.add_argument("--instance-type", default="ml.c5.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="the PyTorch serving image (GPU instances)")
    parser.add_argument("--serverless", action="store_true", help="a serverless endpoint (AWS only)")
    parser.add_argument("--memory-mb", type=int, default=2048,
                        help="serverless memory (1024-6144; README: which sizes fit)")
    parser.add_argument("--max-concurrency", type=int, default=5,
                        help="serverless concurrency, or async requests per instance")
    parser.add_argument("--async-output", default=None,
                        help="s3:// prefix: an asynchronous endpoint writing results under it")
    parser.add_argument("--async-max-payload-mb", type=int, default=100,
                        help="largest image an asynchronous endpoint accepts")
    parser.add_argument("--autoscale-max", type=int, default=0,
                        help="scale between --instance-count and this many instances; an "
                             "asynchronous endpoint between 0 and this many")
    parser.add_argument("--invocations-per-instance", type=int, default=100,
                        help="autoscaling target, per instance per minute")
    parser.add_argument("--backlog-per-instance", type=int, default=5,
                        help="asynchronous autoscaling target: queued requests per instance")
    parser.add_argument("--capture", default=None,
                        help="s3:// prefix: record requests and answers there (data capture)")
    parser.add_argument("--capture-percent", type=int, default=20,
                        help="share of the requests that data capture records (1-100)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    add_deploy_arguments(parser)
    args = parser.parse_args(argv)
    if args.serverless and (args.local or args.gpu):
        parser.error("--serverless runs on AWS, on CPUs only")
    if args.async_output and (args.local or args.serverless):
        parser.error("--async-output runs on AWS, on instances (not --local or --serverless)")
    if args.async_output and not args.async_output.startswith("s3://"):
        parser.error("--async-output must be an s3:// prefix")
    if args.capture and (args.local or args.serverless):
        parser.error("--capture runs on AWS, on instance endpoints (serverless endpoints and "
                     "local mode have no data capture)")
    if args.capture and not args.capture.startswith("s3://"):
        parser.error("--capture must be an s3:// prefix")
    if not 1 <= args.capture_percent <= 100:
        parser.error(f"--capture-percent {args.capture_percent}: give 1 to 100")
    if args.model_package and args.local:
        parser.error("--model-package runs on AWS (local mode has no model registry): use "
                     "--model-data with the version's model.tar.gz")
    sagemaker_session = common.session(args)
    predictor = deploy(args, sagemaker_session)
    print(f"endpoint: {predictor.endpoint_name}")
    if args.local:  # the local endpoint lives as long as this process
        print("serving in local mode; Ctrl-C (or SIGTERM) deletes the endpoint")
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not skip this
                signal.signal(signum, signal.SIG_IGN)
            for item in delete_endpoint(sagemaker_session, predictor.endpoint_name, args.image_tag):
                print(f"deleted {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
