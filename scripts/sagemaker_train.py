"""Run a SageMaker training job on the custom training image (SDK v2 Estimator).

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
import sys
from pathlib import Path

from debugger import config as debug_config
from scripts import common
from train.config import ConfigError, from_hyperparameters
from train.metrics import METRIC_DEFINITIONS
from util.s3 import s3_folder, split_s3_uri

CHANNELS = ("train", "valid", "test")
REQUIRED = ("train", "valid")


def channels(data: str, local: bool, s3=None, test: str = "auto") -> dict[str, str]:
    """The job's channels: each split the folder or S3 prefix holds; test "auto" (when it is
    there), "always" or "never"."""
    if data.startswith("s3://"):
        bucket, key = split_s3_uri(data)
        folder = s3_folder(key)
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=folder, Delimiter="/")
        found = {p["Prefix"][len(folder):].rstrip("/") for p in listed.get("CommonPrefixes", [])}
        base = data.rstrip("/")
        present = {name: f"{base}/{name}" for name in CHANNELS if name in found}
    else:
        present = {name: common.uri(Path(data) / name, local) for name in CHANNELS
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


def checked_hyperparameters(hyperparameters: dict):
    """train/'s typed config of what the job will be given (as SDK v2 sends it: str() of each),
    so that a bad name or value fails now, not after the instances started."""
    try:
        return from_hyperparameters({k: str(v) for k, v in hyperparameters.items()})
    except ConfigError as e:
        raise SystemExit(str(e)) from None


def job_name(args: argparse.Namespace) -> str:
    from sagemaker.utils import name_from_base

    return args.job_name or name_from_base("byoc-train")


def checkpoint_uri(output: str, name: str) -> str:
    """A job's own checkpoint prefix; the trailing / keeps job-1 from matching job-10."""
    return f"{output.rstrip('/')}/checkpoints/{name}/"


TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"  # TensorBoardOutputConfig's default


def sagemaker_debugger_settings(output: str, rule_overrides: dict | None = None) -> dict:
    """SageMaker Debugger (closed to new accounts since 2026-07-30): the hook's collections and
    the ten built-in rules with debugger/config.py's parameters (and the job's rule_parameters),
    each rule run by SageMaker in a container of its own."""
    from sagemaker.debugger import CollectionConfig, DebuggerHookConfig, Rule, rule_configs

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
    from sagemaker.debugger import ProfilerConfig, ProfilerRule, rule_configs

    params = debug_config.rule_parameters(rule_overrides)
    report = {f"{sagemaker_name}_{key}": value
              for ours, sagemaker_name in debug_config.SAGEMAKER_PROFILER_RULES.items()
              for key, value in params[ours].items()}
    profiler = ProfilerConfig(s3_output_path=f"{output.rstrip('/')}/profiler-output",
                              system_monitor_interval_millis=debug_config.SYSTEM_MONITOR_INTERVAL_MS)
    return {"profiler_config": profiler,
            "rules": [ProfilerRule.sagemaker(rule_configs.ProfilerReport(**report))]}


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


def sdk_estimator(**kwargs):
    """SDK v2's Estimator, less the ProfilerConfig {"DisableProfiler": true} that it sends when
    profiling is off: a job without the Profiler carries no Profiler field at all."""
    from sagemaker.estimator import Estimator

    class WithoutProfilerFields(Estimator):
        def _prepare_profiler_for_training(self):
            super()._prepare_profiler_for_training()
            if self.disable_profiler:
                self.profiler_config, self.profiler_rule_configs = None, None

    return WithoutProfilerFields(**kwargs)


def estimator(args: argparse.Namespace, sagemaker_session, hyperparameters: dict,
              checkpoints: str | None = None):
    """checkpoints: the checkpoint S3 prefix of spot jobs. A hyperparameter may be a pipeline
    parameter: its default value is what is checked."""
    from sagemaker.debugger import TensorBoardOutputConfig

    local = args.local
    rule_overrides = checked_hyperparameters(
        {k: getattr(v, "default_value", v) for k, v in hyperparameters.items()}).rule_parameters
    # The training container evaluates the rules and writes the TensorBoard record itself, in
    # every job; SageMaker's Debugger and Profiler only when asked (not in local mode, which
    # runs neither).
    debugging = {"debugger_hook_config": False, "disable_profiler": True}
    if not local:
        debugging["tensorboard_output_config"] = TensorBoardOutputConfig(
            f"{args.output.rstrip('/')}/tensorboard", TENSORBOARD_LOCAL_PATH)
        rules = []
        if args.sagemaker_debugger:
            settings = sagemaker_debugger_settings(args.output, rule_overrides)
            debugging["debugger_hook_config"] = settings["debugger_hook_config"]
            rules += settings["rules"]
        if args.sagemaker_profiler:
            settings = sagemaker_profiler_settings(args.output, rule_overrides)
            debugging.update(disable_profiler=False, profiler_config=settings["profiler_config"])
            rules += settings["rules"]
        if rules:
            debugging["rules"] = rules
    spot = {}
    if args.spot and not local:  # spot capacity can be taken back: resume from checkpoints
        spot = {"use_spot_instances": True, "max_wait": args.max_run_s * 2,
                "checkpoint_s3_uri": checkpoints}
    return sdk_estimator(
        image_uri=common.image_uri("train", args, sagemaker_session),
        role=common.role(args),
        instance_count=args.instance_count,
        instance_type=("local_gpu" if args.gpu else "local") if local else args.instance_type,
        hyperparameters=hyperparameters,
        metric_definitions=METRIC_DEFINITIONS,
        output_path=common.uri(args.output, local),
        base_job_name="byoc-train",
        max_run=args.max_run_s,
        sagemaker_session=sagemaker_session,
        **debugging,
        **spot,
    )


def add_test_channel_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test-channel", choices=("auto", "always", "never"), default="auto",
                        help="declare a test channel: when the data has test/ (auto), or always "
                             "(failing without it), or never")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    parser.add_argument("--data", required=True, help="folder or s3:// prefix with train/ valid/ [test/]")
    parser.add_argument("--output", required=True, help="s3:// prefix (or a folder with --local)")
    parser.add_argument("--hyperparameters", help="a JSON file of hyperparameters")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--instance-type", default="ml.g4dn.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="with --local: use this machine's GPUs")
    parser.add_argument("--spot", action="store_true", help="managed spot training (AWS only)")
    parser.add_argument("--max-run-s", type=int, default=24 * 3600)
    parser.add_argument("--no-wait", action="store_true", help="start the job and return")
    parser.add_argument("--job-name", help="default: byoc-train-<timestamp>")
    add_test_channel_argument(parser)
    add_sagemaker_debugging_arguments(parser)
    args = parser.parse_args(argv)

    sagemaker_session = common.session(args)
    hyperparameters = common.load_hyperparameters(args.hyperparameters, args.hp)
    name = job_name(args)
    job = estimator(args, sagemaker_session, hyperparameters, checkpoint_uri(args.output, name))
    inputs = channels(args.data, args.local, sagemaker_session.boto_session.client("s3"),
                      args.test_channel)
    wait = args.local or not args.no_wait  # local mode always runs to the end
    try:
        job.fit(inputs, job_name=name, wait=wait, logs="All" if wait else "None")
    finally:
        if args.local:
            common.remove_local_containers("train", image_tag=args.image_tag)
    print(f"training job: {job.latest_training_job.name}")
    if wait:
        print(f"model: {job.model_data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
