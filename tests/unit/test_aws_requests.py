"""What the launch scripts ask of AWS, checked against moto's server on 127.0.0.1 (S3, STS,
SageMaker, Application Auto Scaling): the requests' shapes, since only AWS can run the jobs."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import pytest

from scripts import common, sagemaker_cleanup, sagemaker_deploy, sagemaker_train, upload_data
from tests.conftest import MOTO_REGION as REGION
from train.metrics import METRIC_DEFINITIONS

ACCOUNT = "123456789012"  # moto's
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


def test_upload_skips_what_is_there_and_checks_the_counts(aws, small_data, capsys):
    s3 = aws.client("s3")
    total = sum(1 for _ in small_data.glob("*/*/*"))
    assert upload_data.upload(small_data, "s3://data/shapes", s3) == {"uploaded": total, "skipped": 0}
    assert "train: 48 images" in capsys.readouterr().out
    assert upload_data.upload(small_data, "s3://data/shapes/", s3) == {"uploaded": 0, "skipped": total}
    s3.delete_object(Bucket="data", Key="shapes/valid/001.Red_disc/" + next(
        p.name for p in sorted((small_data / "valid" / "001.Red_disc").iterdir())))
    assert upload_data.upload(small_data, "s3://data/shapes", s3)["uploaded"] == 1


def test_upload_refuses_a_folder_without_splits(aws, tmp_path):
    with pytest.raises(SystemExit, match="needs train/ and valid/"):
        upload_data.upload(tmp_path, "s3://data/x", aws.client("s3"))


class Sent(dict):
    """Requests by operation name; services: the operations sent to each service, in order;
    answers: stand-in responses (or functions of the request) for APIs moto does not have.
    Model Monitor's and inference components': an endpoint has no schedules and no components
    unless a test says so."""

    def __init__(self):
        super().__init__()
        self.services: dict[str, list[str]] = {}
        self.answers: dict[str, dict | Callable[[dict], dict]] = {
            "ListMonitoringSchedules": {"MonitoringScheduleSummaries": []},
            "ListInferenceComponents": {"InferenceComponents": []}}


@pytest.fixture(autouse=True)
def sent(monkeypatch) -> Sent:
    """The parameters of every AWS API call the scripts make, by operation name (whichever
    session the script made). Every call goes through botocore's own path, which validates the
    parameters against the service's model and serializes them; a stand-in answers in place of
    the HTTP request, at botocore's before-call event, as its Stubber does."""
    from botocore.awsrequest import AWSResponse
    from botocore.client import BaseClient

    calls = Sent()
    real_call = BaseClient._make_api_call

    def recording_call(client, operation_name, params):
        calls.setdefault(operation_name, []).append(params)
        service = client.meta.service_model.service_name
        calls.services.setdefault(service, []).append(operation_name)
        answer = calls.answers.get(f"{service}:{operation_name}")  # another service's stand-in
        if answer is None and service == "sagemaker":
            answer = calls.answers.get(operation_name)  # an API moto lacks: a stand-in
        if answer is None:
            response = real_call(client, operation_name, params)
            if operation_name == "DescribeEndpoint" and response.get("DataCaptureConfig") == {}:
                # moto answers an empty one, which AWS's model does not allow (its fields are
                # required) and SDK v3's Endpoint refuses; AWS leaves it out
                del response["DataCaptureConfig"]
            return response

        def before_call(**kwargs):  # validated and serialized by now
            parsed = answer(params) if callable(answer) else answer
            # an answer with an Error is a refusal: botocore raises its modelled exception
            return AWSResponse("", 400 if "Error" in parsed else 200, {}, None), parsed

        event = (f"before-call.{client.meta.service_model.service_id.hyphenize()}."
                 f"{operation_name}")
        client.meta.events.register_first(event, before_call, unique_id="stand-in")
        try:
            return real_call(client, operation_name, params)
        finally:
            client.meta.events.unregister(event, unique_id="stand-in")

    monkeypatch.setattr(BaseClient, "_make_api_call", recording_call)
    return calls


LIST_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def digest(body: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(body).hexdigest()


def push_image(aws, repository: str, architectures: tuple[str, ...], listed: bool = True,
               tag: str = "latest") -> None:
    """repository:tag in moto's ECR as a push leaves it: a manifest list of one image per
    architecture (build_and_push.sh's CPU serving image), or one image (listed=False) whose
    configuration blob, which says its architecture, is kept in s3://ecr-layers for
    GetDownloadUrlForLayer's stand-in (moto stores no layers)."""
    ecr, s3 = aws.client("ecr"), aws.client("s3")
    if repository not in {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}:
        ecr.create_repository(repositoryName=repository)
    if "ecr-layers" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="ecr-layers",
                         CreateBucketConfiguration={"LocationConstraint": REGION})
    images = []
    for architecture in architectures:
        config = json.dumps({"architecture": architecture, "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        s3.put_object(Bucket="ecr-layers", Key=digest(config), Body=config)
        image = json.dumps({"schemaVersion": 2, "mediaType": IMAGE_TYPE, "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config), "digest": digest(config)}, "layers": []}).encode()
        images.append((architecture, image))
    if listed:
        manifest = json.dumps({"schemaVersion": 2, "mediaType": LIST_TYPE, "manifests": [
            {"mediaType": IMAGE_TYPE, "size": len(image), "digest": digest(image),
             "platform": {"architecture": architecture, "os": "linux"}}
            for architecture, image in images]})
    else:
        [(_, image)] = images
        manifest = image.decode()
    try:
        ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)
    except ecr.exceptions.ImageAlreadyExistsException:
        pass


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push_as_buildkit_does(aws, repository: str, tag: str) -> None:
    """repository:tag as Docker Desktop's BuildKit pushes an image with its default provenance
    attestation: an OCI index of the image's OCI manifest and an unknown/unknown attestation
    manifest that refers to it."""
    ecr = aws.client("ecr")
    if repository not in {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}:
        ecr.create_repository(repositoryName=repository)
    image = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
        "digest": digest(b"{}")}, "layers": []}).encode()
    attestation = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
        "digest": digest(b"{}")}, "layers": [{
            "mediaType": "application/vnd.in-toto+json", "size": 2, "digest": digest(b"[]"),
            "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}]
    }).encode()
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest(image), "size": len(image),
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": digest(attestation), "size": len(attestation),
         "annotations": {"vnd.docker.reference.digest": digest(image),
                         "vnd.docker.reference.type": "attestation-manifest"},
         "platform": {"architecture": "unknown", "os": "unknown"}}]})
    try:
        ecr.put_image(repositoryName=repository, imageManifest=index, imageTag=tag,
                      imageManifestMediaType=OCI_INDEX)
    except ecr.exceptions.ImageAlreadyExistsException:
        pass


@pytest.fixture(autouse=True)
def serving_images(aws, sent):
    """The images as build_and_push.sh pushes them: byoc-serve for amd64 and arm64,
    byoc-serve-gpu and byoc-train for amd64 alone; ECR's GetDownloadUrlForLayer (moto lacks it) answers a
    presigned URL of moto's S3."""
    s3 = aws.client("s3")
    push_image(aws, "byoc-serve", ("amd64", "arm64"))
    push_image(aws, "byoc-serve-gpu", ("amd64",), listed=False)
    for tag in ("latest", "v1"):
        push_image(aws, "byoc-train", ("amd64",), listed=False, tag=tag)
    sent.answers["ecr:GetDownloadUrlForLayer"] = lambda params: {
        "layerDigest": params["layerDigest"], "downloadUrl": s3.generate_presigned_url(
            "get_object", Params={"Bucket": "ecr-layers", "Key": params["layerDigest"]})}
    sent.clear()  # what setting them up sent


