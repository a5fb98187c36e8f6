"""Tune on this machine with Optuna (TPE), over the same search space as SageMaker's tuner.

    python -m tune.local --data demo_data --trials 20 --hp epochs=6 --hp weights=none
    python -m tune.local --data demo_data --trials 20 ...     # again: resumes the same study

Each trial is a real training run (python -m train.train, the code the container runs) whose
per-epoch `#metrics` lines are read as they come: the objective (train/metrics.py: the best
validation accuracy so far, SageMaker's tuner's too) is reported to Optuna after every epoch,
and the median pruner stops trials that fall behind. A trial that fails
(a bad combination, out of memory, a NaN loss) or runs past --trial-timeout-s is recorded as
failed with its reason, and the study goes on.

With --fast, the backbone is frozen and its features are computed once (tune/features.py): each
trial trains only the head on them, in seconds.

The study lives in SQLite (--storage; several processes may share it). At the end, in --out:
best_hyperparameters.json (strings, as the training container's hyperparameters.json takes
them), trials.csv, objective_by_trial.png and parameter_importance.png. With
MLFLOW_TRACKING_URI set, the study is a run in MLflow and each trial a run nested under it
(tune/mlflow_runs.py).
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import optuna

from util.progress import Progress
from train import checkpoint
from train.config import from_hyperparameters
from train.metrics import OBJECTIVE_METRIC, parse_metrics
from train.tracking import tracking_uri
from tune import space as search_space
from tune.mlflow_runs import StudyRuns

log = logging.getLogger("tune")
ROOT = Path(__file__).resolve().parent.parent


class TrialFailed(Exception):
    """The training run failed; the message is its reason (from the failure file)."""


def train_command(data: Path, out: Path, cache: Path, hyperparameters: dict) -> list[str]:
    cmd = [sys.executable, "-m", "train.train", "--data-dir", str(data), "--output-root", str(out),
           "--cache-dir", str(cache)]
    for name, value in hyperparameters.items():
        cmd += [f"--{name}", json.dumps(value) if isinstance(value, list) else str(value)]
    return cmd


def report_epoch(trial: optuna.Trial, epoch: int, accuracy: float) -> None:
    """Give Optuna one epoch's objective; stop the trial when the pruner says so."""
    trial.report(accuracy, epoch)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned after epoch {epoch} at {accuracy:.4f}")


def run_trial(trial: optuna.Trial, cmd: list[str], out: Path, timeout_s: float,
              env: dict[str, str] | None = None) -> float:
    """Runs one training, reporting each epoch's objective; returns its last value, as SageMaker's
    tuner takes it (the best validation accuracy so far: the exported model's). env: more of the
    run's environment (its MLflow run's)."""
    objective, epoch = None, 0
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**os.environ, **(env or {})}) as process:
        expired = threading.Event()

        def expire():  # also catches a run that hangs without a word
            expired.set()
            process.kill()

        watchdog = threading.Timer(timeout_s, expire)
        watchdog.start()
        try:
            for line in process.stdout:
                values = parse_metrics(line).get(OBJECTIVE_METRIC)
                if values:
                    epoch += 1
                    objective = values[-1]
                    report_epoch(trial, epoch, objective)
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
            process.wait()
    if expired.is_set():
        raise TrialFailed(f"ran past the trial timeout of {timeout_s:.0f} s")
    if process.returncode != 0:
        failure = out / "output" / "failure"
        reason = failure.read_text().split("\n\n")[0] if failure.is_file() else "no failure file"
        raise TrialFailed(f"training exited with {process.returncode}: {reason}")
    if objective is None:
        raise TrialFailed(f"training logged no {OBJECTIVE_METRIC}")
    return objective


def fast_trial(trial: optuna.Trial, features, hyperparameters: dict) -> float:
    """The head alone on cached backbone features (tune/features.py)."""
    from tune.features import train_head

    config = from_hyperparameters({k: str(v) for k, v in hyperparameters.items()})
    try:
        return train_head(features, config, functools.partial(report_epoch, trial))
    except (FloatingPointError, RuntimeError) as e:  # NaN loss, out of memory
        raise TrialFailed(str(e)) from None


def trial_folder(tuning_out: Path, number: int) -> Path:
    return tuning_out / "trials" / f"trial-{number:04d}"


def trial_run(tuning_out: Path, number: int) -> str | None:
    """The MLflow run a trial's training recorded itself in (kept beside its checkpoint)."""
    folder = trial_folder(tuning_out, number) / "checkpoints"
    return checkpoint.JobCheckpoints(folder, checkpoint.LOCAL_JOB).tracking_run()


def objective(args, space, fixed: dict, features=None, runs: StudyRuns | None = None):
    def run(trial: optuna.Trial) -> float:
        chosen = search_space.suggest(trial, space)
        hyperparameters = {**fixed, **chosen}
        try:
            if features is not None:
                return fast_trial(trial, features, hyperparameters)
            out = trial_folder(args.out, trial.number)
            cmd = train_command(args.data, out, args.out / "cache", hyperparameters)
            env = runs.trial_environment(trial.study, trial.number) if runs else {}
            return run_trial(trial, cmd, out, args.trial_timeout_s, env)
        except TrialFailed as e:
            trial.set_user_attr("failure", str(e))
            log.warning("trial %d failed: %s", trial.number, e)
            raise
    return run


