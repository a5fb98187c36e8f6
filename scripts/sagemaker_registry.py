"""The model registry: register a trained model as a version of a model package group, list the
versions with their test figures, approve or reject one. Deploy an approved version with
`scripts.sagemaker_deploy --model-package ARN`.

    python -m scripts.sagemaker_registry register --group dogs \
        --model-data s3://BUCKET/runs/JOB/output/model.tar.gz [--metrics s3://.../evaluation.json] \
        [--mlflow ARN_OR_URL]
    python -m scripts.sagemaker_registry list --group dogs
    python -m scripts.sagemaker_registry approve ARN [--note "checked by Ana"]
    python -m scripts.sagemaker_registry reject ARN --note "worse on the new breeds"

A version starts as PendingManualApproval (the pipeline registers only models that passed its
accuracy condition); an endpoint is made only from an Approved one. With --mlflow (or
SAGEMAKER_MLFLOW), the version records the MLflow run of the job that trained the model (the
run whose model_location is --model-data) in its metadata, and the run gets the version's ARN
as its model_package_arn tag.
"""
from __future__ import annotations

import argparse
import json
import sys

from artifact.content_types import JSON_TYPE, REQUEST_TYPES, RESPONSE_TYPES
from scripts import common, platforms
from scripts.sagemaker_model import APPROVED, PENDING, REJECTED, ModelSource, serving_container
from train.tracking import mlflow_client
from util.s3 import split_s3_uri

CPU_INSTANCES = ["ml.c6i.xlarge", "ml.c6i.2xlarge", "ml.c7i.xlarge", "ml.m6i.xlarge",
                 "ml.c5.xlarge"]  # x86: endpoints and batch transform
GPU_INSTANCES = ["ml.g5.xlarge", "ml.g6.xlarge", "ml.g4dn.xlarge"]


def model_metrics(evaluation_uri) -> dict:
    """The registry's record of the model's quality: the evaluation.json on S3 (its
    multiclass_classification_metrics block is SageMaker's Model Quality format)."""
    return {"ModelQuality": {"Statistics": {"ContentType": JSON_TYPE,
                                            "S3Uri": evaluation_uri}}}


def package_arguments(container: dict, group, gpu: bool = False, evaluation_uri=None,
                      description: str | None = None, arm64: bool = False) -> dict:
    """SDK v3's create_model_package_from_containers arguments, shared by the register command
    and the pipeline's Register step (where the model data and the evaluation are pipeline
    properties). arm64: the serving image has an arm64 entry, so Graviton's endpoint instances
    are supported too (batch transform has none)."""
    instances = GPU_INSTANCES if gpu else CPU_INSTANCES
    endpoints = instances + (platforms.graviton_endpoint_instances() if arm64 else [])
    return dict(
        containers=[container], content_types=list(REQUEST_TYPES),
        response_types=list(RESPONSE_TYPES), inference_instances=endpoints,
        transform_instances=instances, model_package_group_name=group, approval_status=PENDING,
        description=description,
        model_metrics=model_metrics(evaluation_uri) if evaluation_uri is not None else None,
        domain="COMPUTER_VISION", task="IMAGE_CLASSIFICATION")


def register(target: common.Launch, sagemaker_session, source: ModelSource, group: str,
             evaluation_uri: str | None = None, run: dict[str, str] | None = None) -> str:
    """A new PendingManualApproval version of the group (made when missing); its ARN. run: the
    MLflow run that trained it, as the version's metadata."""
    from sagemaker.core.model_registry import create_model_package_from_containers

    container = serving_container(target, source.gpu, common.uri(source.model_data, False),
                                  sagemaker_session.boto_region_name)
    architectures = platforms.ecr_architectures(  # read back: it must be one SageMaker pulls
        container["Image"], sagemaker_session.boto_session.client("ecr"))
    package = create_model_package_from_containers(
        sagemaker_session, **package_arguments(container, group, source.gpu, evaluation_uri,
                                               f"model.tar.gz {source.model_data}",
                                               arm64="arm64" in architectures),
        customer_metadata_properties=run)
    return package["ModelPackageArn"]