def test_training_job_request(aws, sent, capsys):
    code = sagemaker_train.main([
        "--data", "s3://data/dogs", "--output", "s3://data/runs", "--role", ROLE,
        "--instance-type", "ml.g5.xlarge", "--instance-count", "2", "--spot", "--no-wait",
        "--hp", "epochs=3", "--hp", "hidden_units=[512]", "--image-tag", "v1"])
    assert code == 0
    name = capsys.readouterr().out.split("training job: ")[1].split()[0]
    assert aws.client("sagemaker").describe_training_job(TrainingJobName=name)  # moto has it
    [job] = sent["CreateTrainingJob"]
    assert job["TrainingJobName"] == name
    assert job["AlgorithmSpecification"]["TrainingImage"] == f"{REGISTRY}/byoc-train:v1"
    assert job["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert job["HyperParameters"] == {"epochs": "3", "hidden_units": "[512]"}
    assert job["RoleArn"] == ROLE
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert job["ResourceConfig"]["InstanceCount"] == 2
    assert job["EnableManagedSpotTraining"] is True
    # The job's own prefix: SageMaker copies a checkpoint prefix into every job that names it.
    assert job["CheckpointConfig"]["S3Uri"] == f"s3://data/runs/checkpoints/{name}/"
    assert job["StoppingCondition"]["MaxWaitTimeInSeconds"] >= job["StoppingCondition"]["MaxRuntimeInSeconds"]
    # s3://data/dogs has no test/ (its sibling dogs-with-test has): no test channel.
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {"train": "s3://data/dogs/train", "valid": "s3://data/dogs/valid"}
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://data/runs"
    # An account opened today has neither SageMaker Debugger nor the Profiler: the container
    # evaluates the rules itself and writes a TensorBoard record, which SageMaker uploads.
    assert not CLOSED_SERVICE_FIELDS & set(job), CLOSED_SERVICE_FIELDS & set(job)
    assert job["TensorBoardOutputConfig"] == {"S3OutputPath": "s3://data/runs/tensorboard",
                                              "LocalPath": "/opt/ml/output/tensorboard"}


# What CreateTrainingJob carries for SageMaker Debugger and Profiler, which AWS has closed to
# new accounts (Debugger from 2026-07-30; the Profiler ends 2027-06-30).
CLOSED_SERVICE_FIELDS = {"DebugHookConfig", "DebugRuleConfigurations", "ProfilerConfig",
                         "ProfilerRuleConfigurations"}


def test_the_closed_services_are_sent_only_when_asked_for(aws, sent):
    common_args = ["--data", "s3://data/dogs", "--output", "s3://data/runs", "--role", ROLE,
                   "--no-wait"]
    sagemaker_train.main([*common_args, "--sagemaker-profiler"])
    profiled = sent["CreateTrainingJob"][-1]
    assert {"ProfilerConfig", "ProfilerRuleConfigurations"} <= set(profiled)
    assert not {"DebugHookConfig", "DebugRuleConfigurations"} & set(profiled)
    assert profiled["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    [report] = profiled["ProfilerRuleConfigurations"]
    assert report["RuleParameters"]["rule_to_invoke"] == "ProfilerReport"
    assert report["RuleParameters"]["StepOutlier_n_outliers"] == "10"

    sagemaker_train.main([*common_args, "--sagemaker-debugger"])
    job = sent["CreateTrainingJob"][-1]
    assert not {"ProfilerConfig", "ProfilerRuleConfigurations"} & set(job)
    # The hook saves debugger/config.py's collections; SageMaker's rule containers judge them
    # with the same rules and parameters as the training container.
    hook = job["DebugHookConfig"]
    assert hook["S3OutputPath"] == "s3://data/runs/debug-output"
    saved = {c["CollectionName"]: c["CollectionParameters"] for c in hook["CollectionConfigurations"]}
    assert len(saved) == len(hook["CollectionConfigurations"]) == 8  # once each, ours
    assert saved["losses"] == {"save_interval": "1"}
    assert saved["relu_output"]["include_regex"] == ".*relu_output"
    rules = {r["RuleParameters"]["rule_to_invoke"]: r["RuleParameters"]
             for r in job["DebugRuleConfigurations"]}
    assert set(rules) == {"VanishingGradient", "ExplodingTensor", "LossNotDecreasing", "Overfit",
                          "Overtraining", "PoorWeightInitialization", "DeadRelu",
                          "SaturatedActivation", "WeightUpdateRatio", "ClassImbalance"}
    assert rules["LossNotDecreasing"]["num_steps"] == "10"
    assert rules["ClassImbalance"]["labels_regex"] == "CrossEntropyLoss_input_1"
    assert job["TensorBoardOutputConfig"]["S3OutputPath"] == "s3://data/runs/tensorboard"


def test_the_test_channel_is_declared_when_the_data_has_it_or_when_asked(aws):
    s3 = aws.client("s3")
    with_test = sagemaker_train.channels("s3://data/dogs-with-test/", False, s3)
    assert with_test["test"] == "s3://data/dogs-with-test/test"
    assert "test" not in sagemaker_train.channels("s3://data/dogs-with-test", False, s3, "never")
    with pytest.raises(SystemExit, match="no test/ folder"):
        sagemaker_train.channels("s3://data/dogs", False, s3, "always")
    with pytest.raises(SystemExit, match="no train or valid/ folder"):
        sagemaker_train.channels("s3://data/nothing", False, s3)


def test_a_bad_hyperparameter_fails_before_any_job_starts(aws, sent):
    with pytest.raises(SystemExit, match="batch_size='large': expected an integer"):
        sagemaker_train.main(["--data", "s3://data/dogs", "--output", "s3://data/runs",
                              "--role", ROLE, "--no-wait", "--hp", "batch_size=large"])
    assert "CreateTrainingJob" not in sent


def test_the_jobs_rule_parameters_reach_sagemakers_rules(aws, sent):
    sagemaker_train.main(["--data", "s3://data/dogs", "--output", "s3://data/runs", "--role", ROLE,
                          "--no-wait", "--sagemaker-debugger", "--sagemaker-profiler", "--hp", 'rule_parameters={"overfit": {"patience": 3}, '
                          '"step_outlier": {"n_outliers": 4}}'])
    [job] = sent["CreateTrainingJob"]
    rules = {r["RuleParameters"]["rule_to_invoke"]: r["RuleParameters"]
             for r in job["DebugRuleConfigurations"]}
    assert rules["Overfit"]["patience"] == "3"
    [report] = job["ProfilerRuleConfigurations"]
    assert report["RuleParameters"]["StepOutlier_n_outliers"] == "4"


def test_a_local_path_needs_local_mode(aws):
    with pytest.raises(SystemExit, match="upload it to S3 first"):
        common.uri("demo_data/train", local=False)
    with pytest.raises(SystemExit, match="not an IAM role ARN"):
        common.launch(argparse.Namespace(role="SageMakerRole", local=False, region=None,
                                         image_tag="latest"))


TARGET = common.Launch(region=REGION, role=ROLE)
MODEL_DATA = "s3://data/runs/job/output/model.tar.gz"


def test_a_stand_in_answers_only_what_botocore_would_send(aws, sent):
    """An API moto lacks is answered by a stand-in after botocore validated the request against
    the service's model: a misspelled field fails as it would on AWS."""
    from botocore.exceptions import ParamValidationError

    sent.answers["CreateInferenceComponent"] = {"InferenceComponentArn": "arn:aws:sagemaker:x"}
    client = aws.client("sagemaker")
    request = {"InferenceComponentName": "c", "EndpointName": "e", "VariantName": "AllTraffic",
               "RuntimeConfig": {"CopyCount": 1}}
    with pytest.raises(ParamValidationError, match="ComputeResourceRequirment"):
        client.create_inference_component(**request, Specification={
            "ModelName": "m", "ComputeResourceRequirment": {"MinMemoryRequiredInMb": 512}})
    answered = client.create_inference_component(**request, Specification={
        "ModelName": "m", "ComputeResourceRequirements": {"MinMemoryRequiredInMb": 512}})
    assert answered["InferenceComponentArn"] == "arn:aws:sagemaker:x"


def assert_detailed_observability(config: dict) -> None:
    """Every endpoint config the kit creates states it: AWS's scrape of /metrics, each minute."""
    assert config["MetricsConfig"] == {"EnableDetailedObservability": True,
                                       "MetricPublishFrequencyInSeconds": 60}


def deploy(*argv: str, model_data: str | None = MODEL_DATA):
    """sagemaker_deploy's command line (on the trained model); the session that cleans up."""
    source = ["--model-data", model_data] if model_data else []
    assert sagemaker_deploy.main([*source, "--role", ROLE, *argv]) == 0
    return common.session(TARGET)


def test_endpoint_with_autoscaling_and_its_cleanup(aws, sent):
    session = deploy("--endpoint-name", "dogs", "--autoscale-max", "4")
    assert_detailed_observability(sent["CreateEndpointConfig"][0])
    sm = aws.client("sagemaker")
    config_name = sm.describe_endpoint(EndpointName="dogs")["EndpointConfigName"]
    variant = sm.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.xlarge", 1)
    model = sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]
    assert model["Image"] == f"{REGISTRY}/byoc-serve:latest"
    assert model["ModelDataUrl"] == "s3://data/runs/job/output/model.tar.gz"
    autoscaling = aws.client("application-autoscaling")
    target = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (
        "endpoint/dogs/variant/AllTraffic", 1, 4)
    policy = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance")

    deleted = sagemaker_cleanup.delete_endpoint(session, "dogs")
    assert deleted[0] == "scalable target endpoint/dogs/variant/AllTraffic"
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_gpu_and_serverless_endpoints(aws, sent):
    session = deploy("--endpoint-name", "dogs-gpu", "--gpu", "--instance-type", "ml.g4dn.xlarge")
    deploy("--endpoint-name", "dogs-serverless", "--serverless", "--memory-mb", "3072")
    for config in sent["CreateEndpointConfig"]:
        assert_detailed_observability(config)
    sm = aws.client("sagemaker")
    images = {}
    for name in ("dogs-gpu", "dogs-serverless"):
        config = sm.describe_endpoint_config(
            EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"])
        variant = config["ProductionVariants"][0]
        images[name] = sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]["Image"]
        if name == "dogs-serverless":
            assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
        sagemaker_cleanup.delete_endpoint(session, name)
    assert images == {"dogs-gpu": f"{REGISTRY}/byoc-serve-gpu:latest",
                      "dogs-serverless": f"{REGISTRY}/byoc-serve:latest"}


def test_asynchronous_endpoint_request(aws, sent):
    """Asynchronous inference: results and failures to S3, and the server's limits raised to what
    async accepts (moto keeps no AsyncInferenceConfig: the request itself is checked)."""
    session = deploy("--endpoint-name", "dogs-async", "--max-concurrency", "4",
                     "--async-output", "s3://data/async/", "--async-max-payload-mb", "200")
    [config] = sent["CreateEndpointConfig"]
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": "s3://data/async/output",
                         "S3FailurePath": "s3://data/async/failures"},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4}}
    assert_detailed_observability(config)
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"
    [model] = sent["CreateModel"]
    assert model["PrimaryContainer"]["Environment"] == {
        "BYOC_MAX_PAYLOAD_MB": "200", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "600"}
    sagemaker_cleanup.delete_endpoint(session, "dogs-async")


