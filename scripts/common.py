"""What the launch scripts share: a SageMaker session (real, or local mode on this machine), the
images, the role, and the request shapes that every script agrees on.

Local mode (`--local`) runs the same SDK calls against Docker on this machine: instance type
"local", file:// inputs and outputs, the images' local tags. It needs no AWS account: a region,
dummy credentials and a role ARN of the right shape are filled in when none are configured.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from pathlib import Path

import boto3

LOCAL_ROLE = "arn:aws:iam::111111111111:role/service-role/byoc-local"
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # v2 is pinned on purpose


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true",
                        help="SageMaker local mode: run the containers with Docker on this machine")
    parser.add_argument("--region", default=None, help="AWS region (default: your AWS config)")
    parser.add_argument("--role", default=os.environ.get("SAGEMAKER_ROLE"),
                        help="IAM role ARN that SageMaker assumes (or SAGEMAKER_ROLE)")
    parser.add_argument("--image-tag", default="latest", help="tag of the pushed or local images")


def session(args: argparse.Namespace):
    """A sagemaker Session for AWS, or a LocalSession with telemetry off for --local."""
    if args.local:
        return local_session(args.region)
    import sagemaker

    boto_session = boto3.Session(region_name=args.region)
    return sagemaker.Session(boto_session=boto_session)


def local_session(region: str | None = None, serving_port: int | None = None):
    from sagemaker.local import LocalSession

    os.environ.setdefault("AWS_DEFAULT_REGION", region or "us-east-1")
    if boto3.Session().get_credentials() is None:  # local mode signs nothing it sends
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    boto_session = boto3.Session(region_name=region or os.environ["AWS_DEFAULT_REGION"])
    local = LocalSession(
        boto_session=boto_session, disable_local_code=True,
        # Telemetry would call AWS from local mode; opting out keeps it offline.
        sagemaker_config={"SchemaVersion": "1.0",
                          "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}})
    local.config = {"local": {"local_code": True,
                              "serving_port": serving_port or int(os.environ.get("PORT", 8080))}}
    return local


def pipeline_session(local: bool, region: str | None = None):
    """A PipelineSession for AWS (nothing runs until the pipeline is started there), or a
    LocalPipelineSession that runs the steps on this machine's Docker, offline."""
    if local:
        from sagemaker.workflow.pipeline_context import LocalPipelineSession

        offline = local_session(region)  # region, credentials, telemetry off
        session = LocalPipelineSession(boto_session=offline.boto_session, disable_local_code=True)
        session.config = {"local": {"local_code": True}}
        session.sagemaker_config = offline.sagemaker_config
        return session
    from sagemaker.workflow.pipeline_context import PipelineSession

    return PipelineSession(boto_session=boto3.Session(region_name=region))


def is_local(sagemaker_session) -> bool:
    from sagemaker.local import LocalSession

    return isinstance(sagemaker_session, LocalSession)


def remove_local_containers(*targets: str, image_tag: str = "latest") -> None:
    """SDK v2 local mode leaves its containers behind (stopped); remove those of our images."""
    prefix = os.environ.get("IMAGE_PREFIX", "byoc")
    ids = set()
    for target in targets:
        listed = subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project",
             "--filter", f"ancestor={prefix}-{target}:{image_tag}"],
            capture_output=True, text=True, check=False).stdout.split()
        ids.update(listed)
    if ids:
        subprocess.run(["docker", "rm", "-f", *sorted(ids)], capture_output=True, check=False)


def role(args: argparse.Namespace) -> str:
    if args.role:
        if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", args.role):
            raise SystemExit(f"--role {args.role!r} is not an IAM role ARN "
                             "(arn:aws:iam::<account>:role/<name>)")
        return args.role
    if args.local:
        return LOCAL_ROLE
    raise SystemExit("pass --role arn:aws:iam::<account>:role/<name> (or set SAGEMAKER_ROLE): the "
                     "role SageMaker assumes to read your data and images (README: Run it on AWS)")


def image_uri(target: str, args: argparse.Namespace, sagemaker_session=None) -> str:
    """The local tag for --local, else the image pushed by build_and_push.sh to this account's ECR."""
    name = f"{os.environ.get('IMAGE_PREFIX', 'byoc')}-{target}:{args.image_tag}"
    if args.local:
        return name
    account = boto3.Session(region_name=args.region).client("sts").get_caller_identity()["Account"]
    region = sagemaker_session.boto_region_name if sagemaker_session else args.region
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{name}"


def uri(location: str | Path, local: bool) -> str:
    """s3:// stays; a local path becomes file:// (local mode reads and writes those)."""
    text = str(location)
    if text.startswith(("s3://", "file://")):
        return text
    if not local:
        raise SystemExit(f"{text} is a local path: upload it to S3 first (scripts/upload_data.py),"
                         " or use --local")
    return "file://" + str(Path(text).resolve())


def name_values(items: list[str], flag: str) -> dict[str, str]:
    """["a=1", "b=x"] -> {"a": "1", "b": "x"}; SystemExit naming flag for an item without "="."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {item!r}: write NAME=VALUE")
        values[key] = value
    return values


def load_hyperparameters(path: str | None, overrides: list[str]) -> dict:
    values = json.loads(Path(path).read_text()) if path else {}
    return {**values, **name_values(overrides, "--hp")}
