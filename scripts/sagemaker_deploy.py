"""Deploy a trained model.tar.gz on the custom serving image to an endpoint (SDK v3).

    # real-time endpoint on AWS (CPU image; --gpu for the PyTorch image on a GPU instance)
    python -m scripts.sagemaker_deploy --model-data s3://BUCKET/runs/JOB/output/model.tar.gz \
        --role arn:aws:iam::ACCOUNT:role/SageMakerRole --instance-type ml.c5.xlarge \
        [--autoscale-max 4] [--endpoint-name dogs]
    # serverless endpoint on AWS (CPU only; pay per request)
    python -m scripts.sagemaker_deploy --model-data s3://... --role ... --serverless --memory-mb 2048
    # asynchronous endpoint on AWS (large images, queued requests; results written to S3)
    python -m scripts.sagemaker_deploy --model-data s3://... --role ... --async-output s3://BUCKET/async
    # multi-model endpoint on AWS: every model.tar.gz under a prefix, loaded when first asked for
    # (sagemaker_invoke --target-model dogs-v2.tar.gz)
    python -m scripts.sagemaker_deploy --multi-model s3://BUCKET/models/ --role ...
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
from dataclasses import dataclass

from scripts import common
from scripts.local_endpoint import wait_for_http
from scripts.sagemaker_cleanup import backlog_alarm_name, delete_endpoint, from_zero_alarm_name
from scripts.sagemaker_model import (METRICS_PERIOD_S, ModelSource, check_architecture,
                                     create_model)


@dataclass(frozen=True)
class Instances:
    """A real-time or asynchronous endpoint's instances, and their autoscaling (0: none)."""
    instance_type: str = "ml.c5.xlarge"
    instance_count: int = 1
    autoscale_max: int = 0
    invocations_per_instance: int = 100


@dataclass(frozen=True)
class Serverless:
    memory_mb: int = 2048
    max_concurrency: int = 5


@dataclass(frozen=True)
class Asynchronous:
    """Results and failures under output (s3://); requests queue per instance."""
    output: str
    max_concurrency: int = 5
    max_payload_mb: int = 100
    backlog_per_instance: int = 5


@dataclass(frozen=True)
class Component:
    """An inference component (the hosting path AWS recommends): copies of the model on
    instances that SageMaker adds and removes itself (managed instance scaling). min_copies 0:
    scales to zero instances when idle."""
    name: str
    copies: int = 1
    min_copies: int = 1
    max_copies: int = 1
    cpu_cores: float = 1
    copy_target: float = 5  # concurrent requests per copy that autoscaling aims at


@dataclass(frozen=True)
class Capture:
    destination: str  # s3://
    percent: int = 20


def async_env(max_payload_mb: int) -> dict:
    """Asynchronous inference takes bodies up to 1 GB and an hour per request: the server's
    real-time limits (6 MB, 60 s) would refuse what it exists for."""
    return {"BYOC_MAX_PAYLOAD_MB": str(max_payload_mb), "SAGEMAKER_MODEL_SERVER_TIMEOUT": "600"}


def data_capture(capture: Capture) -> dict:
    """SageMaker's data capture: a share of the requests and of the answers, written to S3 as
    JSON lines. Image bodies are stored base64 (SageMaker encodes every content type it is not
    told is CSV or JSON); JSON batches and answers are stored as JSON text."""
    from artifact.content_types import CSV_TYPE, JSON_TYPE

    return {"EnableCapture": True, "InitialSamplingPercentage": capture.percent,
            "DestinationS3Uri": capture.destination.rstrip("/"),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": [JSON_TYPE],
                                         "CsvContentTypes": [CSV_TYPE]}}


# Stated on every endpoint config: detailed observability on, published every minute (the
# container's own /metrics path and period are in its model, scripts/sagemaker_model.py).
METRICS_CONFIG = {"EnableDetailedObservability": True,
                  "MetricPublishFrequencyInSeconds": METRICS_PERIOD_S}