def test_an_asynchronous_endpoint_scales_to_zero_and_back_on_its_queue(aws):
    session = deploy("--endpoint-name", "dogs-queue", "--autoscale-max", "3",
                     "--backlog-per-instance", "4", "--async-output", "s3://data/async/")
    autoscaling, cloudwatch = aws.client("application-autoscaling"), aws.client("cloudwatch")
    resource = "endpoint/dogs-queue/variant/AllTraffic"
    [target] = autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 3)
    policies = {p["PolicyType"]: p for p in autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"]}
    tracking = policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 4.0
    assert tracking["CustomizedMetricSpecification"]["MetricName"] == (
        "ApproximateBacklogSizePerInstance")
    assert tracking["CustomizedMetricSpecification"]["Dimensions"] == [
        {"Name": "EndpointName", "Value": "dogs-queue"}]
    step = policies["StepScaling"]["StepScalingPolicyConfiguration"]
    assert step["AdjustmentType"] == "ChangeInCapacity"
    assert step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]
    [alarm] = cloudwatch.describe_alarms(
        AlarmNames=["dogs-queue-has-backlog-without-capacity"])["MetricAlarms"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [policies["StepScaling"]["PolicyARN"]]

    deleted = sagemaker_cleanup.delete_endpoint(session, "dogs-queue")
    assert "alarm dogs-queue-has-backlog-without-capacity" in deleted
    assert cloudwatch.describe_alarms(AlarmNames=[alarm["AlarmName"]])["MetricAlarms"] == []
    assert autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"] == []


ANSWER = {"predictions": [{"label": "dog", "index": 0, "probability": 0.9}]}


def endpoint_answers(moto_url: str, kind: str, results: list[dict]) -> None:
    """What moto's sagemaker-runtime answers next (its own API for it): kind endpoint-results or
    async-endpoint-results."""
    import requests

    requests.post(f"{moto_url}/moto-api/static/sagemaker/{kind}", timeout=10,
                  json={"account_id": ACCOUNT, "region": REGION, "results": results}
                  ).raise_for_status()


def test_asynchronous_invocation_waits_for_the_answer_in_s3(aws, sent, moto_url, tmp_path,
                                                           capsys):
    """sagemaker_invoke --async-input against moto: the image goes to S3, InvokeEndpointAsync
    names it, and the answer is read where the endpoint wrote it (moto writes it to S3 as
    SageMaker does)."""
    from scripts import sagemaker_invoke

    s3 = aws.client("s3")
    s3.create_bucket(Bucket="async-io", CreateBucketConfiguration={"LocationConstraint": REGION})
    image = tmp_path / "big.png"
    image.write_bytes(b"\x89PNG fake")
    endpoint_answers(moto_url, "async-endpoint-results", [{"data": json.dumps(ANSWER)}])
    assert sagemaker_invoke.main(["--role", ROLE, "--endpoint-name", "dogs-async", "--top-k",
                                  "2", "--async-input", "s3://async-io/in", str(image)]) == 0
    assert "90.00%  dog" in capsys.readouterr().out
    [request] = sent["InvokeEndpointAsync"]
    assert request["ContentType"] == "image/png" and request["CustomAttributes"] == "top_k=2"
    bucket, _, key = request["InputLocation"].removeprefix("s3://").partition("/")
    assert bucket == "async-io" and key.startswith("in/")
    assert s3.get_object(Bucket="async-io", Key=key)["Body"].read() == image.read_bytes()


@pytest.mark.parametrize("strategy", ["Bayesian", "Hyperband"])
def test_tuning_job_request(aws, sent, capsys, strategy):
    from scripts import sagemaker_tune
    from tune import space

    code = sagemaker_tune.main([
        "--data", "s3://data/dogs", "--output", "s3://data/tuning", "--role", ROLE,
        "--max-jobs", "12", "--max-parallel-jobs", "3", "--strategy", strategy,
        "--warm-start-from", "byoc-tune-parent", "--hp", "epochs=6", "--hp", "lr=0.5", "--no-wait",
        "--job-name", f"byoc-tune-{strategy.lower()}", "--spot"])
    assert code == 0
    [request] = sent["CreateHyperParameterTuningJob"]
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == strategy
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize",
                                                          "MetricName": "valid:best_accuracy"}
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 12
    assert config["ResourceLimits"]["MaxParallelTrainingJobs"] == 3
    assert config["TrainingJobEarlyStoppingType"] == ("Off" if strategy == "Hyperband" else "Auto")
    ranges = config["ParameterRanges"]
    tuned = {r["Name"] for kind in ranges.values() for r in kind}
    assert tuned == {p.name for p in space.load()}
    lr = next(r for r in ranges["ContinuousParameterRanges"] if r["Name"] == "lr")
    assert lr["ScalingType"] == "Logarithmic"
    if strategy == "Hyperband":
        assert config["StrategyConfig"]["HyperbandStrategyConfig"]["MaxResource"] == 6
    assert request["WarmStartConfig"]["ParentHyperParameterTuningJobs"] == [
        {"HyperParameterTuningJobName": "byoc-tune-parent"}]
    definition = request["TrainingJobDefinition"]
    assert not CLOSED_SERVICE_FIELDS & set(definition)
    assert definition["AlgorithmSpecification"]["TrainingImage"] == f"{REGISTRY}/byoc-train:latest"
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    # lr is tuned, so the fixed value is dropped; epochs stays fixed.
    static = definition["StaticHyperParameters"]
    assert static["epochs"] == "6" and "lr" not in static
    # One prefix for the tuning job's trials; each trial checkpoints in a folder of its own job.
    assert definition["CheckpointConfig"]["S3Uri"] == (
        f"s3://data/tuning/checkpoints/byoc-tune-{strategy.lower()}/")
    assert f"tuning job: byoc-tune-{strategy.lower()}" in capsys.readouterr().out


def test_the_tuning_report_reads_the_job_back(aws, sent, capsys):
    from scripts import sagemaker_tune

    sagemaker_tune.main(["--data", "s3://data/dogs", "--output", "s3://data/tuning", "--role", ROLE,
                         "--no-wait", "--job-name", "byoc-tune-report"])
    session = common.session(TARGET)
    sagemaker_tune.report(session, "byoc-tune-report")
    printed = capsys.readouterr().out
    # moto answers a made-up best job (and no such training job): the report shows what it has.
    best = aws.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="byoc-tune-report")["BestTrainingJob"]
    assert f"best training job: {best['TrainingJobName']}" in printed
    objective = best["FinalHyperParameterTuningJobObjectiveMetric"]
    assert f"{objective['MetricName']}: {objective['Value']}" in printed
    assert "model: unknown (" in printed


def test_data_capture_records_requests_and_answers(aws, sent):
    """The endpoint config SageMaker receives: both directions, the share, the prefix, and JSON
    declared as JSON (images are then stored base64, the format the drift monitor reads)."""
    session = deploy("--endpoint-name", "dogs-captured", "--capture", "s3://data/capture/",
                     "--capture-percent", "35")
    [config] = sent["CreateEndpointConfig"]
    assert_detailed_observability(config)
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 35
    assert capture["DestinationS3Uri"] == "s3://data/capture"
    assert capture["CaptureOptions"] == [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]
    assert capture["CaptureContentTypeHeader"]["JsonContentTypes"] == ["application/json"]
    assert not {"image/jpeg", "image/png"} & set(
        capture["CaptureContentTypeHeader"]["JsonContentTypes"] +
        capture["CaptureContentTypeHeader"]["CsvContentTypes"])
    sagemaker_cleanup.delete_endpoint(session, "dogs-captured")


def refusal(stopped: pytest.ExceptionInfo, capsys) -> str:
    """What the user reads of a SystemExit: argparse's error on stderr, or its message."""
    return capsys.readouterr().err + str(stopped.value.code)


@pytest.mark.parametrize("argv, message", [
    (["--capture", "s3://data/c", "--serverless"], "serverless endpoints and local mode"),
    (["--capture", "data/c"], "--capture 'data/c' is not an S3 location"),
    (["--capture", "s3://data/c", "--capture-percent", "0"], "give 1 to 100"),
])
def test_data_capture_arguments_are_checked(aws, capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        sagemaker_deploy.main(["--model-data", "s3://data/m.tar.gz", "--role", ROLE, *argv])
    assert message in refusal(stopped, capsys)


def test_register_list_approve_and_deploy_a_version(aws, sent, capsys):
    from scripts import sagemaker_registry

    s3 = aws.client("s3")
    s3.put_object(Bucket="data", Key="eval/evaluation.json", Body=json.dumps(
        {"multiclass_classification_metrics": {"accuracy": {"value": 0.875}}}).encode())
    assert sagemaker_registry.main([
        "--role", ROLE, "register", "--group", "dogs", "--metrics", "s3://data/eval/evaluation.json",
        "--model-data", "s3://data/runs/job/output/model.tar.gz"]) == 0
    arn = capsys.readouterr().out.split("registered: ")[1].split()[0]
    [package] = sent["CreateModelPackage"]
    assert package["ModelPackageGroupName"] == "dogs"
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    spec = package["InferenceSpecification"]
    assert spec["Containers"][0]["Image"] == f"{REGISTRY}/byoc-serve:latest"
    assert spec["Containers"][0]["ModelDataUrl"] == "s3://data/runs/job/output/model.tar.gz"
    assert "image/jpeg" in spec["SupportedContentTypes"]
    assert spec["SupportedResponseMIMETypes"] == ["application/json", "application/jsonlines"]
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"] == {
        "ContentType": "application/json", "S3Uri": "s3://data/eval/evaluation.json"}
    assert sent["CreateModelPackageGroup"] == [{"ModelPackageGroupName": "dogs"}]

    sagemaker_registry.main(["--role", ROLE, "list", "--group", "dogs"])
    listed = capsys.readouterr().out
    assert "PendingManualApproval" in listed and "test top-1 0.8750" in listed and arn in listed

    # Unapproved: refused before the SDK's ModelPackage, which would approve it itself.
    with pytest.raises(SystemExit, match="is PendingManualApproval, not Approved"):
        sagemaker_deploy.main(["--model-package", arn, "--role", ROLE, "--endpoint-name", "pkg"])
    assert "UpdateModelPackage" not in sent and "CreateModel" not in sent

    sagemaker_registry.main(["--role", ROLE, "approve", arn, "--note", "checked"])
    assert sent["UpdateModelPackage"] == [{"ModelPackageArn": arn, "ModelApprovalStatus": "Approved",
                                           "ApprovalDescription": "checked"}]
    assert sagemaker_deploy.main(["--model-package", arn, "--role", ROLE,
                                  "--endpoint-name", "pkg"]) == 0
    [model] = sent["CreateModel"]
    assert model["Containers"] == [{"ModelPackageName": arn}]
    assert len(sent["UpdateModelPackage"]) == 1  # nothing approved behind the user's back
    sagemaker_registry.main(["--role", ROLE, "reject", arn, "--note", "worse on new breeds"])
    assert sent["UpdateModelPackage"][-1]["ModelApprovalStatus"] == "Rejected"


