"""What the launch scripts share: where they send their requests (AWS, or local mode on this
machine), the images, the role, the shared flag groups, and the request shapes that every
script agrees on. SageMaker Python SDK v3.

Local mode (`--local`) runs the same requests against Docker on this machine: instance type
"local", local folders for inputs and outputs, the images' local tags. It needs no AWS account: a
region, dummy credentials and a role ARN of the right shape are filled in when none are
configured.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3

from scripts import platforms
from train.tracking import encode_tags, managed
from util.s3 import S3AccessError, split_s3_uri

LOCAL_ROLE = "arn:aws:iam::111111111111:role/service-role/byoc-local"
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/.+")
# Telemetry would call AWS from local mode, and it reports this kit's use: off everywhere.
OFFLINE_CONFIG = {"SchemaVersion": "1.0",
                  "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


@dataclass(frozen=True)
class Launch:
    """Where a script sends its requests and as whom: read once from the common flags."""
    local: bool = False
    region: str | None = None
    role: str | None = None  # an IAM role ARN, checked
    image_tag: str = "latest"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true",
                        help="SageMaker local mode: run the containers with Docker on this machine")
    parser.add_argument("--region", default=None, help="AWS region (default: your AWS config)")
    parser.add_argument("--role", default=os.environ.get("SAGEMAKER_ROLE"),
                        help="IAM role ARN that SageMaker assumes (or SAGEMAKER_ROLE)")
    parser.add_argument("--image-tag", default="latest", help="tag of the pushed or local images")


def launch(args: argparse.Namespace) -> Launch:
    """The common flags, checked: a role that is not an IAM role ARN fails here."""
    if args.role and not ROLE_ARN.fullmatch(args.role):
        raise SystemExit(f"--role {args.role!r} is not an IAM role ARN "
                         "(arn:aws:iam::<account>:role/<name>)")
    return Launch(local=args.local, region=args.region, role=args.role, image_tag=args.image_tag)


MLFLOW_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:"
                        r"(mlflow-app|mlflow-tracking-server)/[A-Za-z0-9-]+")


@dataclass(frozen=True)
class Tracking:
    """The MLflow server that training jobs record themselves in (train/tracking.py): a
    SageMaker MLflow App's or tracking server's ARN, or the URL of a server of your own."""
    uri: str
    experiment: str | None = None
    run_name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()  # more tags of each run (BYOC_MLFLOW_TAGS)

    @property
    def managed(self) -> bool:
        return managed(self.uri)

    def environment(self, training_image: str, output: str) -> dict[str, str]:
        """What the training container reads: where to log, and the run's image and model."""
        env = {"MLFLOW_TRACKING_URI": self.uri, "BYOC_TRAINING_IMAGE": training_image}
        if self.experiment:
            env["MLFLOW_EXPERIMENT_NAME"] = self.experiment
        if self.run_name:
            env["MLFLOW_RUN_NAME"] = self.run_name
        if output.startswith("s3://"):
            env["BYOC_OUTPUT_PATH"] = output
        if self.tags:
            env["BYOC_MLFLOW_TAGS"] = encode_tags(dict(self.tags))
        return env

    def request_fields(self) -> dict:
        """CreateTrainingJob's MlflowConfig, for SageMaker's managed MLflow alone."""
        if not self.managed:
            return {}
        config = {"MlflowResourceArn": self.uri}
        if self.experiment:
            config["MlflowExperimentName"] = self.experiment
        if self.run_name:
            config["MlflowRunName"] = self.run_name
        return {"MlflowConfig": config}


def add_mlflow_arguments(parser: argparse.ArgumentParser, experiment: bool = True,
                         run_name: bool = True) -> None:
    parser.add_argument("--mlflow", metavar="URI_OR_ARN", default=os.environ.get("SAGEMAKER_MLFLOW"),
                        help="record the training jobs in MLflow: a SageMaker MLflow App's or "
                             "tracking server's ARN, or a server's http(s):// URL (or "
                             "SAGEMAKER_MLFLOW)")
    if experiment:
        parser.add_argument("--mlflow-experiment", metavar="NAME",
                            help="the MLflow experiment (default: byoc-image-classifier)")
    if run_name:
        parser.add_argument("--mlflow-run-name", metavar="NAME",
                            help="the job's MLflow run (default: the job's name)")


