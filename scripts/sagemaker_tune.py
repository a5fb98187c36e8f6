"""Run a SageMaker hyperparameter tuning job over tune/search_space.json (SDK v3 HyperparameterTuner
around the same ModelTrainer as scripts/sagemaker_train.py).

    python -m scripts.sagemaker_tune --data s3://BUCKET/dogs --output s3://BUCKET/tuning \
        --role arn:aws:iam::ACCOUNT:role/SageMakerRole --max-jobs 20 --max-parallel-jobs 2 \
        --hp epochs=8 [--strategy Bayesian|Random|Hyperband] [--warm-start-from PARENT_JOB]

The objective is train/'s (train/metrics.py): the best validation accuracy so far, maximised, read
from the training log; its last value is the accuracy of the model the job exports. When the
tuning job ends, prints the best training job, its hyperparameters and its objective value.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass

from botocore.exceptions import ClientError

from scripts import common, sagemaker_train
from train.metrics import METRIC_DEFINITIONS, OBJECTIVE_METRIC, OBJECTIVE_TYPE
from tune import space as search_space


@dataclass(frozen=True)
class Search:
    """What the tuning job searches, and how (--space, --strategy, --max-jobs, ...)."""
    space: str
    strategy: str = "Bayesian"
    max_jobs: int = 20
    max_parallel_jobs: int = 2
    warm_start_from: str | None = None


def tuner(target: common.Launch, sagemaker_session, search: Search, *, output: str,
          hyperparameters: dict, resources: sagemaker_train.TrainingCompute, job_name: str,
          tracking: common.Tracking | None = None):
    """tracking: the MLflow server each trial records itself in, as a run of one experiment
    tagged with the tuning job's name (a tuning job's definition has no MlflowConfig: the
    trials' Environment says where)."""
    from sagemaker.core.shapes import (HyperbandStrategyConfig,
                                       HyperParameterTuningJobStrategyConfig,
                                       HyperParameterTuningJobWarmStartConfig,
                                       ParentHyperParameterTuningJob)
    from sagemaker.train.tuner import HyperparameterTuner

    ranges = search_space.sagemaker_ranges(search_space.load(search.space))
    fixed = {k: v for k, v in hyperparameters.items() if k not in ranges}
    extra = {}
    if search.strategy == "Hyperband":  # stops weak jobs early by epochs: the per-epoch metric
        epochs = int(fixed.get("epochs", 10))
        extra["strategy_config"] = HyperParameterTuningJobStrategyConfig(
            hyperband_strategy_config=HyperbandStrategyConfig(min_resource=1,
                                                              max_resource=epochs))
    if search.warm_start_from:
        extra["warm_start_config"] = HyperParameterTuningJobWarmStartConfig(
            warm_start_type="IdenticalDataAndAlgorithm",
            parent_hyper_parameter_tuning_jobs=[ParentHyperParameterTuningJob(
                hyper_parameter_tuning_job_name=search.warm_start_from)])
    # The trials share one checkpoint prefix (a tuning job has one training job definition); the
    # training container keeps each trial's checkpoint in a folder named after the trial's job.
    if tracking is not None:
        tracking = dataclasses.replace(tracking, tags=(("tuning_job", job_name),))
    trainer = sagemaker_train.trainer(
        target, sagemaker_session, output=output, hyperparameters=fixed, resources=resources,
        checkpoints=sagemaker_train.checkpoint_uri(output, job_name), tracking=tracking)
    return HyperparameterTuner(
        model_trainer=trainer,
        objective_metric_name=OBJECTIVE_METRIC,
        objective_type=OBJECTIVE_TYPE,
        # The tuner does not take these from the trainer: without them SageMaker cannot read
        # the objective from a custom image's log.
        metric_definitions=METRIC_DEFINITIONS,
        hyperparameter_ranges=ranges,
        strategy=search.strategy,
        max_jobs=search.max_jobs,
        max_parallel_jobs=search.max_parallel_jobs,
        # Hyperband does its own early stopping; the others use SageMaker's median rule.
        early_stopping_type="Off" if search.strategy == "Hyperband" else "Auto",
        base_tuning_job_name="byoc-tune",
        **extra,
    )


