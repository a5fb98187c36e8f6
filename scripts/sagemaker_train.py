"""Run a SageMaker training job on the custom training image (SDK v3 ModelTrainer).

    # on AWS: data uploaded with scripts/upload_data.py, images pushed with build_and_push.sh
    python -m scripts.sagemaker_train --data s3://BUCKET/dogs --output s3://BUCKET/runs \
        --role arn:aws:iam::ACCOUNT:role/SageMakerRole --instance-type ml.g4dn.xlarge --spot \
        --hyperparameters hp.json --hp epochs=10
    # on this machine, in SageMaker local mode
    python -m scripts.sagemaker_train --local --data demo_data --output local_run/sagemaker \
        --hyperparameters scripts/demo_hyperparameters.json

The data folder (or S3 prefix) holds train/, valid/ and optionally test/; each one there becomes a
channel. The hyperparameters are checked here, before any instance starts. Spot jobs checkpoint
to <output>/checkpoints/<job name>/: SageMaker copies a checkpoint prefix into every job that
names it, so each job gets its own. Prints the job name and where the model.tar.gz is, for
scripts/sagemaker_deploy.py.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from debugger import config as debug_config
from scripts import common
from train.config import ConfigError, from_hyperparameters
from train.metrics import METRIC_DEFINITIONS
from util.s3 import list_folders

CHANNELS = ("train", "valid", "test")
REQUIRED = ("train", "valid")


def channels(data: str, local: bool, s3=None, test: str = "auto") -> dict[str, str]:
    """The job's channels: each split the folder or S3 prefix holds; test "auto" (when it is
    there), "always" or "never"."""
    if data.startswith("s3://"):
        found = list_folders(s3, data)
        base = data.rstrip("/")
        present = {name: f"{base}/{name}" for name in CHANNELS if name in found}
    else:
        if not local:
            raise SystemExit(f"{data} is a local folder: upload it to S3 first "
                             "(scripts/upload_data.py), or use --local")
        present = {name: str((Path(data) / name).resolve()) for name in CHANNELS
                   if (Path(data) / name).is_dir()}
    missing = [name for name in REQUIRED if name not in present]
    if missing:
        raise SystemExit(f"{data} has no {' or '.join(missing)}/ folder: a data set needs "
                         "train/ and valid/ (and optionally test/), one sub-folder per class")
    if test == "never":
        present.pop("test", None)
    elif test == "always" and "test" not in present:
        raise SystemExit(f"{data} has no test/ folder (--test-channel always)")
    return present


def sent_hyperparameters(hyperparameters: dict) -> dict:
    """The hyperparameters as SDK v3 sends them: a string as it is, anything else JSON-encoded
    (a pipeline parameter stays itself)."""
    from sagemaker.train.utils import safe_serialize

    return {name: safe_serialize(value) for name, value in hyperparameters.items()}


def checked_hyperparameters(hyperparameters: dict):
    """train/'s typed config of what the job will be given, so that a bad name or value fails
    now, not after the instances started. A pipeline parameter is checked by its default."""
    values = {name: getattr(value, "default_value", value)
              for name, value in hyperparameters.items()}
    try:
        return from_hyperparameters(sent_hyperparameters(values))
    except ConfigError as e:
        raise SystemExit(str(e)) from None


def new_job_name(base: str = "byoc-train") -> str:
    return f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"


def checkpoint_uri(output: str, name: str) -> str:
    """A job's own checkpoint prefix; the trailing / keeps job-1 from matching job-10."""
    return f"{output.rstrip('/')}/checkpoints/{name}/"


@dataclass(frozen=True)
class TrainingCompute:
    """What the job runs on (--instance-type, --instance-count, --gpu, --spot, --max-run-s)."""
    instance_type: str
    instance_count: int = 1
    gpu: bool = False
    spot: bool = False
    max_run_s: int = 24 * 3600