@pytest.mark.parametrize("architectures", [("amd64", "arm64"), ("amd64",)])
def test_a_version_supports_gravitons_endpoints_when_its_image_has_arm64(aws, sent, capsys,
                                                                         architectures):
    """The registered model's endpoint instance types are x86's, and, when the serving image
    has an arm64 entry, every arm64 CPU type botocore's ProductionVariantInstanceType lists
    (ml.c7g, ml.m6g, ...); its batch transform types stay x86, which is all batch transform
    runs on."""
    from scripts import platforms, sagemaker_registry

    push_image(aws, "byoc-serve", architectures, tag="graviton")
    assert sagemaker_registry.main([
        "--role", ROLE, "--image-tag", "graviton", "register", "--group", "dogs-graviton",
        "--model-data", MODEL_DATA]) == 0
    spec = sent["CreateModelPackage"][-1]["InferenceSpecification"]
    endpoints = spec["SupportedRealtimeInferenceInstanceTypes"]
    botocores = {t for t in platforms.offered("ProductionVariantInstanceType")
                 if platforms.instance_architecture(t) == "arm64"}
    graviton = {t for t in endpoints if platforms.instance_architecture(t) == "arm64"}
    if "arm64" in architectures:
        assert {"ml.c7g.xlarge", "ml.m6g.large", "ml.r8g.medium"} <= graviton <= botocores
        assert graviton == {t for t in botocores if not t.startswith("ml.p")}  # not Grace GPUs
    else:
        assert graviton == set()
    assert "ml.c5.xlarge" in endpoints
    assert all(platforms.instance_architecture(t) == "amd64"
               for t in spec["SupportedTransformInstanceTypes"])


@pytest.mark.parametrize("instance_type, says", [
    ("ml.c7g.xlarge", "batch transform does not run on ml.c7g.xlarge: its instances are x86 "
                      "only (botocore's TransformInstanceType lists no arm64 type)"),
    ("ml.c9.huge", "batch transform does not offer ml.c9.huge (botocore's "
                   "TransformInstanceType)")])
def test_batch_transform_on_an_instance_it_does_not_offer_stops_before_anything(
        aws, sent, instance_type, says):
    from scripts import sagemaker_batch_transform

    with pytest.raises(SystemExit) as ended:
        sagemaker_batch_transform.main([
            "--model-data", MODEL_DATA, "--images", "s3://data/dogs", "--output",
            "s3://data/transform", "--role", ROLE, "--instance-type", instance_type])
    assert str(ended.value).startswith(says)
    assert not {"BatchGetImage", "PutObject", "CreateModel", "CreateTransformJob"} & set(sent)


def test_pipeline_definition_as_sagemaker_receives_it(aws, sent, capsys):
    """upsert and start against moto; the definition in CreatePipeline is the SDK's own
    serialization: train -> evaluate -> condition -> register or fail."""
    from scripts import sagemaker_pipeline

    assert sagemaker_pipeline.main([
        "--role", ROLE, "upsert", "--name", "dogs", "--data", "s3://data/dogs-with-test",
        "--output", "s3://data/pipeline", "--group", "dogs", "--threshold", "0.85",
        "--hp", "epochs=3", "--hp", "lr=0.001"]) == 0
    [created] = sent["CreatePipeline"]
    assert created["PipelineName"] == "dogs" and created["RoleArn"] == ROLE
    definition = json.loads(created["PipelineDefinition"])
    parameters = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    assert parameters == {"InputData": "s3://data/dogs-with-test", "AccuracyThreshold": 0.85,
                          "TrainingInstanceType": "ml.g4dn.xlarge",
                          "ProcessingInstanceType": "ml.m5.xlarge", "hp_epochs": "3",
                          "hp_lr": "0.001"}
    steps = {s["Name"]: s for s in definition["Steps"]}
    assert list(steps) == ["Train", "Evaluate", "CheckAccuracy"]
    train = steps["Train"]["Arguments"]
    assert not CLOSED_SERVICE_FIELDS & set(train)
    assert train["TensorBoardOutputConfig"]["S3OutputPath"] == "s3://data/pipeline/tensorboard"
    assert train["AlgorithmSpecification"]["TrainingImage"] == f"{REGISTRY}/byoc-train:latest"
    assert train["HyperParameters"] == {"epochs": {"Get": "Parameters.hp_epochs"},
                                        "lr": {"Get": "Parameters.hp_lr"}}
    assert train["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert {c["ChannelName"] for c in train["InputDataConfig"]} == {"train", "valid", "test"}
    evaluate = steps["Evaluate"]["Arguments"]
    assert evaluate["AppSpecification"] == {"ImageUri": f"{REGISTRY}/byoc-train:latest",
                                            "ContainerEntrypoint": ["python", "-m", "train.evaluate"]}
    model_input = next(i for i in evaluate["ProcessingInputs"]
                       if i["S3Input"]["LocalPath"] == "/opt/ml/processing/model")
    assert model_input["S3Input"]["S3Uri"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert steps["Evaluate"]["PropertyFiles"] == [
        {"PropertyFileName": "Evaluation", "OutputName": "evaluation", "FilePath": "evaluation.json"}]
    check = steps["CheckAccuracy"]["Arguments"]
    [condition] = check["Conditions"]
    assert condition["Type"] == "GreaterThanOrEqualTo"
    assert condition["LeftValue"]["Std:JsonGet"]["Path"] == (
        "multiclass_classification_metrics.accuracy.value")
    assert condition["RightValue"] == {"Get": "Parameters.AccuracyThreshold"}
    [register] = check["IfSteps"]
    assert register["Type"] == "RegisterModel"
    package = register["Arguments"]
    assert package["ModelPackageGroupName"] == "dogs"
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["InferenceSpecification"]["Containers"][0]["Image"] == (
        f"{REGISTRY}/byoc-serve:latest")
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["ContentType"] == "application/json"
    [fail] = check["ElseSteps"]
    assert fail["Type"] == "Fail"
    assert "is below AccuracyThreshold" in json.dumps(fail["Arguments"]["ErrorMessage"])

    capsys.readouterr()
    assert sagemaker_pipeline.main(["start", "--name", "dogs",
                                    "--param", "AccuracyThreshold=0.9"]) == 0
    [start] = sent["StartPipelineExecution"]
    assert start["PipelineName"] == "dogs"
    assert start["PipelineParameters"] == [{"Name": "AccuracyThreshold", "Value": "0.9"}]


def test_a_bad_hyperparameter_stops_the_pipeline_before_anything_is_sent(aws, sent):
    from scripts import sagemaker_pipeline

    with pytest.raises(SystemExit, match="epochz"):
        sagemaker_pipeline.main(["--role", ROLE, "upsert", "--data", "s3://data/dogs-with-test",
                                 "--output", "s3://data/pipeline", "--hp", "epochz=3"])
    assert "CreatePipeline" not in sent


def test_the_drift_monitor_is_a_scheduled_pipeline_by_default(aws, sent, capsys):
    """An account opened today has no Model Monitor: a pipeline of one processing step, started
    by EventBridge Scheduler, alarmed on in CloudWatch (moto has all three); the requests as
    sent, and what moto then holds."""
    from scripts import sagemaker_monitor

    session = deploy("--endpoint-name", "dogs-drift", "--capture", "s3://data/capture/")
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:drift"
    assert sagemaker_monitor.main(["--role", ROLE, "create", "--endpoint-name", "dogs-drift",
                                   "--output", "s3://data/monitoring/", "--alarm-topic", topic]) == 0
    assert "CreateMonitoringSchedule" not in sent
    [created] = sent["CreatePipeline"]
    assert created["PipelineName"] == "dogs-drift-image-drift" and created["RoleArn"] == ROLE
    definition = json.loads(created["PipelineDefinition"])
    assert definition["Parameters"] == [{"Name": "WindowEnd", "Type": "String", "DefaultValue": ""}]
    [step] = definition["Steps"]
    assert (step["Name"], step["Type"]) == ("DriftMonitor", "Processing")
    job = step["Arguments"]
    assert job["AppSpecification"]["ImageUri"] == f"{REGISTRY}/byoc-train:latest"
    assert job["AppSpecification"]["ContainerEntrypoint"] == ["python", "-m", "monitor.run"]
    arguments = job["AppSpecification"]["ContainerArguments"]
    options = {flag: value for flag, value in zip(arguments, arguments[1:])
               if isinstance(flag, str) and flag.startswith("--")}
    assert options["--capture"] == "s3://data/capture/dogs-drift"  # read in place, by the hour
    assert {"Std:Join": {"On": "", "Values": ["--window-before=",
                                              {"Get": "Execution.StartDateTime"}]}} in arguments
    assert {"Std:Join": {"On": "", "Values": ["--window-end=", {"Get": "Parameters.WindowEnd"}]}} \
        in arguments
    assert options["--period"] == "hourly" and options["--endpoint-name"] == "dogs-drift"
    assert "--publish-metrics" in arguments
    [model] = job["ProcessingInputs"]
    assert model["S3Input"]["S3Uri"] == "s3://data/runs/job/output/model.tar.gz"
    [output] = job["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["S3Uri"] == {"Std:Join": {"On": "/", "Values": [
        "s3://data/monitoring", {"Get": "Execution.PipelineExecutionId"}]}}
    pipeline_arn = aws.client("sagemaker").describe_pipeline(
        PipelineName="dogs-drift-image-drift")["PipelineArn"]
    [schedule] = sent["CreateSchedule"]
    assert schedule["Name"] == "dogs-drift-image-drift"
    assert schedule["ScheduleExpression"] == "cron(10 * * * ? *)"
    assert schedule["Target"]["Arn"] == pipeline_arn and schedule["Target"]["RoleArn"] == ROLE
    assert aws.client("scheduler").get_schedule(Name="dogs-drift-image-drift")["Target"][
        "Arn"] == pipeline_arn
    [alarm] = sent["PutMetricAlarm"]
    assert alarm["Namespace"] == "BYOC/ImageDrift" and alarm["MetricName"] == "violations"
    assert alarm["Dimensions"] == [{"Name": "Endpoint", "Value": "dogs-drift"},
                                   {"Name": "MonitoringSchedule", "Value": "dogs-drift-image-drift"}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["Period"]) == (
        "GreaterThanThreshold", 0.0, 3600)
    assert alarm["AlarmActions"] == [topic]
    cloudwatch = aws.client("cloudwatch")
    assert cloudwatch.describe_alarms(AlarmNames=["dogs-drift-image-drift-violations"])[
        "MetricAlarms"][0]["AlarmActions"] == [topic]

    assert sagemaker_monitor.main(["--role", ROLE, "delete", "--endpoint-name", "dogs-drift"]) == 0
    assert [d["Name"] for d in sent["DeleteSchedule"]] == ["dogs-drift-image-drift"]
    assert sent["DeletePipeline"][0]["PipelineName"] == "dogs-drift-image-drift"
    assert cloudwatch.describe_alarms(AlarmNames=["dogs-drift-image-drift-violations"])[
        "MetricAlarms"] == []
    printed = capsys.readouterr().out
    assert "deleted pipeline dogs-drift-image-drift" in printed

    # The cleanup of the endpoint removes its monitor too, before the endpoint.
    assert sagemaker_monitor.main(["--role", ROLE, "create", "--endpoint-name", "dogs-drift",
                                   "--output", "s3://data/monitoring/", "--alarm-topic", topic]) == 0
    deleted = sagemaker_cleanup.delete_endpoint(session, "dogs-drift")
    assert deleted[:3] == ["EventBridge schedule dogs-drift-image-drift",
                           "pipeline dogs-drift-image-drift",
                           "alarm dogs-drift-image-drift-violations"]
    assert "endpoint dogs-drift" in deleted
    assert "dogs-drift-image-drift" not in {
        p["PipelineName"] for p in aws.client("sagemaker").list_pipelines()["PipelineSummaries"]}


