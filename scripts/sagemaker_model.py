"""The SageMaker Model that an endpoint, a batch transform or the registry is made from: the
serving image on a model.tar.gz, or an approved version of the model registry.

One module of its own, below sagemaker_deploy, sagemaker_batch_transform and sagemaker_registry,
which all make models.
"""
from __future__ import annotations

from dataclasses import dataclass

from scripts import common, platforms

PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
# The container's Prometheus text, which SageMaker scrapes on 8080 every 60 s (serve/metrics.py).
METRICS_PATH = "/metrics"
METRICS_PERIOD_S = 60


@dataclass(frozen=True)
class ModelSource:
    """What is served: a model.tar.gz (s3://, or a file in local mode) on the CPU or GPU
    serving image, or an approved model package. multi_model: model_data is an s3:// prefix of
    model.tar.gz files, served by one multi-model endpoint (CPU only: AWS offers GPU
    multi-model endpoints with its Triton container alone)."""
    model_data: str | None = None
    model_package: str | None = None
    gpu: bool = False
    multi_model: bool = False


def require_approved(sagemaker_client, arn: str) -> dict:
    """The version's description; SystemExit saying what to do when it is not approved."""
    try:
        described = sagemaker_client.describe_model_package(ModelPackageName=arn)
    except sagemaker_client.exceptions.ClientError as e:
        raise SystemExit(f"model package {arn}: {e.response['Error']['Message']}") from None
    status = described.get("ModelApprovalStatus")
    if status != APPROVED:
        raise SystemExit(
            f"model package {arn} is {status}, not Approved: only an approved version is "
            f"deployed (python -m scripts.sagemaker_registry approve {arn})")
    return described


def check_architecture(target: common.Launch, sagemaker_session, source: ModelSource,
                       instance_type: str | None) -> None:
    """Before any model is made: the image that will serve source has the architecture of
    instance_type (None: a serverless endpoint), as ECR holds it; in local mode, the local
    image has this machine's Docker's. An unapproved package is refused first."""
    if source.model_package:
        described = require_approved(sagemaker_session.sagemaker_client, source.model_package)
        image = described["InferenceSpecification"]["Containers"][0]["Image"]
    else:
        image = common.image_uri(common.serving_image(source.gpu), target,
                                 sagemaker_session.boto_region_name)
    if target.local:
        platforms.require(image, platforms.local_architectures(image),
                          platforms.docker_architecture(), "this machine's Docker", local=True)
    elif ".dkr.ecr." in image:  # another registry's images cannot be read from here
        ecr = sagemaker_session.boto_session.client("ecr")
        platforms.require(image, platforms.ecr_architectures(image, ecr),
                          platforms.instance_architecture(instance_type),
                          instance_type or "a serverless endpoint")


def serving_container(target: common.Launch, gpu: bool, model_data_url, region: str | None = None,
                      env: dict | None = None, multi_model: bool = False) -> dict:
    """The serving image on a model.tar.gz's URI (a pipeline property too): a model's
    container, or a model package's. multi_model: the URI is a prefix of model.tar.gz files,
    each loaded on demand (SageMaker then sets SAGEMAKER_MULTI_MODEL=true in the container)."""
    container = {"Image": common.image_uri(common.serving_image(gpu), target, region),
                 "ModelDataUrl": model_data_url, "Environment": dict(env or {})}
    if multi_model:
        container["Mode"] = "MultiModel"
    return container


# Where SageMaker scrapes the container's metrics (its default, stated).
CONTAINER_METRICS = {"MetricsEndpoints": [{"MetricsEndpointPath": METRICS_PATH,
                                           "MetricPublishFrequencyInSeconds": METRICS_PERIOD_S}]}


def create_model(target: common.Launch, sagemaker_session, source: ModelSource,
                 env: dict | None = None, name: str | None = None) -> str:
    """CreateModel; returns the model's name. An unapproved package is refused first."""
    client = sagemaker_session.sagemaker_client
    request = {"ExecutionRoleArn": common.role(target)}
    if source.model_package:
        require_approved(client, source.model_package)
        container = {"ModelPackageName": source.model_package}
        if env:
            container["Environment"] = dict(env)
        request["Containers"] = [container]
        base = "byoc-package"
    else:
        container = serving_container(target, source.gpu,
                                      common.uri(source.model_data, target.local),
                                      sagemaker_session.boto_region_name, env, source.multi_model)
        if not target.local:  # local mode's engine takes the image, the data and the env
            container["ContainerMetricsConfig"] = CONTAINER_METRICS
        request["PrimaryContainer"] = container
        base = common.image_name(container["Image"])
    request["ModelName"] = name or common.unique_name(base)
    client.create_model(**request)
    return request["ModelName"]