def report(sagemaker_session, job_name: str) -> None:
    client = sagemaker_session.sagemaker_client
    tuning = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=job_name)
    best = tuning.get("BestTrainingJob")
    if not best:
        print(f"{job_name}: {tuning['HyperParameterTuningJobStatus']}, no completed training job")
        return
    objective = best["FinalHyperParameterTuningJobObjectiveMetric"]
    print(f"best training job: {best['TrainingJobName']}")
    print(f"{objective['MetricName']}: {objective['Value']}")
    for name, value in sorted(best["TunedHyperParameters"].items()):
        print(f"    {name} = {value}")
    try:
        job = client.describe_training_job(TrainingJobName=best["TrainingJobName"])
        print(f"model: {job['ModelArtifacts']['S3ModelArtifacts']}")
    except ClientError as e:  # e.g. no sagemaker:DescribeTrainingJob permission
        print(f"model: unknown ({e.response['Error']['Message']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(parser)
    parser.add_argument("--data", required=True, help="s3:// prefix with train/ valid/ [test/]")
    parser.add_argument("--output", required=True, help="s3:// prefix for the jobs' models")
    parser.add_argument("--space", default=search_space.DEFAULT_SPACE, help="search space JSON")
    common.add_hyperparameter_arguments(parser, fixed=True)
    parser.add_argument("--strategy", choices=("Bayesian", "Random", "Hyperband"), default="Bayesian")
    parser.add_argument("--max-jobs", type=int, default=20)
    parser.add_argument("--max-parallel-jobs", type=int, default=2)
    parser.add_argument("--warm-start-from", help="a finished tuning job to learn from")
    sagemaker_train.add_compute_arguments(parser, max_run_s=4 * 3600)
    parser.add_argument("--no-wait", action="store_true", help="start the tuning job and return")
    parser.add_argument("--job-name", default=f"byoc-tune-{time.strftime('%y%m%d-%H%M%S')}",
                        help="at most 32 characters")
    sagemaker_train.add_test_channel_argument(parser)
    sagemaker_train.add_sagemaker_debugging_arguments(parser)
    common.add_mlflow_arguments(parser, run_name=False)  # each trial's run: its job's name
    args = parser.parse_args(argv)
    target = common.launch(args)
    tracking = common.tracking(args)
    if target.local:
        parser.error("SageMaker's tuner does not run in local mode: use python -m tune.local")
    if args.sagemaker_debugger or args.sagemaker_profiler:
        parser.error("--sagemaker-debugger and --sagemaker-profiler are not for tuning jobs: "
                     "their training job definition has no Debugger or Profiler fields (each "
                     "trial evaluates the rules itself)")
    common.check_s3_uri("--data", args.data)
    common.check_s3_uri("--output", args.output)

    sagemaker_session = common.session(target)
    search = Search(space=args.space, strategy=args.strategy, max_jobs=args.max_jobs,
                    max_parallel_jobs=args.max_parallel_jobs,
                    warm_start_from=args.warm_start_from)
    job = tuner(target, sagemaker_session, search, output=args.output,
                hyperparameters=common.hyperparameters(args),
                resources=sagemaker_train.compute(args), job_name=args.job_name,
                tracking=tracking)
    inputs = sagemaker_train.channels(args.data, False, sagemaker_session.boto_session.client("s3"),
                                      args.test_channel)
    job.tune(sagemaker_train.input_data(inputs), job_name=args.job_name, wait=not args.no_wait)
    print(f"tuning job: {args.job_name}")
    if not args.no_wait:
        report(sagemaker_session, args.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(common.entry_point(main))