@pytest.mark.parametrize("argv, message", [
    (["--alarm-topic", "drift-topic"], "is not an SNS topic ARN"),
    (["--alarm-topic", f"arn:aws:sqs:{REGION}:{ACCOUNT}:drift"], "is not an SNS topic ARN"),
    (["--alarm-topic", f"arn:aws:sns:{REGION}:{ACCOUNT}:drift", "--model-monitor"],
     "alarm on Model Monitor's own"),
    (["--output", "monitoring/"], "--output 'monitoring/' is not an S3 location"),
])
def test_bad_monitor_arguments_fail_before_any_aws_call(aws, sent, capsys, argv, message):
    from scripts import sagemaker_monitor

    base = {"--endpoint-name": "dogs", "--output": "s3://data/monitoring"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base.pop(flag, None)
    sent.clear()  # what the fixtures sent setting moto up
    with pytest.raises(SystemExit) as stopped:
        sagemaker_monitor.main(["--role", ROLE, "create",
                                *[x for kv in base.items() for x in kv], *argv])
    assert message in refusal(stopped, capsys)
    assert dict(sent) == {}


def test_the_drift_monitor_schedule_runs_the_training_image_on_the_served_model(aws, sent,
                                                                              monkeypatch):
    """--model-monitor (accounts that still have it): CreateMonitoringSchedule as the SDK's
    ModelMonitor sends it (moto has no Model Monitor: the request is checked and answered by a
    stand-in)."""
    from scripts import sagemaker_monitor

    session = deploy("--endpoint-name", "dogs-watched", "--capture", "s3://data/capture")
    sent.answers["CreateMonitoringSchedule"] = {
        "MonitoringScheduleArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:monitoring-schedule/x"}
    assert sagemaker_monitor.main(["--role", ROLE, "create", "--endpoint-name", "dogs-watched",
                                   "--output", "s3://data/monitoring/", "--schedule", "daily",
                                   "--model-monitor"]) == 0
    [request] = sent["CreateMonitoringSchedule"]
    assert request["MonitoringScheduleName"] == "dogs-watched-image-drift"
    config = request["MonitoringScheduleConfig"]
    assert config["ScheduleConfig"]["ScheduleExpression"] == "cron(0 0 ? * * *)"
    job = config["MonitoringJobDefinition"]
    assert job["MonitoringAppSpecification"] == {
        "ImageUri": f"{REGISTRY}/byoc-train:latest",
        "ContainerEntrypoint": ["python", "-m", "monitor.run"]}
    assert job["Environment"] == {"BYOC_MODEL_DATA": "s3://data/runs/job/output/model.tar.gz",
                                  "publish_cloudwatch_metrics": "Enabled"}
    [endpoint] = [i["EndpointInput"] for i in job["MonitoringInputs"]]
    assert endpoint["EndpointName"] == "dogs-watched"
    assert endpoint["LocalPath"] == "/opt/ml/processing/input/endpoint"
    [output] = job["MonitoringOutputConfig"]["MonitoringOutputs"]
    assert output["S3Output"]["S3Uri"] == "s3://data/monitoring"
    assert output["S3Output"]["LocalPath"] == "/opt/ml/processing/resultdata"
    assert job["RoleArn"] == ROLE
    assert sagemaker_monitor.main(["--role", ROLE, "create", "--endpoint-name", "dogs-watched",
                                   "--output", "s3://data/monitoring/", "--model-monitor",
                                   "--no-cloudwatch-metrics"]) == 0
    quiet = sent["CreateMonitoringSchedule"][-1]["MonitoringScheduleConfig"]
    assert quiet["MonitoringJobDefinition"]["Environment"]["publish_cloudwatch_metrics"] == (
        "Disabled")

    deploy("--endpoint-name", "dogs-blind")
    with pytest.raises(SystemExit, match="dogs-blind captures no traffic"):
        sagemaker_monitor.main(["--role", ROLE, "create", "--endpoint-name", "dogs-blind",
                                "--output", "s3://data/monitoring"])
    # Cleanup deletes the endpoint's schedule and waits until SageMaker no longer knows it.
    from botocore.exceptions import ClientError

    sent.answers["ListMonitoringSchedules"] = {"MonitoringScheduleSummaries": [
        {"MonitoringScheduleName": "dogs-watched-image-drift", "EndpointName": "dogs-watched"}]}
    sent.answers["DeleteMonitoringSchedule"] = {}
    still_there = [{"MonitoringScheduleStatus": "Stopped"}]  # one answer before it is gone

    def describe(params):
        if still_there:
            return still_there.pop()
        raise ClientError({"Error": {"Code": "ResourceNotFound", "Message": "no schedule"}},
                          "DescribeMonitoringSchedule")

    sent.answers["DescribeMonitoringSchedule"] = describe
    monkeypatch.setattr(sagemaker_monitor.time, "sleep", lambda seconds: None)
    deleted = sagemaker_cleanup.delete_endpoint(session, "dogs-watched")
    assert sent["ListMonitoringSchedules"][-1] == {"EndpointName": "dogs-watched"}
    assert sent["DeleteMonitoringSchedule"] == [
        {"MonitoringScheduleName": "dogs-watched-image-drift"}]
    assert len(sent["DescribeMonitoringSchedule"]) == 2  # asked again until it was gone
    assert deleted[0] == "monitoring schedule dogs-watched-image-drift"
    assert "endpoint dogs-watched" in deleted
    sent.answers["ListMonitoringSchedules"] = {"MonitoringScheduleSummaries": []}
    sagemaker_cleanup.delete_endpoint(session, "dogs-blind")


def endpoints_without_moto(sent: Sent) -> None:
    """Stand-ins for the endpoint configs and endpoints that moto refuses: a config without a
    model on its variant, and instance types its list lacks (Graviton's, ml.g6: botocore's model
    has them)."""
    configs, endpoints = {}, {}
    sent.answers.update(
        CreateEndpointConfig=lambda params: configs.update({params["EndpointConfigName"]: params})
        or {"EndpointConfigArn": "arn:aws:sagemaker:x"},
        DescribeEndpointConfig=lambda params: configs[params["EndpointConfigName"]],
        CreateEndpoint=lambda params: endpoints.update({params["EndpointName"]: params})
        or {"EndpointArn": "arn:aws:sagemaker:x"},
        DescribeEndpoint=lambda params: {**endpoints[params["EndpointName"]],
                                         "EndpointStatus": "InService"},
        DeleteEndpoint=lambda params: endpoints.pop(params["EndpointName"]) and {},
        DeleteEndpointConfig=lambda params: configs.pop(params["EndpointConfigName"]) and {})


def test_an_inference_component_scales_to_zero_as_aws_documents_it(aws, sent, trained_model,
                                                                    tmp_path, monkeypatch):
    """--inference-component --min-copies 0: an endpoint with managed instance scaling down to
    zero instances, the component with the serving image's memory estimate, copies autoscaled
    down to 0 and a step policy on NoCapacityInvocationFailures back from it; cleanup removes the
    component before the endpoint. moto has no inference components: their calls are checked
    and answered by stand-ins."""
    import tarfile

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in trained_model.iterdir():
            tar.add(item, arcname=item.name)
    aws.client("s3").upload_file(str(archive), "data", "runs/ic/model.tar.gz")
    components = {}

    def create(params):
        components[params["InferenceComponentName"]] = params
        return {"InferenceComponentArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:"
                                         f"inference-component/{params['InferenceComponentName']}"}

    def describe(params):
        from botocore.exceptions import ClientError

        if params["InferenceComponentName"] not in components:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "gone"}},
                              "DescribeInferenceComponent")
        return {**components[params["InferenceComponentName"]],
                "InferenceComponentStatus": "InService"}

    # moto's Application Auto Scaling has no inference-component dimension
    sent.answers.update({
        "application-autoscaling:RegisterScalableTarget": {},
        "application-autoscaling:PutScalingPolicy": lambda params: {
            "PolicyARN": f"arn:aws:autoscaling:{params['ResourceId']}/{params['PolicyType']}"},
        "application-autoscaling:DeregisterScalableTarget": {}})
    # moto takes no endpoint config without a model on its variant: the endpoint's calls too
    endpoints_without_moto(sent)
    sent.answers.update(
        CreateInferenceComponent=create, DescribeInferenceComponent=describe,
        ListInferenceComponents=lambda params: {"InferenceComponents": [
            {"InferenceComponentName": name} for name, c in components.items()
            if c["EndpointName"] == params["EndpointNameEquals"]]},
        DeleteInferenceComponent=lambda params: components.pop(params["InferenceComponentName"])
        and {})
    for cores in ("1", "2"):
        assert sagemaker_deploy.main([
            "--model-data", "s3://data/runs/ic/model.tar.gz", "--role", ROLE,
            "--endpoint-name", f"dogs-ic-{cores}", "--inference-component", f"dogs-model-{cores}",
            "--min-copies", "0", "--max-copies", "3", "--autoscale-max", "2",
            "--cpu-cores", cores]) == 0
    config = sent["CreateEndpointConfig"][0]
    [variant] = config["ProductionVariants"]
    assert "ModelName" not in variant and config["ExecutionRoleArn"] == ROLE
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0,
                                                 "MaxInstanceCount": 2}
    assert_detailed_observability(config)
    one, two = (c["Specification"]["ComputeResourceRequirements"]
                for c in sent["CreateInferenceComponent"])
    created = sent["CreateInferenceComponent"][0]
    assert (created["EndpointName"], created["VariantName"]) == ("dogs-ic-1", "AllTraffic")
    assert created["RuntimeConfig"] == {"CopyCount": 1}
    assert created["Specification"]["ModelName"] == sent["CreateModel"][0]["ModelName"]
    # The serving image's estimate: the served ONNX weights, and more of it with more cores
    # (ONNX Runtime keeps a second session then).
    onnx_mb = max(p.stat().st_size for p in trained_model.glob("*.onnx")) / 2**20
    assert (one["NumberOfCpuCoresRequired"], two["NumberOfCpuCoresRequired"]) == (1, 2)
    assert onnx_mb < one["MinMemoryRequiredInMb"] < two["MinMemoryRequiredInMb"]
    resource = "inference-component/dogs-model-1"
    target = sent["RegisterScalableTarget"][0]
    assert (target["ResourceId"], target["ScalableDimension"]) == (
        resource, "sagemaker:inference-component:DesiredCopyCount")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 3)
    policies = {p["PolicyType"]: p for p in sent["PutScalingPolicy"]
                if p["ResourceId"] == resource}
    tracking = policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution")
    step = policies["StepScaling"]["StepScalingPolicyConfiguration"]
    assert step["AdjustmentType"] == "ChangeInCapacity"
    assert step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]
    [alarm] = aws.client("cloudwatch").describe_alarms(
        AlarmNames=["dogs-model-1-no-capacity"])["MetricAlarms"]
    assert alarm["MetricName"] == "NoCapacityInvocationFailures"
    assert alarm["Dimensions"] == [{"Name": "InferenceComponentName", "Value": "dogs-model-1"}]
    assert alarm["AlarmActions"] == [f"arn:aws:autoscaling:{resource}/StepScaling"]

    monkeypatch.setattr(sagemaker_cleanup.time, "sleep", lambda seconds: None)
    deleted = sagemaker_cleanup.delete_endpoint(common.session(TARGET), "dogs-ic-1")
    assert deleted.index("inference component dogs-model-1") < deleted.index("endpoint dogs-ic-1")
    assert "alarm dogs-model-1-no-capacity" in deleted
    assert sent["DeleteModel"][-1]["ModelName"] == created["Specification"]["ModelName"]
    assert sent["DeregisterScalableTarget"][0]["ResourceId"] == resource