def tracking(args: argparse.Namespace) -> Tracking | None:
    """The MLflow flags, checked before any AWS call."""
    uri = (args.mlflow or "").strip()
    experiment = getattr(args, "mlflow_experiment", None)
    run_name = getattr(args, "mlflow_run_name", None)
    if not uri:
        if experiment or run_name:
            raise SystemExit("--mlflow-experiment and --mlflow-run-name need --mlflow (or "
                             "SAGEMAKER_MLFLOW)")
        return None
    if managed(uri) and not MLFLOW_ARN.fullmatch(uri):
        raise SystemExit(f"--mlflow {uri!r} is not the ARN of an MLflow App or tracking server "
                         "(arn:aws:sagemaker:REGION:ACCOUNT:mlflow-app/ID, or "
                         "...:mlflow-tracking-server/NAME): copy it from SageMaker Studio's "
                         "MLflow page or `aws sagemaker list-mlflow-apps`")
    if not uri.startswith(("arn:", "http://", "https://")):
        raise SystemExit(f"--mlflow {uri!r}: give an MLflow App's ARN or a server's "
                         "http(s):// URL")
    return Tracking(uri, experiment, run_name)


def role(target: Launch) -> str:
    if target.role:
        return target.role
    if target.local:
        return LOCAL_ROLE
    raise SystemExit("pass --role arn:aws:iam::<account>:role/<name> (or set SAGEMAKER_ROLE): the "
                     "role SageMaker assumes to read your data and images (README: Run it on AWS)")


NO_CREDENTIALS = ("no AWS credentials: run `aws configure` (or `aws sso login` for IAM "
                  "Identity Center), or set AWS_PROFILE to a profile that has them")
NO_REGION = ("no AWS region: pass --region (for example --region us-east-1), or set one with "
             "`aws configure` (or AWS_DEFAULT_REGION, or AWS_PROFILE for a profile that has one)")
REFUSED_CREDENTIALS = ("AWS refused the credentials ({code}): they are expired or wrong; run "
                       "`aws configure` (or `aws sso login`), or set AWS_PROFILE to another "
                       "profile")
CREDENTIAL_ERROR_CODES = {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId",
                          "UnrecognizedClientException", "InvalidAccessKeyId",
                          "SignatureDoesNotMatch", "RequestExpired"}


def aws_session(region: str | None) -> boto3.Session:
    """A boto3 session for AWS, checked before any request: SystemExit with what to set up when
    there is no region or no credentials (what a new user meets before `aws configure`)."""
    from botocore.exceptions import ProfileNotFound

    try:
        boto_session = boto3.Session(region_name=region)
    except ProfileNotFound as e:
        raise SystemExit(f"{e}: run `aws configure --profile {e.kwargs.get('profile')}`, or "
                         "set AWS_PROFILE to a profile you have") from None
    if not boto_session.region_name:
        raise SystemExit(NO_REGION)
    if boto_session.get_credentials() is None:
        raise SystemExit(NO_CREDENTIALS)
    return boto_session


def sso_login(profile: str | None) -> str:
    """What to say of an IAM Identity Center login that is missing or expired."""
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    return (f"your IAM Identity Center (SSO) login for profile {name} is missing or has "
            f"expired: run `aws sso login --profile {name}`, then try again")