def add_compute_arguments(parser: argparse.ArgumentParser, max_run_s: int = 24 * 3600) -> None:
    parser.add_argument("--instance-type", default="ml.g4dn.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    common.add_gpu_argument(parser)
    parser.add_argument("--spot", action="store_true", help="managed spot training (AWS only)")
    parser.add_argument("--max-run-s", type=int, default=max_run_s)


def compute(args: argparse.Namespace) -> TrainingCompute:
    return TrainingCompute(instance_type=args.instance_type, instance_count=args.instance_count,
                           gpu=args.gpu, spot=args.spot, max_run_s=args.max_run_s)


@dataclass(frozen=True)
class ClosedServices:
    """SageMaker Debugger and Profiler, which AWS has closed to new accounts: opt-in."""
    debugger: bool = False
    profiler: bool = False


def add_sagemaker_debugging_arguments(parser: argparse.ArgumentParser) -> None:
    """The closed services, opt-in; without them every job still evaluates the rules itself and
    writes its TensorBoard record (train/, debugger/)."""
    parser.add_argument(
        "--sagemaker-debugger", action="store_true",
        help="also send SageMaker Debugger's hook and its managed rules (closed to accounts new "
             "since 2026-07-30); the job then also writes the smdebug trial")
    parser.add_argument(
        "--sagemaker-profiler", action="store_true",
        help="also send SageMaker Profiler's ProfilerConfig and ProfilerReport (the Profiler "
             "ends on 2027-06-30)")


def closed_services(args: argparse.Namespace) -> ClosedServices:
    return ClosedServices(debugger=args.sagemaker_debugger, profiler=args.sagemaker_profiler)


TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"  # TensorBoardOutputConfig's default


def sagemaker_debugger_settings(output: str, rule_overrides: dict | None = None) -> dict:
    """SageMaker Debugger (closed to new accounts since 2026-07-30): the hook's collections and
    the ten built-in rules with debugger/config.py's parameters (and the job's rule_parameters),
    each rule run by SageMaker in a container of its own."""
    from sagemaker.core.debugger import CollectionConfig, DebuggerHookConfig, Rule, rule_configs

    collections = [CollectionConfig(name, {k: str(v) for k, v in params.items()})
                   for name, params in debug_config.collections().items()]
    hook = DebuggerHookConfig(s3_output_path=f"{output.rstrip('/')}/debug-output",
                              collection_configs=collections)
    # Each rule gets our collections: left alone, the SDK adds the rule's own defaults (losses
    # every 500 steps, ...) over them.
    params = debug_config.rule_parameters(rule_overrides)
    rules = [
        Rule.sagemaker(getattr(rule_configs, name)(),
                       rule_parameters={k: str(v) for k, v in params[name].items()},
                       collections_to_save=collections)
        for name in debug_config.RULES
    ]
    return {"debugger_hook_config": hook, "rules": rules}


def sagemaker_profiler_settings(output: str, rule_overrides: dict | None = None) -> dict:
    """SageMaker Profiler (ends 2027-06-30): system monitoring, and ProfilerReport with our
    profiler rules' parameters. Framework profiling stays off (smdebug's is broken on torch >= 2;
    the training container traces with torch.profiler itself)."""
    from sagemaker.core.debugger import ProfilerConfig, ProfilerRule, rule_configs

    params = debug_config.rule_parameters(rule_overrides)
    report = {f"{sagemaker_name}_{key}": value
              for ours, sagemaker_name in debug_config.SAGEMAKER_PROFILER_RULES.items()
              for key, value in params[ours].items()}
    profiler = ProfilerConfig(s3_output_path=f"{output.rstrip('/')}/profiler-output",
                              system_monitor_interval_millis=debug_config.SYSTEM_MONITOR_INTERVAL_MS)
    return {"profiler_config": profiler,
            "rules": [ProfilerRule.sagemaker(rule_configs.ProfilerReport(**report))]}


def closed_service_fields(output: str, services: ClosedServices, rule_overrides: dict | None,
                          region: str) -> dict:
    """CreateTrainingJob's Debugger and Profiler fields, as SageMaker receives them: each rule
    runs in the region's rule image."""
    from sagemaker.core.debugger import get_rule_container_image_uri

    fields, rules = {}, {"DebugRuleConfigurations": [], "ProfilerRuleConfigurations": []}
    if services.debugger:
        settings = sagemaker_debugger_settings(output, rule_overrides)
        fields["DebugHookConfig"] = settings["debugger_hook_config"]._to_request_dict()
        rules["DebugRuleConfigurations"] = [
            rule.to_debugger_rule_config_dict() for rule in settings["rules"]]
    if services.profiler:
        settings = sagemaker_profiler_settings(output, rule_overrides)
        fields["ProfilerConfig"] = settings["profiler_config"]._to_request_dict()
        rules["ProfilerRuleConfigurations"] = [
            rule.to_profiler_rule_config_dict() for rule in settings["rules"]]
    for rule in rules["DebugRuleConfigurations"] + rules["ProfilerRuleConfigurations"]:
        rule["RuleEvaluatorImage"] = get_rule_container_image_uri(
            rule["RuleConfigurationName"], region)
    return {**fields, **{name: value for name, value in rules.items() if value}}


USER_MAPS = {"RuleParameters", "CollectionParameters", "HookParameters"}  # keys as the user's


def snake_case(value):
    """A request's PascalCase fields as sagemaker-core's resources take them."""
    from sagemaker.core.utils.utils import pascal_to_snake

    if isinstance(value, dict):
        return {pascal_to_snake(key): item if key in USER_MAPS else snake_case(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [snake_case(item) for item in value]
    return value


def model_trainer(job_name: str | None, extra_fields: dict, **settings):
    """SDK v3's ModelTrainer, with two things it cannot be told: the job's name (it makes one
    up, and the checkpoint prefix is named after the job), and the Debugger and Profiler fields
    of accounts that still have them."""
    from sagemaker.core.training.configs import MetricDefinition
    from sagemaker.train.model_trainer import ModelTrainer

    class NamedTrainer(ModelTrainer):
        def _create_training_job_args(self, input_data_config=None, boto3=False):
            request = super()._create_training_job_args(input_data_config, boto3)
            if "AlgorithmSpecification" in request:  # PascalCase: a pipeline step's request
                request.update(extra_fields)
            else:
                request.update(snake_case(extra_fields))
                if job_name:
                    request["training_job_name"] = job_name
            return request

    return NamedTrainer(**settings).with_metric_definitions(
        [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS])


def trainer(target: common.Launch, sagemaker_session, *, output: str, hyperparameters: dict,
            resources: TrainingCompute, services: ClosedServices = ClosedServices(),
            job_name: str | None = None, checkpoints=None,
            tracking: common.Tracking | None = None):
    """The ModelTrainer of a job (a pipeline's Train step too: then hyperparameters and the
    instance type may be pipeline parameters). checkpoints: the checkpoint S3 prefix of spot
    jobs; tracking: the MLflow server the job records itself in (its Environment says where,
    and for SageMaker's managed MLflow, its MlflowConfig)."""
    from sagemaker.core.shapes import (CheckpointConfig, OutputDataConfig,
                                       TensorBoardOutputConfig)
    from sagemaker.core.training.configs import Compute, StoppingCondition
    from sagemaker.train.model_trainer import Mode

    rule_overrides = checked_hyperparameters(hyperparameters).rule_parameters
    spot = resources.spot and not target.local  # spot capacity can be taken back: checkpoints
    image = common.pushed_image("train", target, sagemaker_session.boto_region_name)
    settings = dict(
        training_image=image,
        role=common.role(target),
        hyperparameters=hyperparameters,
        compute=Compute(instance_type=common.instance_type(target, resources.gpu,
                                                           resources.instance_type),
                        instance_count=resources.instance_count,
                        enable_managed_spot_training=True if spot else None),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=resources.max_run_s,
            max_wait_time_in_seconds=resources.max_run_s * 2 if spot else None),
        base_job_name="byoc-train",
        sagemaker_session=sagemaker_session,
    )
    if spot:
        settings["checkpoint_config"] = CheckpointConfig(s3_uri=checkpoints)
    if tracking is not None:
        settings["environment"] = tracking.environment(image, output)
    if target.local and not output.startswith("s3://"):
        # A local job: its folders, then its model.tar.gz, in the output folder.
        Path(output).mkdir(parents=True, exist_ok=True)
        settings.update(training_mode=Mode.LOCAL_CONTAINER,
                        local_container_root=str(Path(output).resolve()))
        return model_trainer(job_name, {}, **settings)
    settings["output_data_config"] = OutputDataConfig(s3_output_path=output)
    if target.local:  # a local pipeline's step: its engine runs neither TensorBoard nor Debugger
        return model_trainer(job_name, {}, **settings)
    # The training container evaluates the rules and writes the TensorBoard record itself, in
    # every job; SageMaker's Debugger and Profiler only when asked.
    job = model_trainer(job_name, {
        **closed_service_fields(output, services, rule_overrides,
                                sagemaker_session.boto_region_name),
        **(tracking.request_fields() if tracking else {})}, **settings)
    return job.with_tensorboard_output_config(TensorBoardOutputConfig(
        s3_output_path=f"{output.rstrip('/')}/tensorboard", local_path=TENSORBOARD_LOCAL_PATH))


def input_data(channels: dict[str, str]) -> list:
    from sagemaker.core.training.configs import InputData

    return [InputData(channel_name=name, data_source=source) for name, source in channels.items()]


def model_data(sagemaker_session, job_name: str) -> str:
    """Where a finished job's model.tar.gz is."""
    from sagemaker.core.resources import TrainingJob

    job = TrainingJob.get(training_job_name=job_name, session=sagemaker_session.boto_session)
    return job.model_artifacts.s3_model_artifacts


def gather_local_output(folder: Path) -> Path:
    """Local container mode leaves the job's archives in compressed_artifacts/ beside its
    scratch folders: model.tar.gz and output.tar.gz move up into the output folder, as
    SageMaker puts them in the job's S3 output."""
    compressed = folder / "compressed_artifacts"
    for name in ("model.tar.gz", "output.tar.gz"):
        if (compressed / name).exists():
            (compressed / name).replace(folder / name)
    for scratch in ("compressed_artifacts", "artifacts", "model", "output/data"):
        shutil.rmtree(folder / scratch, ignore_errors=True)
    (folder / "docker-compose.yaml").unlink(missing_ok=True)
    return folder / "model.tar.gz"


def add_test_channel_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test-channel", choices=("auto", "always", "never"), default="auto",
                        help="declare a test channel: when the data has test/ (auto), or always "
                             "(failing without it), or never")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    parser.add_argument("--data", required=True, help="folder or s3:// prefix with train/ valid/ [test/]")
    parser.add_argument("--output", required=True, help="s3:// prefix (or a folder with --local)")
    common.add_hyperparameter_arguments(parser)
    add_compute_arguments(parser)
    parser.add_argument("--no-wait", action="store_true", help="start the job and return")
    parser.add_argument("--job-name", help="default: byoc-train-<timestamp>")
    add_test_channel_argument(parser)
    add_sagemaker_debugging_arguments(parser)
    common.add_mlflow_arguments(parser)
    args = parser.parse_args(argv)
    target = common.launch(args)
    tracking = common.tracking(args)
    if target.local and (args.sagemaker_debugger or args.sagemaker_profiler):
        parser.error("--sagemaker-debugger and --sagemaker-profiler run on AWS (local mode has "
                     "neither; every job evaluates the rules itself)")
    if args.output.startswith("s3://") == target.local:
        parser.error("--output is an s3:// prefix on AWS, a folder with --local")
    common.check_s3_uri("--data", args.data, target.local)
    common.check_s3_uri("--output", args.output, target.local)

    sagemaker_session = common.session(target)
    name = args.job_name or new_job_name()
    job = trainer(target, sagemaker_session, output=args.output,
                  hyperparameters=common.hyperparameters(args), resources=compute(args),
                  services=closed_services(args), job_name=name,
                  checkpoints=checkpoint_uri(args.output, name), tracking=tracking)
    inputs = channels(args.data, target.local, sagemaker_session.boto_session.client("s3"),
                      args.test_channel)
    wait = target.local or not args.no_wait  # local mode always runs to the end
    try:
        job.train(input_data(inputs), wait=wait, logs=wait)
    finally:
        if target.local:
            common.remove_local_containers("train", image_tag=target.image_tag)
    print(f"training job: {name}")
    if target.local:
        print(f"model: file://{gather_local_output(Path(args.output).resolve())}")
    elif wait:
        print(f"model: {model_data(sagemaker_session, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