def endpoint_config(name: str, model: str, target: common.Launch, source: ModelSource,
                    instances: Instances = Instances(),
                    serverless: Serverless | None = None,
                    asynchronous: Asynchronous | None = None,
                    capture: Capture | None = None) -> dict:
    """CreateEndpointConfig's request, as SageMaker receives it (local mode: what its engine
    takes, the variant alone)."""
    variant = {"VariantName": "AllTraffic", "ModelName": model, "InitialVariantWeight": 1.0}
    if serverless:
        variant["ServerlessConfig"] = {"MemorySizeInMB": serverless.memory_mb,
                                       "MaxConcurrency": serverless.max_concurrency}
    else:
        variant.update(InstanceType=common.instance_type(target, source.gpu,
                                                         instances.instance_type),
                       InitialInstanceCount=instances.instance_count)
    request = {"EndpointConfigName": name, "ProductionVariants": [variant]}
    if target.local:
        return request
    request["MetricsConfig"] = dict(METRICS_CONFIG)
    if capture:
        request["DataCaptureConfig"] = data_capture(capture)
    if asynchronous:
        output = asynchronous.output.rstrip("/")
        request["AsyncInferenceConfig"] = {
            "OutputConfig": {"S3OutputPath": f"{output}/output",
                             "S3FailurePath": f"{output}/failures"},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": asynchronous.max_concurrency}}
    return request


SERVER_MEMORY_MB = 128  # gunicorn and its worker besides the model (70 MiB idle, measured)


def component_requirements(model_data: str, gpu: bool, cpu_cores: float, s3=None) -> dict:
    """What one copy needs, from the serving image's own estimate (serve/models.py) of the
    memory the model holds once loaded, on the model.tar.gz (local, or s3:// fetched here)."""
    import math
    import tempfile
    from pathlib import Path

    from artifact.manifest import unpacked
    from serve.models import estimated_memory
    from util.s3 import split_s3_uri

    with tempfile.TemporaryDirectory() as work:
        archive = model_data
        if model_data.startswith("s3://"):
            bucket, key = split_s3_uri(model_data)
            archive = str(Path(work) / "model.tar.gz")
            s3.download_file(bucket, key, archive)
        model_bytes = estimated_memory(unpacked(archive, work), "torch" if gpu else "onnx",
                                       threads=max(1, math.floor(cpu_cores)))
    requirements = {"NumberOfCpuCoresRequired": cpu_cores,
                    "MinMemoryRequiredInMb": math.ceil(model_bytes / 2**20) + SERVER_MEMORY_MB}
    if gpu:
        requirements["NumberOfAcceleratorDevicesRequired"] = 1
    return requirements


def component_endpoint_config(name: str, target: common.Launch, source: ModelSource,
                              instances: Instances, component: Component) -> dict:
    """An endpoint config for inference components: no model on the variant, instances that
    SageMaker scales itself (from zero when the component may have no copy)."""
    most = max(instances.instance_count, instances.autoscale_max or instances.instance_count)
    variant = {"VariantName": "AllTraffic",
               "InstanceType": common.instance_type(target, source.gpu, instances.instance_type),
               "InitialInstanceCount": instances.instance_count,
               "ManagedInstanceScaling": {
                   "Status": "ENABLED", "MaxInstanceCount": most,
                   "MinInstanceCount": 0 if component.min_copies == 0 else 1},
               "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}}
    return {"EndpointConfigName": name, "ProductionVariants": [variant],
            "ExecutionRoleArn": common.role(target), "MetricsConfig": dict(METRICS_CONFIG)}


def deploy_component(target: common.Launch, sagemaker_session, source: ModelSource, name: str,
                     instances: Instances, component: Component) -> str:
    """The endpoint, then the component on it with its copies and their autoscaling."""
    client = sagemaker_session.sagemaker_client
    check_architecture(target, sagemaker_session, source,
                       common.instance_type(target, source.gpu, instances.instance_type))
    requirements = component_requirements(source.model_data, source.gpu, component.cpu_cores,
                                           sagemaker_session.boto_session.client("s3"))
    model = create_model(target, sagemaker_session, source)
    client.create_endpoint_config(**component_endpoint_config(name, target, source, instances,
                                                              component))
    client.create_endpoint(EndpointName=name, EndpointConfigName=name)
    wait_in_service(sagemaker_session, name)
    client.create_inference_component(
        InferenceComponentName=component.name, EndpointName=name, VariantName="AllTraffic",
        Specification={"ModelName": model, "ComputeResourceRequirements": requirements},
        RuntimeConfig={"CopyCount": component.copies})
    wait_component(sagemaker_session, component.name)
    if component.max_copies > component.min_copies or component.min_copies == 0:
        autoscale_component(sagemaker_session, component)
    return name


def wait_component(sagemaker_session, name: str, poll_s: float = 15, timeout_s: float = 2400) -> None:
    client = sagemaker_session.sagemaker_client
    deadline = time.monotonic() + timeout_s
    while True:
        described = client.describe_inference_component(InferenceComponentName=name)
        status = described["InferenceComponentStatus"]
        if status == "InService":
            return
        if status == "Failed" or time.monotonic() > deadline:
            raise SystemExit(f"inference component {name} is {status}: "
                             f"{described.get('FailureReason', 'no reason given')}")
        time.sleep(poll_s)


def autoscale_component(sagemaker_session, component: Component) -> None:
    """Copies between min_copies and max_copies on concurrent requests per copy; at zero copies
    (and so zero instances) nothing is left to measure, so a step policy alarmed on
    NoCapacityInvocationFailures adds the first copy back, as AWS documents scale to zero."""
    client = sagemaker_session.boto_session.client("application-autoscaling")
    target = {"ServiceNamespace": "sagemaker",
              "ResourceId": f"inference-component/{component.name}",
              "ScalableDimension": "sagemaker:inference-component:DesiredCopyCount"}
    client.register_scalable_target(**target, MinCapacity=component.min_copies,
                                    MaxCapacity=component.max_copies)
    client.put_scaling_policy(
        **target, PolicyName=f"{component.name}-concurrency", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(component.copy_target),
            "PredefinedMetricSpecification": {"PredefinedMetricType":
                "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution"},
            "ScaleInCooldown": 300, "ScaleOutCooldown": 60})
    if component.min_copies > 0:
        return
    step_from_zero(sagemaker_session, target, f"{component.name}-from-zero", "Maximum", 60, dict(
        AlarmName=from_zero_alarm_name(component.name), MetricName="NoCapacityInvocationFailures",
        Statistic="Maximum", Period=30, EvaluationPeriods=1,
        Dimensions=[{"Name": "InferenceComponentName", "Value": component.name}]))


def step_from_zero(sagemaker_session, target: dict, policy_name: str, aggregation: str,
                   cooldown_s: int, alarm: dict) -> None:
    """At zero capacity target tracking has nothing to measure: a step policy adds one (copy or
    instance) whenever the alarm (a SageMaker metric of requests that found no capacity, at or
    above 1) goes off."""
    from_zero = sagemaker_session.boto_session.client("application-autoscaling").put_scaling_policy(
        **target, PolicyName=policy_name, PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": aggregation,
            "Cooldown": cooldown_s, "StepAdjustments": [{"MetricIntervalLowerBound": 0,
                                                         "ScalingAdjustment": 1}]})
    sagemaker_session.boto_session.client("cloudwatch").put_metric_alarm(
        **alarm, Namespace="AWS/SageMaker", Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="missing",
        AlarmActions=[from_zero["PolicyARN"]])