def entry_point(main: Callable[[], int]) -> int:
    """What `python -m scripts.X` runs: main, with AWS's set-up errors that only a request can
    reveal (an SSO login missing or expired, refused keys, a bucket that is not there or not
    yours) as one line that says what to do."""
    from botocore.exceptions import (ClientError, NoCredentialsError, NoRegionError,
                                     PartialCredentialsError, SSOError, TokenRetrievalError)

    try:
        return main()
    except SSOError:  # SSOTokenLoadError (never logged in), UnauthorizedSSOTokenError (expired)
        raise SystemExit(sso_login(boto3.Session().profile_name)) from None
    except (NoCredentialsError, PartialCredentialsError, TokenRetrievalError) as e:
        raise SystemExit(f"{e}; {NO_CREDENTIALS}") from None
    except NoRegionError:
        raise SystemExit(NO_REGION) from None
    except S3AccessError as e:
        raise SystemExit(str(e)) from None
    except Exception as e:
        # boto3's uploads wrap the request's ClientError in an S3UploadFailedError
        refused = e if isinstance(e, ClientError) else e.__context__
        code = (refused.response.get("Error", {}).get("Code", "")
                if isinstance(refused, ClientError) else "")
        if code not in CREDENTIAL_ERROR_CODES:
            raise
        raise SystemExit(REFUSED_CREDENTIALS.format(code=code)) from None


def check_s3_uri(flag: str, value: str | None, local: bool = False,
                 local_mode: bool = True) -> None:
    """A location that must be on S3, checked before any AWS call: SystemExit naming the flag.
    local: the run is in local mode, where a local path may stand in; local_mode: the script
    has one (its message then says so)."""
    if value is None or (local and not value.startswith("s3:")):
        return
    try:
        split_s3_uri(value)
    except ValueError:
        hint = ("; a folder or file on this machine: upload it first (scripts/upload_data.py), "
                "or use --local" if local_mode and not value.startswith("s3:") else "")
        raise SystemExit(f"{flag} {value!r} is not an S3 location: write "
                         f"s3://BUCKET/PREFIX{hint}") from None


def session(target: Launch):
    """SDK v3's Session for AWS, or its LocalSession (the local engine) for --local."""
    if target.local:
        return local_session(target.region)
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=aws_session(target.region), sagemaker_config=OFFLINE_CONFIG)


def offline_environment(region: str | None = None) -> str:
    """The region local mode runs in; dummy credentials when there are none (local mode signs
    nothing it sends)."""
    os.environ.setdefault("AWS_DEFAULT_REGION", region or "us-east-1")
    # SDK v3 checks the role with IAM before a job; local mode's role is a placeholder.
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    if boto3.Session().get_credentials() is None:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    return region or os.environ["AWS_DEFAULT_REGION"]


def local_session(region: str | None = None, serving_port: int | None = None):
    from sagemaker.core.local import LocalSession

    boto_session = boto3.Session(region_name=offline_environment(region))
    local = LocalSession(boto_session=boto_session, disable_local_code=True,
                         sagemaker_config=OFFLINE_CONFIG)
    local.config = {"local": {"local_code": True,
                              "serving_port": serving_port or int(os.environ.get("PORT", 8080))}}
    return local


def pipeline_session(local: bool, region: str | None = None):
    """A PipelineSession for AWS (nothing runs until the pipeline is started there), or one that
    runs the pipeline's steps on this machine's Docker with v3's local executor, offline."""
    if local:
        return offline_pipeline_session(region)
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    return PipelineSession(boto_session=aws_session(region), sagemaker_config=OFFLINE_CONFIG)


def offline_pipeline_session(region: str | None = None):
    """SDK v3 3.27 splits local pipelines in two, neither of which runs one as shipped: its
    sagemaker.core LocalPipelineSession captures the steps' requests (a PipelineSession) but
    has no pipeline calls, and sagemaker.mlops.local's has the calls and the executor but
    captures nothing, while Pipeline.create/start look for the calls on the session's client.
    This session is both, and its client hands the pipeline calls to it."""
    from sagemaker.core.local.local_session import LocalSagemakerClient
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.mlops.local import LocalPipelineSession

    class PipelineCalls(LocalSagemakerClient):
        def create_pipeline(self, pipeline, description, **kwargs):
            return self.sagemaker_session.create_pipeline(pipeline, description, **kwargs)

        def update_pipeline(self, pipeline, description, **kwargs):
            return self.sagemaker_session.update_pipeline(pipeline, description, **kwargs)

        def describe_pipeline(self, PipelineName):
            return self.sagemaker_session.describe_pipeline(PipelineName)

        def delete_pipeline(self, PipelineName):
            return self.sagemaker_session.delete_pipeline(PipelineName)

        def start_pipeline_execution(self, **kwargs):
            return self.sagemaker_session.start_pipeline_execution(**kwargs)

    class OfflinePipelineSession(LocalPipelineSession, PipelineSession):
        def _initialize(self, *args, **kwargs):
            super()._initialize(*args, **kwargs)
            self.sagemaker_client = PipelineCalls(self)

    boto_session = boto3.Session(region_name=offline_environment(region))
    session = OfflinePipelineSession(boto_session=boto_session, disable_local_code=True,
                                     sagemaker_config=OFFLINE_CONFIG)
    session.config = {"local": {"local_code": True}}
    return session


