"""A SageMaker Pipeline (SDK v3 sagemaker.mlops.workflow): train, evaluate, and register the model
only when its test top-1 reaches a threshold.

    Train     the training image on <data>/train, valid, test (a training job)
    Evaluate  python -m train.evaluate in the training image on the model.tar.gz and <data>/test
              (a processing job): evaluation.json, training's own preprocessing and metrics
    Check     test top-1 from evaluation.json >= AccuracyThreshold ?
      yes:    Register  a PendingManualApproval version in the model package group, with the
                        evaluation as its model quality (scripts/sagemaker_registry.py)
      no:     Fail      "test top-1 0.61 is below AccuracyThreshold 0.8"

    python -m scripts.sagemaker_pipeline upsert --name dogs --data s3://BUCKET/dogs \
        --output s3://BUCKET/pipeline --group dogs --threshold 0.8 --hp epochs=10
    python -m scripts.sagemaker_pipeline start --name dogs [--param AccuracyThreshold=0.85] [--wait]
    python -m scripts.sagemaker_pipeline describe --name dogs        # the latest execution's steps
    # on this machine: the same pipeline in SageMaker local mode, run to its end; local pipelines
    # read evaluation.json from S3, so --data and --output are s3:// on an S3 API of your own
    # (AWS_ENDPOINT_URL_S3=http://localhost:9000 for MinIO or moto_server)
    python -m scripts.sagemaker_pipeline run --local --data s3://demo/data --output s3://demo/pipeline \
        --hyperparameters scripts/demo_hyperparameters.json

Pipeline parameters (override them per execution with --param NAME=VALUE): InputData,
TrainingInstanceType, ProcessingInstanceType, AccuracyThreshold, and one hp_<name> per
hyperparameter given at upsert.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from scripts import common, platforms, sagemaker_train
from scripts.sagemaker_model import serving_container
from scripts.sagemaker_registry import package_arguments

ACCURACY = "multiclass_classification_metrics.accuracy.value"  # in evaluation.json
STEPS = ("Train", "Evaluate", "CheckAccuracy")


class RegisteredModel:
    """What SDK v3's ModelStep asks of the model it registers: the PipelineSession it was
    registered under (the request itself is create_model_package_from_containers's)."""

    def __init__(self, sagemaker_session):
        self.sagemaker_session = sagemaker_session


def register_step_arguments(session, container: dict, group: str, gpu: bool, evaluation_uri,
                            description: str, arm64: bool):
    """The Register step's arguments: CreateModelPackage as the registry script sends it,
    captured by the PipelineSession instead of sent."""
    from sagemaker.core.model_registry import create_model_package_from_containers

    session.init_model_step_arguments(RegisteredModel(session))
    create_model_package_from_containers(session, **package_arguments(
        container, group, gpu, evaluation_uri, description, arm64))
    arguments, session.context = session.context, None
    return arguments


def create_model_step_arguments(session, container: dict, role: str):
    """The local passing branch's CreateModel request, captured by the PipelineSession."""
    session.init_model_step_arguments(RegisteredModel(session))
    session._intercept_create_request(
        {"ModelName": "byoc-pipeline-model", "ExecutionRoleArn": role,
         "PrimaryContainer": container}, None, "create_model")
    arguments, session.context = session.context, None
    return arguments


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """What the pipeline is: its name, data and output, where it registers and from which test
    top-1 (--name, --data, --output, --group, --threshold, --processing-instance-type)."""
    name: str
    data: str
    output: str
    group: str = "byoc-image-classifier"
    threshold: float = 0.8
    processing_instance_type: str = "ml.m5.xlarge"


def pipeline_spec(args: argparse.Namespace) -> PipelineSpec:
    return PipelineSpec(name=args.name, data=args.data, output=args.output, group=args.group,
                        threshold=args.threshold,
                        processing_instance_type=args.processing_instance_type)


def build(target: common.Launch, session, spec: PipelineSpec, hyperparameters: dict,
          resources: sagemaker_train.TrainingCompute,
          services: sagemaker_train.ClosedServices = sagemaker_train.ClosedServices(),
          tracking: common.Tracking | None = None):
    """The Pipeline object; nothing is sent until upsert or create. tracking: the MLflow
    server its training step records itself in."""
    from sagemaker.core.processing import Processor
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterString
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep

    sagemaker_train.checked_hyperparameters(hyperparameters)  # fails before anything runs
    data = ParameterString("InputData", default_value=spec.data.rstrip("/"))
    if target.local:  # this machine's Docker: no instance types to choose
        instance_types = []
        train_type, eval_type = resources.instance_type, "local"
    else:
        train_type = ParameterString("TrainingInstanceType",
                                     default_value=resources.instance_type)
        eval_type = ParameterString("ProcessingInstanceType",
                                    default_value=spec.processing_instance_type)
        instance_types = [train_type, eval_type]
    threshold = ParameterFloat("AccuracyThreshold", default_value=spec.threshold)
    hp_parameters = {name: ParameterString(f"hp_{name}", default_value=str(value))
                     for name, value in hyperparameters.items()}
    output = spec.output.rstrip("/")
    run_folder = Join(on="/", values=[output, ExecutionVariables.PIPELINE_EXECUTION_ID])
    role = common.role(target)
    region = session.boto_region_name
    # The pipeline names both images: each is read back from ECR before it is created (the
    # training image by trainer()); the serving image's architectures say which instances the
    # registered model supports.
    arm64 = not target.local and "arm64" in platforms.ecr_architectures(
        common.image_uri(common.serving_image(resources.gpu), target, region),
        session.boto_session.client("ecr"))

    # trainer() picks the local instance type itself under --local.
    trainer = sagemaker_train.trainer(
        target, session, output=output, hyperparameters=hp_parameters,
        resources=dataclasses.replace(resources, instance_type=train_type), services=services,
        checkpoints=Join(on="/", values=[run_folder, "checkpoints", ""]), tracking=tracking)
    channels = {name: Join(on="/", values=[data, name]) for name in ("train", "valid", "test")}
    train = TrainingStep(name="Train",
                         step_args=trainer.train(sagemaker_train.input_data(channels)))
    model_data = train.properties.ModelArtifacts.S3ModelArtifacts

    evaluator = Processor(
        role=role, image_uri=common.image_uri("train", target, region), instance_count=1,
        instance_type=eval_type, entrypoint=["python", "-m", "train.evaluate"],
        base_job_name="byoc-evaluate", sagemaker_session=session)
    evaluation = PropertyFile(name="Evaluation", output_name="evaluation", path="evaluation.json")
    evaluation_folder = Join(on="/", values=[run_folder, "evaluation"])
    evaluate = ProcessingStep(name="Evaluate", property_files=[evaluation], step_args=evaluator.run(
        inputs=[common.processing_input(model_data, "/opt/ml/processing/model", "model"),
                common.processing_input(Join(on="/", values=[data, "test"]), "/opt/ml/processing/test",
                                 "test")],
        outputs=[common.processing_output("/opt/ml/processing/evaluation", evaluation_folder,
                                   "evaluation")]))
    accuracy = JsonGet(step_name=evaluate.name, property_file=evaluation, json_path=ACCURACY)

    container = serving_container(target, resources.gpu, model_data, region)
    if target.local:  # local pipelines have no model registry: the passing branch makes the model
        passed = ModelStep(name="CreateModel",
                           step_args=create_model_step_arguments(session, container, role))
    else:
        passed = ModelStep(name="Register", step_args=register_step_arguments(
            session, container, spec.group, resources.gpu,
            Join(on="/", values=[evaluation_folder, "evaluation.json"]),
            f"pipeline {spec.name}", arm64))
    failed = FailStep(name="AccuracyTooLow", error_message=Join(
        on=" ", values=["test top-1", accuracy, "is below AccuracyThreshold", threshold]))
    check = ConditionStep(
        name="CheckAccuracy", conditions=[ConditionGreaterThanOrEqualTo(accuracy, threshold)],
        if_steps=[passed], else_steps=[failed])
    return Pipeline(name=spec.name, sagemaker_session=session,
                    parameters=[data, *instance_types, threshold, *hp_parameters.values()],
                    steps=[train, evaluate, check])


def step_rows(steps: list[dict]) -> list[str]:
    rows = []
    for step in sorted(steps, key=lambda s: str(s.get("StartTime", ""))):
        reason = f"  {step['FailureReason']}" if step.get("FailureReason") else ""
        rows.append(f"{step['StepName']:<16} {step.get('StepStatus', '?'):<10}{reason}")
    return rows


def wait(session, execution_arn: str, poll_s: float = 30) -> dict:
    """Until the execution ends, one line per step change (no progress bar: this ends up in logs)."""
    client, seen = session.sagemaker_client, {}
    while True:
        described = client.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        steps = client.list_pipeline_execution_steps(
            PipelineExecutionArn=execution_arn)["PipelineExecutionSteps"]
        for step in steps:
            if seen.get(step["StepName"]) != step.get("StepStatus"):
                seen[step["StepName"]] = step.get("StepStatus")
                print(f"{time.strftime('%H:%M:%S')} {step_rows([step])[0]}", flush=True)
        if described["PipelineExecutionStatus"] not in ("Executing", "Stopping"):
            return described
        time.sleep(poll_s)


def built(args: argparse.Namespace, session):
    """The pipeline the command line describes."""
    return build(common.launch(args), session, pipeline_spec(args), common.hyperparameters(args),
                 sagemaker_train.compute(args), sagemaker_train.closed_services(args),
                 common.tracking(args))


def run_local(args: argparse.Namespace, parameters: dict[str, str]) -> int:
    """The whole pipeline in local mode, to its end; 0 when the model passed the threshold."""
    session = common.pipeline_session(True, args.region)
    pipeline = built(args, session)
    pipeline.create(role_arn=common.role(common.launch(args)))
    declared = {p.name: p.parameter_type.python_type for p in pipeline.parameters}
    values = {}
    # Local pipelines take typed values.
    for name, text in parameters.items():
        if name not in declared:
            raise SystemExit(f"--param {name}: the pipeline's parameters are "
                             f"{', '.join(declared)}")
        try:
            values[name] = declared[name](text)
        except ValueError:
            raise SystemExit(f"--param {name}={text}: not a {declared[name].__name__}") from None
    try:
        execution = pipeline.start(parameters=values)
    finally:
        common.remove_local_containers("train", image_tag=args.image_tag)
    steps = execution.list_steps()["PipelineExecutionSteps"]
    for row in step_rows(steps):
        print(row)
    made = [s for s in steps if s["StepName"] == "CreateModel"]
    return 0 if made and made[0].get("StepStatus") == "Succeeded" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    define = []
    for name, text in (("upsert", "create or update the pipeline on SageMaker"),
                       ("definition", "print the pipeline definition SageMaker would receive"),
                       ("run", "run the whole pipeline now (with --local: on this machine)")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--name", default="byoc-image-classifier")
        command.add_argument("--data", required=True,
                             help="s3:// prefix with train/ valid/ test/ (InputData's default)")
        command.add_argument("--output", required=True, help="s3:// prefix for the runs")
        command.add_argument("--group", default="byoc-image-classifier",
                             help="model package group to register in")
        command.add_argument("--threshold", type=float, default=0.8,
                             help="AccuracyThreshold's default: the test top-1 to register")
        common.add_hyperparameter_arguments(command)
        sagemaker_train.add_compute_arguments(command)
        command.add_argument("--processing-instance-type", default="ml.m5.xlarge")
        command.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
        sagemaker_train.add_sagemaker_debugging_arguments(command)
        common.add_mlflow_arguments(command)
        define.append(name)
    start = commands.add_parser("start", help="start an execution")
    start.add_argument("--name", default="byoc-image-classifier")
    start.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    start.add_argument("--wait", action="store_true", help="follow it to its end")
    describe = commands.add_parser("describe", help="an execution's steps (default: the latest)")
    describe.add_argument("--name", default="byoc-image-classifier")
    describe.add_argument("--execution", help="execution ARN")
    describe.add_argument("--wait", action="store_true", help="follow it to its end")
    args = parser.parse_args(argv)
    if args.command in define:
        # a local pipeline too: its evaluation step reads from S3 (see --help)
        common.check_s3_uri("--data", args.data, local_mode=False)
        common.check_s3_uri("--output", args.output, local_mode=False)
        if args.command == "run" and not args.local:
            parser.error("run is for --local; on AWS: upsert, then start")
        if args.command == "run":
            return run_local(args, common.name_values(args.param, "--param"))
    elif args.local:
        parser.error(f"{args.command} runs on AWS; --local pipelines run with: run --local")
    session = common.pipeline_session(args.local, args.region)
    if args.command == "definition":
        print(json.dumps(json.loads(built(args, session).definition()), indent=2))
    elif args.command == "upsert":
        result = built(args, session).upsert(role_arn=common.role(common.launch(args)))
        print(f"pipeline: {result['PipelineArn']}")
    elif args.command == "start":
        started = session.sagemaker_client.start_pipeline_execution(
            PipelineName=args.name, PipelineParameters=[
                {"Name": k, "Value": v}
                for k, v in common.name_values(args.param, "--param").items()])
        arn = started["PipelineExecutionArn"]
        print(f"execution: {arn}")
        if args.wait:
            return 0 if wait(session, arn)["PipelineExecutionStatus"] == "Succeeded" else 1
    else:
        arn = args.execution or session.sagemaker_client.list_pipeline_executions(
            PipelineName=args.name, SortBy="CreationTime", SortOrder="Descending",
            MaxResults=1)["PipelineExecutionSummaries"][0]["PipelineExecutionArn"]
        if args.wait:
            described = wait(session, arn)
        else:
            described = session.sagemaker_client.describe_pipeline_execution(
                PipelineExecutionArn=arn)
            steps = session.sagemaker_client.list_pipeline_execution_steps(
                PipelineExecutionArn=arn)["PipelineExecutionSteps"]
            for row in step_rows(steps):
                print(row)
        print(f"{arn}: {described['PipelineExecutionStatus']}")
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