def training_run(client, model_data: str):
    """The MLflow run of the job that wrote model_data (train/tracking.py tags it so), or None."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, max_results=1,
                               filter_string=f"tags.model_location = '{model_data}'")
    return found[0] if found else None


def versions(sagemaker_session, group: str) -> list[dict]:
    """Every version of the group, newest first, with its test accuracy when it has metrics."""
    client = sagemaker_session.sagemaker_client
    rows, token = [], None
    while True:
        page = client.list_model_packages(ModelPackageGroupName=group, SortBy="CreationTime",
                                          SortOrder="Descending", **({"NextToken": token} if token else {}))
        for summary in page["ModelPackageSummaryList"]:
            described = client.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            rows.append({"version": summary.get("ModelPackageVersion"),
                         "arn": summary["ModelPackageArn"],
                         "status": summary.get("ModelApprovalStatus"),
                         "created": str(summary.get("CreationTime", "")),
                         "accuracy": test_accuracy(sagemaker_session, described)})
        token = page.get("NextToken")
        if not token:
            return rows


def test_accuracy(sagemaker_session, described: dict) -> float | None:
    uri = described.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get("S3Uri")
    if not uri:
        return None
    bucket, key = split_s3_uri(uri)
    s3 = sagemaker_session.boto_session.client("s3")
    try:
        report = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        return report["multiclass_classification_metrics"]["accuracy"]["value"]
    except (s3.exceptions.ClientError, ValueError, KeyError, TypeError):
        return None  # a missing or foreign metrics file: the listing goes on without it


def set_status(sagemaker_session, arn: str, status: str, note: str | None) -> None:
    request = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if note:
        request["ApprovalDescription"] = note
    sagemaker_session.sagemaker_client.update_model_package(**request)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("register", help="a model.tar.gz as a new PendingManualApproval version")
    add.add_argument("--group", required=True, help="model package group (made when missing)")
    add.add_argument("--model-data", required=True, help="the training job's s3:// model.tar.gz")
    add.add_argument("--metrics", help="s3:// evaluation.json to record as the model's quality")
    common.add_gpu_argument(add)
    common.add_mlflow_arguments(add, experiment=False, run_name=False)
    listing = commands.add_parser("list", help="the group's versions, newest first")
    listing.add_argument("--group", required=True)
    for name in ("approve", "reject"):
        command = commands.add_parser(name, help=f"{name} a version")
        command.add_argument("arn", help="the version's model package ARN")
        command.add_argument("--note", required=name == "reject",
                             help="why (recorded as the approval description)")
    args = parser.parse_args(argv)
    if args.local:
        parser.error("the model registry runs on AWS only (SageMaker local mode has none)")
    if args.command == "register":
        common.check_s3_uri("--model-data", args.model_data, local_mode=False)
        common.check_s3_uri("--metrics", args.metrics, local_mode=False)
    target = common.launch(args)
    sagemaker_session = common.session(target)
    if args.command == "register":
        tracking = common.tracking(args)
        client = mlflow_client(tracking.uri) if tracking else None
        run = training_run(client, args.model_data) if client else None
        if tracking and run is None:
            print(f"no MLflow run at {tracking.uri} trained {args.model_data}: the version "
                  "records none")
        arn = register(target, sagemaker_session,
                       ModelSource(model_data=args.model_data, gpu=args.gpu), args.group,
                       args.metrics, run and {"mlflow_run_id": run.info.run_id,
                                              "mlflow_tracking_uri": tracking.uri})
        if run is not None:
            client.set_tag(run.info.run_id, "model_package_arn", arn)
            print(f"MLflow run {run.info.run_id} ({run.info.run_name}) trained it")
        print(f"registered: {arn} ({PENDING})")
    elif args.command == "list":
        rows = versions(sagemaker_session, args.group)
        if not rows:
            print(f"model package group {args.group} has no versions")
        for row in rows:
            accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
            print(f"{row['version']:>4}  {row['status']:<22} test top-1 {accuracy:<7} "
                  f"{row['created'][:19]}  {row['arn']}")
    else:
        status = APPROVED if args.command == "approve" else REJECTED
        set_status(sagemaker_session, args.arn, status, args.note)
        print(f"{args.arn}: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