def is_local(sagemaker_session) -> bool:
    from sagemaker.core.local import LocalSession

    return isinstance(sagemaker_session, LocalSession)


def remove_local_containers(*targets: str, image_tag: str = "latest") -> None:
    """Local mode leaves its containers behind (stopped); remove those of our images."""
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


def image_uri(image: str, target: Launch, region: str | None = None) -> str:
    """The local tag for --local, else the image pushed by build_and_push.sh to this account's
    ECR, whose host ends in the region's partition's DNS suffix (amazonaws.com.cn in China),
    as botocore's partition data has it. image: train, serve or serve-gpu."""
    name = f"{os.environ.get('IMAGE_PREFIX', 'byoc')}-{image}:{target.image_tag}"
    if target.local:
        return name
    boto_session = boto3.Session(region_name=region or target.region)
    account = boto_session.client("sts").get_caller_identity()["Account"]
    region = boto_session.region_name
    return f"{account}.dkr.ecr.{region}.{dns_suffix(region)}/{name}"


def dns_suffix(region: str) -> str:
    """The DNS suffix of region's partition, from botocore's endpoint data: amazonaws.com,
    amazonaws.com.cn for China's regions, and so on."""
    from botocore.loaders import create_loader
    from botocore.regions import EndpointResolver

    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    return resolver.get_partition_dns_suffix(resolver.get_partition_for_region(region))


def pushed_image(image: str, target: Launch, region: str | None = None) -> str:
    """image_uri, read back from ECR on AWS before any request names it: SystemExit in one line
    when it is missing, unreadable or of a media type SageMaker refuses (scripts/platforms.py).
    Deployments read it through sagemaker_model.check_architecture instead, which checks the
    same and its architecture."""
    uri = image_uri(image, target, region)
    if not target.local:
        platforms.ecr_manifest(uri, boto3.Session(region_name=region or target.region)
                               .client("ecr"))
    return uri


def unique_name(base: str) -> str:
    """base-<time to the millisecond>, as SageMaker resource names are made (63 characters)."""
    now = time.time()
    return f"{base[:38]}-{time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime(now))}-{int(now * 1000) % 1000:03d}"


def image_name(uri: str) -> str:
    """byoc-serve of .../byoc-serve:latest: what models and jobs are named after."""
    return uri.rsplit("/", 1)[-1].split(":")[0]


def uri(location: str | Path, local: bool) -> str:
    """s3:// stays; a local path becomes file:// (local mode reads and writes those)."""
    text = str(location)
    if text.startswith(("s3://", "file://")):
        return text
    if not local:
        raise SystemExit(f"{text} is a local path: upload it to S3 first (scripts/upload_data.py),"
                         " or use --local")
    return "file://" + str(Path(text).resolve())


def processing_input(source, destination: str, name: str):
    """A processing job's S3 input (a pipeline variable too), copied to destination."""
    from sagemaker.core.shapes import ProcessingInput, ProcessingS3Input

    return ProcessingInput(input_name=name, s3_input=ProcessingS3Input(
        s3_uri=source, local_path=destination, s3_data_type="S3Prefix", s3_input_mode="File"))


