"""Delete endpoints with their drift monitors (the scheduled pipeline, its schedule and alarm, or
Model Monitor's schedules), inference components, endpoint configs, models, autoscaling targets
and alarms (they cost
money while they exist: a real-time endpoint bills per instance-hour even when idle, and a
monitor starts a processing job every hour).

    python -m scripts.sagemaker_cleanup --endpoint-name dogs [--endpoint-name other]
"""
from __future__ import annotations

import argparse
import sys
import time

from botocore.exceptions import ClientError

from scripts import common
from scripts.sagemaker_monitor import delete_drift_monitor


def backlog_alarm_name(endpoint: str) -> str:
    """The CloudWatch alarm that scales an asynchronous endpoint up from zero instances."""
    return f"{endpoint}-has-backlog-without-capacity"


def from_zero_alarm_name(component: str) -> str:
    """The CloudWatch alarm that adds an inference component's first copy back from zero."""
    return f"{component}-no-capacity"


def delete_components(sagemaker_session, endpoint: str, timeout_s: float = 1200) -> tuple[list, list]:
    """The endpoint's inference components, each with its autoscaling and alarm, deleted and
    waited for (SageMaker refuses to delete an endpoint that still hosts one). Returns (what it
    deleted, the components' models)."""
    client = sagemaker_session.sagemaker_client
    autoscaling = sagemaker_session.boto_session.client("application-autoscaling")
    cloudwatch = sagemaker_session.boto_session.client("cloudwatch")
    names = [c["InferenceComponentName"] for c in client.list_inference_components(
        EndpointNameEquals=endpoint)["InferenceComponents"]]
    deleted, models = [], []
    for name in names:
        described = client.describe_inference_component(InferenceComponentName=name)
        models.append(described["Specification"]["ModelName"])
        deleted += common.deregister_scalable_target(
            autoscaling, f"inference-component/{name}",
            "sagemaker:inference-component:DesiredCopyCount")
        deleted += common.delete_alarm(cloudwatch, from_zero_alarm_name(name))
        client.delete_inference_component(InferenceComponentName=name)
    started = time.monotonic()
    for name in names:
        common.wait_until_gone(
            lambda: client.describe_inference_component(InferenceComponentName=name),
            f"inference component {name}", started, timeout_s, poll_s=10,
            gone_codes=("ValidationException", "ResourceNotFound"))
        deleted.append(f"inference component {name}")
    return deleted, models


def delete_endpoint(sagemaker_session, name: str, image_tag: str = "latest") -> list[str]:
    """Deletes the endpoint, its inference components, its config and its models; returns what
    it deleted."""
    client = sagemaker_session.sagemaker_client
    deleted = []
    try:
        config_name = client.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    except ClientError as e:
        if e.response["Error"]["Code"] != "ValidationException":  # SageMaker's "Could not find"
            raise
        raise SystemExit(f"no endpoint {name!r}: {e.response['Error']['Message']}") from None
    config = client.describe_endpoint_config(EndpointConfigName=config_name)
    models = [variant["ModelName"] for variant in config["ProductionVariants"]
              if variant.get("ModelName")]
    if not common.is_local(sagemaker_session):
        deleted += delete_drift_monitor(sagemaker_session, name)
        components, component_models = delete_components(sagemaker_session, name)
        deleted += components
        models += component_models
        autoscaling = sagemaker_session.boto_session.client("application-autoscaling")
        for variant in config["ProductionVariants"]:
            deleted += common.deregister_scalable_target(
                autoscaling, f"endpoint/{name}/variant/{variant['VariantName']}",
                "sagemaker:variant:DesiredInstanceCount")
        # an asynchronous endpoint's scale-from-zero alarm
        deleted += common.delete_alarm(sagemaker_session.boto_session.client("cloudwatch"),
                                       backlog_alarm_name(name))
    client.delete_endpoint(EndpointName=name)
    deleted.append(f"endpoint {name}")
    client.delete_endpoint_config(EndpointConfigName=config_name)
    deleted.append(f"endpoint config {config_name}")
    for model in models:
        client.delete_model(ModelName=model)
        deleted.append(f"model {model}")
    if common.is_local(sagemaker_session):
        common.remove_local_containers("serve", "serve-gpu", image_tag=image_tag)
    return deleted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    parser.add_argument("--endpoint-name", action="append", required=True)
    args = parser.parse_args(argv)
    target = common.launch(args)
    sagemaker_session = common.session(target)
    for name in args.endpoint_name:
        for item in delete_endpoint(sagemaker_session, name, target.image_tag):
            print(f"deleted {item}")
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