def deploy(target: common.Launch, sagemaker_session, source: ModelSource, name: str | None = None,
           instances: Instances = Instances(), serverless: Serverless | None = None,
           asynchronous: Asynchronous | None = None, capture: Capture | None = None,
           env: dict | None = None) -> str:
    """Create the model, the endpoint config and the endpoint; return the endpoint's name once
    it is in service (/ping passes, in local mode)."""
    if asynchronous:
        env = {**async_env(asynchronous.max_payload_mb), **(env or {})}
    name = name or f"byoc-{time.strftime('%Y%m%d-%H%M%S')}"
    check_architecture(target, sagemaker_session, source, None if serverless else
                       common.instance_type(target, source.gpu, instances.instance_type))
    model = create_model(target, sagemaker_session, source, env)
    client = sagemaker_session.sagemaker_client
    client.create_endpoint_config(**endpoint_config(
        name, model, target, source, instances, serverless, asynchronous, capture))
    client.create_endpoint(EndpointName=name, EndpointConfigName=name)
    if target.local:
        wait_for_local_endpoint(sagemaker_session)
        return name
    wait_in_service(sagemaker_session, name)
    if instances.autoscale_max and not serverless:
        if asynchronous:
            autoscale_async(sagemaker_session, name, instances.autoscale_max,
                            asynchronous.backlog_per_instance)
        else:
            autoscale(sagemaker_session, name, instances.instance_count, instances.autoscale_max,
                      instances.invocations_per_instance)
    return name


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
    step_from_zero(sagemaker_session, target, f"{endpoint}-from-zero", "Average", 300, dict(
        AlarmName=backlog_alarm_name(endpoint), MetricName="HasBacklogWithoutCapacity",
        Statistic="Average", Period=60, EvaluationPeriods=2, DatapointsToAlarm=2,
        Dimensions=[{"Name": "EndpointName", "Value": endpoint}]))


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-data",
                        help="the training job's model.tar.gz (s3://, or a file with --local)")
    source.add_argument("--model-package",
                        help="an Approved version's ARN from the model registry (AWS only)")
    source.add_argument("--multi-model", metavar="S3_PREFIX",
                        help="a multi-model endpoint of every model.tar.gz under this s3:// "
                             "prefix, each loaded when first invoked (AWS only, CPU instances)")
    parser.add_argument("--endpoint-name", default=None)
    parser.add_argument("--instance-type", default="ml.c5.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    common.add_gpu_argument(parser)
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
    parser.add_argument("--inference-component", default=None, metavar="NAME",
                        help="host the model as an inference component of this name, on "
                             "instances SageMaker scales itself (AWS only)")
    parser.add_argument("--copies", type=int, default=None,
                        help="with --inference-component: copies of the model at first (1)")
    parser.add_argument("--min-copies", type=int, default=None,
                        help="with --inference-component: fewest copies (0: scale to zero "
                             "instances when idle; the first request after waits minutes)")
    parser.add_argument("--max-copies", type=int, default=None,
                        help="with --inference-component: most copies (autoscaled between)")
    parser.add_argument("--cpu-cores", type=float, default=None,
                        help="with --inference-component: CPU cores per copy (1)")
    parser.add_argument("--capture", default=None,
                        help="s3:// prefix: record requests and answers there (data capture)")
    parser.add_argument("--capture-percent", type=int, default=20,
                        help="share of the requests that data capture records (1-100)")


def specs(args: argparse.Namespace):
    """The deploy flags as deploy() takes them."""
    source = ModelSource(model_data=args.model_data or args.multi_model,
                         model_package=args.model_package, gpu=args.gpu,
                         multi_model=bool(args.multi_model))
    instances = Instances(instance_type=args.instance_type, instance_count=args.instance_count,
                          autoscale_max=args.autoscale_max,
                          invocations_per_instance=args.invocations_per_instance)
    serverless = Serverless(args.memory_mb, args.max_concurrency) if args.serverless else None
    asynchronous = Asynchronous(args.async_output, args.max_concurrency,
                                args.async_max_payload_mb, args.backlog_per_instance
                                ) if args.async_output else None
    capture = Capture(args.capture, args.capture_percent) if args.capture else None
    component = None
    if args.inference_component:
        copies = 1 if args.copies is None else args.copies
        minimum = min(copies, 1) if args.min_copies is None else args.min_copies
        component = Component(
            name=args.inference_component, copies=copies, min_copies=minimum,
            max_copies=max(copies, minimum) if args.max_copies is None else args.max_copies,
            cpu_cores=1 if args.cpu_cores is None else args.cpu_cores)
    return source, instances, serverless, asynchronous, capture, component


def check_component_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The inference-component flags go together, on AWS, on a model.tar.gz."""
    given = [flag for flag, value in (("--copies", args.copies), ("--min-copies", args.min_copies),
                                      ("--max-copies", args.max_copies),
                                      ("--cpu-cores", args.cpu_cores)) if value is not None]
    if not args.inference_component:
        if given:
            parser.error(f"{' and '.join(given)} without --inference-component: they set the "
                         "component's copies (add --inference-component NAME)")
        return
    if args.local or args.serverless or args.async_output:
        parser.error("--inference-component runs on AWS, on instances (not with --local, "
                     "--serverless or --async-output)")
    if args.model_package:
        parser.error("--inference-component takes --model-data (the copies' memory is "
                     "estimated from the model.tar.gz)")
    if args.capture:
        parser.error("--capture with --inference-component: the drift monitor reads the model "
                     "from the endpoint's variant, which a component's endpoint has not")
    copies = 1 if args.copies is None else args.copies
    low = min(copies, 1) if args.min_copies is None else args.min_copies
    high = copies if args.max_copies is None else args.max_copies
    if low < 0 or copies < low or high < copies or high < 1:
        parser.error(f"copies: need 0 <= --min-copies ({low}) <= --copies ({copies}) <= "
                     f"--max-copies ({high}), and --max-copies of at least 1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    add_deploy_arguments(parser)
    args = parser.parse_args(argv)
    if args.serverless and (args.local or args.gpu):
        parser.error("--serverless runs on AWS, on CPUs only")
    if args.async_output and (args.local or args.serverless):
        parser.error("--async-output runs on AWS, on instances (not --local or --serverless)")
    if args.capture and (args.local or args.serverless):
        parser.error("--capture runs on AWS, on instance endpoints (serverless endpoints and "
                     "local mode have no data capture)")
    if not 1 <= args.capture_percent <= 100:
        parser.error(f"--capture-percent {args.capture_percent}: give 1 to 100")
    if args.model_package and args.local:
        parser.error("--model-package runs on AWS (local mode has no model registry): use "
                     "--model-data with the version's model.tar.gz")
    if args.multi_model and (args.local or args.serverless or args.async_output or args.gpu
                             or args.capture or args.inference_component):
        parser.error("--multi-model runs on AWS, on CPU instances, real-time (not with --local, "
                     "--serverless, --async-output, --gpu, --capture or --inference-component)")
    check_component_flags(parser, args)
    common.check_s3_uri("--model-data", args.model_data, args.local)
    common.check_s3_uri("--multi-model", args.multi_model, local_mode=False)
    common.check_s3_uri("--async-output", args.async_output, local_mode=False)
    common.check_s3_uri("--capture", args.capture, local_mode=False)
    target = common.launch(args)
    source, instances, serverless, asynchronous, capture, component = specs(args)
    sagemaker_session = common.session(target)
    if component:
        name = deploy_component(target, sagemaker_session, source,
                                args.endpoint_name or f"byoc-{time.strftime('%Y%m%d-%H%M%S')}",
                                instances, component)
    else:
        name = deploy(target, sagemaker_session, source, args.endpoint_name, instances,
                      serverless, asynchronous, capture)
    print(f"endpoint: {name}")
    if target.local:  # the local endpoint lives as long as this process
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
            for item in delete_endpoint(sagemaker_session, name, target.image_tag):
                print(f"deleted {item}")
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