def processing_output(source: str, destination, name: str):
    """A processing job's folder source, uploaded to destination at its end."""
    from sagemaker.core.shapes import ProcessingOutput, ProcessingS3Output

    return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
        s3_uri=destination, local_path=source, s3_upload_mode="EndOfJob"))


def delete_alarm(cloudwatch, name: str) -> list[str]:
    """The CloudWatch alarm, when there is one; what was deleted."""
    if not cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]:
        return []
    cloudwatch.delete_alarms(AlarmNames=[name])
    return [f"alarm {name}"]


def deregister_scalable_target(autoscaling, resource: str, dimension: str) -> list[str]:
    """The resource's Application Auto Scaling target (its policies go with it), when it has
    one; what was deregistered."""
    from botocore.exceptions import ClientError

    try:
        autoscaling.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource,
                                               ScalableDimension=dimension)
    except ClientError:  # it had no autoscaling
        return []
    return [f"scalable target {resource}"]


def wait_until_gone(describe, what: str, started: float, timeout_s: float, poll_s: float,
                    gone_codes: tuple[str, ...] = ("ResourceNotFound",)) -> None:
    """Until describe() raises one of gone_codes (SageMaker deletes some resources in the
    background); SystemExit timeout_s after started (time.monotonic())."""
    from botocore.exceptions import ClientError

    while True:
        try:
            describe()
        except ClientError as e:
            if e.response["Error"]["Code"] in gone_codes:
                return
            raise
        if time.monotonic() > started + timeout_s:
            raise SystemExit(f"{what} is still being deleted after {timeout_s:.0f} s: run this "
                             "again later")
        time.sleep(poll_s)


def add_gpu_argument(parser: argparse.ArgumentParser) -> None:
    """--gpu, one meaning everywhere: the work runs on GPUs. A model is served by the PyTorch
    GPU image (the CPU image runs ONNX Runtime); in local mode the containers get this
    machine's GPUs. On AWS the instance type you choose must have GPUs."""
    parser.add_argument("--gpu", action="store_true",
                        help="run on GPUs: the PyTorch serving image; with --local, this "
                             "machine's GPUs (choose a GPU --instance-type on AWS)")


def serving_image(gpu: bool) -> str:
    return "serve-gpu" if gpu else "serve"


def instance_type(target: Launch, gpu: bool, on_aws: str) -> str:
    """Local mode's instance type (this machine, with its GPUs or not), or on_aws, which must
    have GPUs when gpu is asked for."""
    if target.local:
        return "local_gpu" if gpu else "local"
    if gpu and isinstance(on_aws, str) and not platforms.GPU_INSTANCE.match(on_aws):
        raise SystemExit(f"--gpu on {on_aws}, which has no GPU: choose a GPU --instance-type "
                         "(ml.g4dn.xlarge, ml.g5.xlarge, ...)")
    if gpu and isinstance(on_aws, str) and platforms.instance_architecture(on_aws) == "arm64":
        raise SystemExit(f"--gpu on {on_aws}, an arm64 instance: the GPU serving image is "
                         "x86_64 (amd64) only; choose ml.g5, ml.g6 or ml.p4d, say")
    return on_aws


def name_values(items: list[str], flag: str) -> dict[str, str]:
    """["a=1", "b=x"] -> {"a": "1", "b": "x"}; SystemExit naming flag for an item without "="."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {item!r}: write NAME=VALUE")
        values[key] = value
    return values


def add_hyperparameter_arguments(parser: argparse.ArgumentParser, fixed: bool = False) -> None:
    """--hyperparameters FILE and --hp NAME=VALUE, read by hyperparameters(). fixed: for the
    tuner, whose search space's names are tuned."""
    parser.add_argument("--hyperparameters", help="a JSON file of hyperparameters")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                        help="a fixed hyperparameter (the search space's names are tuned)"
                        if fixed else "a hyperparameter, over the file's")


def hyperparameters(args: argparse.Namespace) -> dict:
    values = json.loads(Path(args.hyperparameters).read_text()) if args.hyperparameters else {}
    return {**values, **name_values(args.hp, "--hp")}