@pytest.mark.parametrize("argv, message", [
    (["--min-copies", "0"], "--min-copies without --inference-component"),
    (["--inference-component", "c", "--serverless"], "--inference-component runs on AWS"),
    (["--inference-component", "c", "--min-copies", "2", "--copies", "1"], "need 0 <="),
    (["--inference-component", "c", "--capture", "s3://data/c"], "--capture with"),
])
def test_bad_inference_component_flags_fail_before_any_aws_call(aws, sent, capsys, argv, message):
    sent.clear()
    with pytest.raises(SystemExit):
        sagemaker_deploy.main(["--model-data", MODEL_DATA, "--role", ROLE, *argv])
    assert message in capsys.readouterr().err
    assert dict(sent) == {}


def test_invoke_through_the_sdk_boto3_and_by_inference_component(aws, sent, moto_url, tmp_path,
                                                                capsys):
    """sagemaker_invoke's three real-time callers against moto's SageMaker: SDK v3's Endpoint
    (the default), boto3's invoke_endpoint, and a component addressed by name. Each sends the
    image's bytes with its content type and reads the JSON answer."""
    from scripts import sagemaker_invoke

    deploy("--endpoint-name", "dogs-invoked")
    image = tmp_path / "dog.png"
    image.write_bytes(b"PNG stand-in")  # moto's runtime decodes bodies as UTF-8
    for extra in ([], ["--boto3"], ["--inference-component", "dogs-model"]):
        endpoint_answers(moto_url, "endpoint-results", [{
            "Body": json.dumps(ANSWER), "ContentType": "application/json",
            "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}])
        image.write_bytes(image.read_bytes() + b"x")  # a new body: moto's next answer
        assert sagemaker_invoke.main(["--role", ROLE, "--endpoint-name", "dogs-invoked",
                                      "--top-k", "1", *extra, str(image)]) == 0
        assert "90.00%  dog" in capsys.readouterr().out
        request = sent["InvokeEndpoint"][-1]
        assert request["EndpointName"] == "dogs-invoked" and request["Body"] == image.read_bytes()
        assert (request["ContentType"], request["Accept"], request["CustomAttributes"]) == (
            "image/png", "application/json", "top_k=1")
        assert request.get("InferenceComponentName") == ("dogs-model" if extra[:1] == [
            "--inference-component"] else None)
    assert "DescribeEndpoint" in sent  # the SDK's Endpoint resource was fetched


def test_a_multi_model_endpoint_serves_the_models_under_its_prefix(aws, sent, moto_url, tmp_path,
                                                                   capsys):
    """--multi-model: one CPU endpoint for every model.tar.gz under a prefix, which SageMaker
    loads into the container when first invoked (TargetModel: the file's path under it)."""
    from scripts import sagemaker_invoke

    session = deploy("--endpoint-name", "dogs-many", "--multi-model", "s3://data/models/",
                     model_data=None)
    [model] = sent["CreateModel"]
    assert model["PrimaryContainer"]["Mode"] == "MultiModel"
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://data/models/"
    assert model["PrimaryContainer"]["Image"] == f"{REGISTRY}/byoc-serve:latest"
    [config] = sent["CreateEndpointConfig"]
    assert_detailed_observability(config)
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"
    endpoint_answers(moto_url, "endpoint-results", [{
        "Body": json.dumps(ANSWER), "ContentType": "application/json",
        "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}])
    photo = tmp_path / "dog.png"
    photo.write_bytes(b"PNG stand-in")  # moto's runtime decodes bodies as UTF-8
    assert sagemaker_invoke.main(["--role", ROLE, "--endpoint-name", "dogs-many",
                                  "--target-model", "breeds/v2/model.tar.gz", str(photo)]) == 0
    assert sent["InvokeEndpoint"][-1]["TargetModel"] == "breeds/v2/model.tar.gz"
    assert "90.00%  dog" in capsys.readouterr().out
    sagemaker_cleanup.delete_endpoint(session, "dogs-many")


@pytest.mark.parametrize("flag", [["--gpu"], ["--serverless"], ["--local"],
                                  ["--async-output", "s3://data/async"],
                                  ["--inference-component", "c"]])
def test_a_multi_model_endpoint_is_real_time_on_aws_cpus(aws, sent, capsys, flag):
    sent.clear()
    with pytest.raises(SystemExit):
        sagemaker_deploy.main(["--multi-model", "s3://data/models/", "--role", ROLE, *flag])
    assert "--multi-model runs on AWS, on CPU instances" in capsys.readouterr().err
    assert dict(sent) == {}


MADE = ("CreateModel", "CreateEndpointConfig", "CreateEndpoint", "CreateTransformJob")


@pytest.mark.parametrize("image, listed, argv, message", [
    (("amd64",), True, ["--instance-type", "ml.c7g.xlarge"],
     "image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-serve:latest is amd64, but "
     "ml.c7g.xlarge runs arm64: build and push it for arm64 with ./build_and_push.sh serve"),
    (("arm64",), True, ["--serverless"], "is arm64, but a serverless endpoint runs amd64"),
    (("arm64",), False, ["--instance-type", "ml.m5.large"], "is arm64, but ml.m5.large runs amd64"),
    (("amd64",), True, ["--inference-component", "c", "--instance-type", "ml.r7gd.large"],
     "ml.r7gd.large runs arm64"),
    (("amd64",), True, ["--multi-model", "s3://data/models/", "--instance-type", "ml.m8g.large"],
     "ml.m8g.large runs arm64"),
])
def test_an_image_without_the_instances_architecture_fails_before_any_model_is_made(
        aws, sent, image, listed, argv, message):
    """ECR's manifest list says which architectures the image has (a single image's
    configuration blob, when it is no list): a Graviton instance needs arm64, every other
    amd64. Nothing is created when the image lacks it."""
    push_image(aws, "byoc-serve", image, listed)
    source = [] if "--multi-model" in argv else ["--model-data", MODEL_DATA]
    with pytest.raises(SystemExit, match=message):
        sagemaker_deploy.main([*source, "--role", ROLE, *argv])
    assert sent["BatchGetImage"][0]["repositoryName"] == "byoc-serve"
    assert ("GetDownloadUrlForLayer" in sent) == (not listed)
    assert not set(MADE) & set(sent), sent.keys()


def test_the_cpu_serving_image_serves_graviton_and_x86_instances_alike(aws, sent):
    endpoints_without_moto(sent)
    for instance_type in ("ml.c7g.xlarge", "ml.c6gn.large", "ml.c5.xlarge"):
        session = deploy("--endpoint-name", "dogs-arch", "--instance-type", instance_type)
        config = sent["CreateEndpointConfig"][-1]
        assert config["ProductionVariants"][0]["InstanceType"] == instance_type
        sagemaker_cleanup.delete_endpoint(session, "dogs-arch")
    # the GPU image is one amd64 image: its architecture is read from its configuration
    session = deploy("--endpoint-name", "dogs-gpu-arch", "--gpu", "--instance-type",
                     "ml.g6.xlarge")
    assert sent["GetDownloadUrlForLayer"][0]["repositoryName"] == "byoc-serve-gpu"
    sagemaker_cleanup.delete_endpoint(session, "dogs-gpu-arch")


@pytest.mark.parametrize("instance_type, message", [
    ("ml.c7g.xlarge", "has no GPU"), ("ml.p6e-gb200.36xlarge", "an arm64 instance")])
def test_gpu_serving_on_an_arm64_instance_is_refused(aws, sent, instance_type, message):
    with pytest.raises(SystemExit, match=message):
        sagemaker_deploy.main(["--model-data", MODEL_DATA, "--role", ROLE, "--gpu",
                               "--instance-type", instance_type])
    assert not set(MADE) & set(sent)


def test_a_model_packages_image_and_a_batch_transforms_are_checked_too(aws, sent, capsys):
    from scripts import sagemaker_batch_transform, sagemaker_registry

    assert sagemaker_registry.main(["--role", ROLE, "register", "--group", "dogs-arch",
                                    "--model-data", MODEL_DATA]) == 0
    arn = capsys.readouterr().out.split("registered: ")[1].split()[0]
    sagemaker_registry.main(["--role", ROLE, "approve", arn])
    push_image(aws, "byoc-serve", ("amd64",))
    sent.clear()
    with pytest.raises(SystemExit, match="ml.c6g.large runs arm64"):
        sagemaker_deploy.main(["--model-package", arn, "--role", ROLE, "--instance-type",
                               "ml.c6g.large"])
    assert "DescribeModelPackage" in sent and not set(MADE) & set(sent)
    push_image(aws, "byoc-serve", ("arm64",))
    sent.clear()
    with pytest.raises(SystemExit, match="ml.c5.xlarge runs amd64"):
        sagemaker_batch_transform.main([
            "--model-data", MODEL_DATA, "--images", "s3://data/dogs", "--output",
            "s3://data/transform", "--role", ROLE])
    assert not set(MADE) & set(sent) and "PutObject" not in sent  # nothing uploaded


OCI_REFUSED = ("image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/byoc-{image}:oci is in ECR "
               "as application/vnd.oci.image.index.v1+json, which SageMaker refuses "
               "(\"Unsupported manifest media type\"; it takes Docker's): a BuildKit build with "
               "its default attestations pushes that; push it again with ./build_and_push.sh "
               "{image}, which pushes Docker's media types")
EVERY_REQUEST_WITH_AN_IMAGE = {
    "train": ("sagemaker_train", ["--data", "s3://data/dogs", "--output", "s3://data/runs",
                                  "--role", ROLE, "--no-wait", "--image-tag", "oci"], "train"),
    "tune": ("sagemaker_tune", ["--data", "s3://data/dogs", "--output", "s3://data/tuning",
                                "--role", ROLE, "--no-wait", "--image-tag", "oci"], "train"),
    "pipeline": ("sagemaker_pipeline", ["--role", ROLE, "--image-tag", "oci", "upsert", "--data",
                                        "s3://data/dogs", "--output", "s3://data/pipeline"],
                 "serve"),
    "drift monitor": ("sagemaker_monitor", ["--role", ROLE, "--image-tag", "oci", "create",
                                            "--endpoint-name", "dogs", "--output",
                                            "s3://data/monitoring"], "train"),
    "model monitor": ("sagemaker_monitor", ["--role", ROLE, "--image-tag", "oci", "create",
                                            "--endpoint-name", "dogs", "--output",
                                            "s3://data/monitoring", "--model-monitor"], "train"),
    "registry": ("sagemaker_registry", ["--role", ROLE, "--image-tag", "oci", "register",
                                        "--group", "dogs-oci", "--model-data", MODEL_DATA],
                 "serve"),
    "batch transform": ("sagemaker_batch_transform", [
        "--model-data", MODEL_DATA, "--images", "s3://data/dogs", "--output",
        "s3://data/transform", "--role", ROLE, "--image-tag", "oci"], "serve"),
    **{f"deploy {mode}": ("sagemaker_deploy", ["--model-data", MODEL_DATA, "--role", ROLE,
                                               "--image-tag", "oci", *flags], image)
       for mode, flags, image in (
           ("real-time", [], "serve"), ("serverless", ["--serverless"], "serve"),
           ("async", ["--async-output", "s3://data/async"], "serve"),
           ("inference component", ["--inference-component", "c"], "serve"),
           ("gpu", ["--gpu", "--instance-type", "ml.g5.xlarge"], "serve-gpu"))},
    "deploy multi-model": ("sagemaker_deploy", ["--multi-model", "s3://data/models/", "--role",
                                                ROLE, "--image-tag", "oci"], "serve"),
}


@pytest.mark.parametrize("request_kind", EVERY_REQUEST_WITH_AN_IMAGE)
def test_an_image_pushed_with_oci_media_types_is_refused_before_any_sagemaker_call(
        aws, sent, request_kind):
    """The image as Docker Desktop's BuildKit pushes it by default (an OCI index with an
    attestation manifest), in each script that names an image in a request: one line that
    names the image, its media type and the command that pushes it right; no request to
    SageMaker, which would refuse it ("Unsupported manifest media type")."""
    import importlib

    script, argv, image = EVERY_REQUEST_WITH_AN_IMAGE[request_kind]
    push_as_buildkit_does(aws, f"byoc-{image}", "oci")
    for other in {"train", "serve", "serve-gpu"} - {image}:  # the others are Docker's
        push_image(aws, f"byoc-{other}", ("amd64", "arm64") if other == "serve" else ("amd64",),
                   listed=other == "serve", tag="oci")
    sent.clear()
    sent.services.clear()
    with pytest.raises(SystemExit) as refused:
        importlib.import_module(f"scripts.{script}").main(argv)
    assert str(refused.value) == OCI_REFUSED.format(image=image)
    assert "sagemaker" not in sent.services, sent.services


def test_images_in_chinas_regions_are_named_with_that_partitions_host(aws):
    """ECR's hosts end in amazonaws.com.cn there, as build_and_push.sh pushes to them."""
    assert common.image_uri("serve", common.Launch(region="cn-north-1")) == (
        f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/byoc-serve:latest")


def refused(code: str, message: str = "refused") -> dict:
    return {"Error": {"Code": code, "Message": message}}


GPU_IMAGE = f"image {REGISTRY}/byoc-serve-gpu:latest"
ECR_CASES = {
    "a repository never pushed to": (
        {}, ["--image-tag", "latest"], f"image {REGISTRY}/never-serve:latest: ECR has no "
        f"repository never-serve in account {ACCOUNT} ({REGION}): push the image with "
        "./build_and_push.sh serve"),
    "a tag never pushed": (
        {}, ["--image-tag", "v9"], f"image {REGISTRY}/byoc-serve:v9 is not in ECR "
        "(Requested image not found): push it with ./build_and_push.sh serve"),
    "ECR refusing the caller": (
        {"ecr:BatchGetImage": refused("AccessDeniedException", "not authorized")}, [],
        f"image {REGISTRY}/byoc-serve:latest: ECR refused to read it (AccessDeniedException: "
        "not authorized): the credentials you launch with need ecr:BatchGetImage and "
        "ecr:GetDownloadUrlForLayer on byoc-serve"),
    "the layer download refused": (
        {"ecr:GetDownloadUrlForLayer": refused("AccessDeniedException", "not authorized")},
        ["--gpu", "--instance-type", "ml.g5.xlarge"],
        f"{GPU_IMAGE}: its configuration, which says its architecture, could not be read from "
        "ECR (AccessDeniedException: not authorized): the credentials you launch with need "
        "ecr:GetDownloadUrlForLayer on byoc-serve-gpu, and this machine must reach ECR's S3 "
        "download URLs"),
    "the layer's URL unreachable": (
        {"ecr:GetDownloadUrlForLayer": lambda params: {
            "layerDigest": params["layerDigest"], "downloadUrl": "http://127.0.0.1:9/layer"}},
        ["--gpu", "--instance-type", "ml.g5.xlarge"],
        f"{GPU_IMAGE}: its configuration, which says its architecture, could not be read from "
        "ECR (URLError: <urlopen error [Errno 111] Connection refused>): the credentials you "
        "launch with need ecr:GetDownloadUrlForLayer on byoc-serve-gpu, and this machine must "
        "reach ECR's S3 download URLs"),
}


@pytest.mark.parametrize("case", ECR_CASES)
@pytest.mark.parametrize("script", ["sagemaker_deploy", "sagemaker_batch_transform"])
def test_an_image_ecr_cannot_give_is_one_line_before_any_model_is_made(aws, sent, monkeypatch,
                                                                       script, case):
    import importlib

    answers, flags, says = ECR_CASES[case]
    if case == "a repository never pushed to":
        monkeypatch.setenv("IMAGE_PREFIX", "never")
    sent.answers.update(answers)
    argv = ["--model-data", MODEL_DATA, "--role", ROLE, *flags]
    if script == "sagemaker_batch_transform":
        argv += ["--images", "s3://data/dogs", "--output", "s3://data/transform"]
    with pytest.raises(SystemExit) as ended:
        importlib.import_module(f"scripts.{script}").main(argv)
    assert str(ended.value) == says
    assert not set(MADE) & set(sent) and "PutObject" not in sent


def test_the_closed_services_are_refused_for_tuning_jobs(aws, sent, capsys):
    """A tuning job's training job definition has no Debugger or Profiler fields: asking for
    them is an error, not a flag that does nothing."""
    from scripts import sagemaker_tune

    sent.clear()
    with pytest.raises(SystemExit):
        sagemaker_tune.main(["--data", "s3://data/dogs", "--output", "s3://data/tuning",
                             "--role", ROLE, "--no-wait", "--sagemaker-debugger"])
    assert "not for tuning jobs" in capsys.readouterr().err
    assert dict(sent) == {}


MLFLOW_APP = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-app/app-4xmplq5ok3ba"


def test_a_job_records_itself_in_sagemakers_managed_mlflow(aws, sent, capsys):
    """An MLflow App's ARN: CreateTrainingJob's MlflowConfig, and the container's Environment,
    which train/tracking.py reads (whatever SageMaker does with MlflowConfig for a custom
    image, the container knows where to log)."""
    assert sagemaker_train.main([
        "--data", "s3://data/dogs", "--output", "s3://data/runs", "--role", ROLE, "--no-wait",
        "--mlflow", MLFLOW_APP, "--mlflow-experiment", "dogs",
        "--mlflow-run-name", "resnet50-baseline"]) == 0
    [job] = sent["CreateTrainingJob"]
    assert job["MlflowConfig"] == {"MlflowResourceArn": MLFLOW_APP,
                                   "MlflowExperimentName": "dogs",
                                   "MlflowRunName": "resnet50-baseline"}
    assert job["Environment"] == {
        "MLFLOW_TRACKING_URI": MLFLOW_APP, "MLFLOW_EXPERIMENT_NAME": "dogs",
        "MLFLOW_RUN_NAME": "resnet50-baseline",
        "BYOC_TRAINING_IMAGE": f"{REGISTRY}/byoc-train:latest",
        "BYOC_OUTPUT_PATH": "s3://data/runs"}


def test_a_server_of_your_own_reaches_the_container_alone(aws, sent, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_MLFLOW", "https://mlflow.example.internal")
    assert sagemaker_train.main(["--data", "s3://data/dogs", "--output", "s3://data/runs",
                                 "--role", ROLE, "--no-wait"]) == 0
    [job] = sent["CreateTrainingJob"]
    assert "MlflowConfig" not in job
    assert job["Environment"]["MLFLOW_TRACKING_URI"] == "https://mlflow.example.internal"
    assert "MLFLOW_EXPERIMENT_NAME" not in job["Environment"]  # the container's default


@pytest.mark.parametrize("flags, message", [
    (["--mlflow", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow/app"],
     "is not the ARN of an MLflow App or tracking server"),
    (["--mlflow", f"arn:aws:sagemaker:{REGION}:12345:mlflow-app/app-1"],
     "is not the ARN of an MLflow App or tracking server"),
    (["--mlflow", "mlflow.example.internal:5000"], "give an MLflow App's ARN or a server's"),
    (["--mlflow-experiment", "dogs"], "--mlflow-experiment and --mlflow-run-name need --mlflow"),
])
def test_a_malformed_mlflow_target_fails_before_any_aws_call(aws, sent, flags, message):
    with pytest.raises(SystemExit, match=message):
        sagemaker_train.main(["--data", "s3://data/dogs", "--output", "s3://data/runs",
                              "--role", ROLE, "--no-wait", *flags])
    assert not sent, list(sent)


def test_every_tuning_trial_records_itself_tagged_with_the_tuning_job(aws, sent):
    from scripts import sagemaker_tune

    assert sagemaker_tune.main([
        "--data", "s3://data/dogs", "--output", "s3://data/tuning", "--role", ROLE, "--no-wait",
        "--job-name", "byoc-tune-tracked", "--mlflow", MLFLOW_APP,
        "--mlflow-experiment", "dogs-tuning"]) == 0
    [request] = sent["CreateHyperParameterTuningJob"]
    definition = request["TrainingJobDefinition"]
    assert "MlflowConfig" not in definition  # the tuning API has none: the Environment says
    assert definition["Environment"] == {
        "MLFLOW_TRACKING_URI": MLFLOW_APP, "MLFLOW_EXPERIMENT_NAME": "dogs-tuning",
        "BYOC_TRAINING_IMAGE": f"{REGISTRY}/byoc-train:latest",
        "BYOC_OUTPUT_PATH": "s3://data/tuning", "BYOC_MLFLOW_TAGS": "tuning_job=byoc-tune-tracked"}


def test_the_pipelines_training_step_records_itself(aws, sent):
    from scripts import sagemaker_pipeline

    assert sagemaker_pipeline.main([
        "--role", ROLE, "upsert", "--name", "dogs-tracked", "--data", "s3://data/dogs-with-test",
        "--output", "s3://data/pipeline", "--mlflow", MLFLOW_APP]) == 0
    [created] = sent["CreatePipeline"]
    train = next(s for s in json.loads(created["PipelineDefinition"])["Steps"]
                 if s["Name"] == "Train")["Arguments"]
    assert train["MlflowConfig"] == {"MlflowResourceArn": MLFLOW_APP}
    assert train["Environment"]["MLFLOW_TRACKING_URI"] == MLFLOW_APP


def test_a_registered_version_records_the_mlflow_run_that_trained_it(aws, sent, capsys,
                                                                     tmp_path):
    """A real MLflow server holds the training job's run (model_location, as train/tracking.py
    tags it); the registry finds it, the version's metadata names it, and the run gets the
    version's ARN."""
    from mlflow import MlflowClient

    from scripts import local_mlflow, sagemaker_registry

    model_data = "s3://data/runs/dogs-7/output/model.tar.gz"
    server, url = local_mlflow.start(tmp_path / "mlflow")
    try:
        client = MlflowClient(url)
        experiment = client.create_experiment("dogs")
        client.create_run(experiment, run_name="dogs-6",
                          tags={"model_location": "s3://data/runs/dogs-6/output/model.tar.gz"})
        trained = client.create_run(experiment, run_name="dogs-7",
                                    tags={"model_location": model_data}).info.run_id
        assert sagemaker_registry.main(["--role", ROLE, "register", "--group", "dogs",
                                        "--model-data", model_data, "--mlflow", url]) == 0
        arn = capsys.readouterr().out.split("registered: ")[1].split()[0]
        [package] = sent["CreateModelPackage"]
        assert package["CustomerMetadataProperties"] == {"mlflow_run_id": trained,
                                                         "mlflow_tracking_uri": url}
        assert client.get_run(trained).data.tags["model_package_arn"] == arn

        assert sagemaker_registry.main([
            "--role", ROLE, "register", "--group", "dogs", "--mlflow", url,
            "--model-data", "s3://data/runs/elsewhere/output/model.tar.gz"]) == 0
        assert "no MLflow run at" in capsys.readouterr().out
        assert "CustomerMetadataProperties" not in sent["CreateModelPackage"][-1]
    finally:
        local_mlflow.stop(server)