def best_hyperparameters(study: optuna.Study, fixed: dict) -> dict:
    """The best trial's full configuration, as strings (SageMaker's hyperparameters.json)."""
    values = {**fixed, **study.best_trial.params}
    from_hyperparameters({k: str(v) for k, v in values.items()})  # it must be valid for train/
    return {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in values.items()}


def write_report(study: optuna.Study, out: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for t in trials for name in t.params})
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "state", OBJECTIVE_METRIC, "seconds", *names, "failure"])
        for t in trials:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
            writer.writerow([t.number, t.state.name, "" if t.value is None else t.value, seconds,
                             *[t.params.get(n, "") for n in names], t.user_attrs.get("failure", "")])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.scatter([t.number for t in done], [t.value for t in done], label="completed trial")
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
    axis.scatter([t.number for t in pruned], [max(t.intermediate_values.values()) for t in pruned],
                 marker="x", label="pruned (best epoch)")
    best, running = [], float("-inf")
    for t in sorted(done, key=lambda t: t.number):
        running = max(running, t.value)
        best.append((t.number, running))
    if best:
        axis.step(*zip(*best), where="post", label="best so far")
    axis.set(xlabel="trial", ylabel=OBJECTIVE_METRIC, title="objective by trial")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "objective_by_trial.png", dpi=100)
    plt.close(figure)

    if len(done) >= 2:
        importance = optuna.importance.get_param_importances(study)
        figure, axis = plt.subplots(figsize=(7, 4))
        axis.barh(list(importance)[::-1], list(importance.values())[::-1])
        axis.set(xlabel="importance (Optuna's default evaluator, PED-ANOVA)", title="parameter importance")
        figure.tight_layout()
        figure.savefig(out / "parameter_importance.png", dpi=100)
        plt.close(figure)


def print_table(study: optuna.Study) -> None:
    print(f"{'trial':>5}  {'state':8}  {OBJECTIVE_METRIC:>14}  parameters")
    for t in study.get_trials(deepcopy=False):
        value = "" if t.value is None else f"{t.value:.4f}"
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(t.params.items()))
        note = t.user_attrs.get("failure", "")
        print(f"{t.number:>5}  {t.state.name:8}  {value:>14}  {params}" + (f"  [{note}]" if note else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="folder with train/ valid/")
    parser.add_argument("--trials", type=int, default=20, help="trials to run in this call")
    parser.add_argument("--space", default=search_space.DEFAULT_SPACE)
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                        help="a fixed hyperparameter (names in the search space are tuned)")
    parser.add_argument("--out", type=Path, default=ROOT / "local_run" / "tuning")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite in --out)")
    parser.add_argument("--study-name", default="byoc")
    parser.add_argument("--trial-timeout-s", type=float, default=3600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true",
                        help="freeze the backbone (finetune_blocks=0) and train only the head on "
                             "its cached features: seconds per trial")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    space = search_space.load(args.space)
    fixed = dict(item.split("=", 1) for item in args.hp)
    features = None
    if args.fast:
        from tune.features import FEATURE_FIELDS, extract

        changing = sorted({p.name for p in space} & set(FEATURE_FIELDS))
        if changing:
            parser.error(f"--fast needs a fixed backbone and input: {', '.join(changing)} "
                         "cannot be tuned with it")
        space = [p for p in space if p.name != "finetune_blocks"]
        fixed["finetune_blocks"] = "0"
    tuned = {p.name for p in space}
    fixed = {k: v for k, v in fixed.items() if k not in tuned}
    base = from_hyperparameters(fixed)  # a bad fixed value fails now, not in every trial
    args.out.mkdir(parents=True, exist_ok=True)
    if args.fast:
        features = extract(base, args.data, args.out / "cache")
    study = optuna.create_study(
        study_name=args.study_name, storage=args.storage or f"sqlite:///{args.out / 'study.db'}",
        load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    runs = StudyRuns(tracking_uri()).open(study)

    def trial_ended(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        runs.trial_ended(study, trial, None if args.fast else trial_run(args.out, trial.number))
        progress.update()

    with Progress("local tuning", args.trials, "trials") as progress:
        study.optimize(objective(args, space, fixed, features, runs), n_trials=args.trials,
                       catch=(TrialFailed,), callbacks=[trial_ended])
    runs.close()

    print_table(study)
    write_report(study, args.out)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        print("no trial completed: see the failures above", file=sys.stderr)
        return 1
    best = best_hyperparameters(study, fixed)
    (args.out / "best_hyperparameters.json").write_text(json.dumps(best, indent=2) + "\n")
    print(f"best {OBJECTIVE_METRIC} {study.best_value:.4f} (trial {study.best_trial.number}); "
          f"hyperparameters in {args.out / 'best_hyperparameters.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
