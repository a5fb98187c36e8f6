"""SageMaker Debugger's built-in rules, evaluated over a saved smdebug trial on this machine.

    python -m debugger.rules OUTPUT/tensors [--out DIR] [--params '{"overfit": {"patience": 2}}']
    python -m debugger.rules s3://bucket/job/debug-output        (smdebug reads S3 directly)

AWS runs the built-in rules in its own containers; these re-implement them by SageMaker's names and
parameters (debugger/config.py) so that a local run, or a trial copied down from S3, gets the same
verdicts. Overfit and overtraining compare the mean training loss since the previous validation
pass with that pass's mean validation loss: their patience counts validation passes.
Loss_not_decreasing compares means over windows of num_steps saved losses, one window with the
one before, which a noisy per-batch loss needs.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from debugger.config import RULES, rule_parameters

ISSUES, NO_ISSUES, NO_DATA, ERROR = "IssuesFound", "NoIssuesFound", "NoData", "Error"


@dataclass
class Verdict:
    rule: str
    status: str  # IssuesFound, NoIssuesFound, NoData (nothing to judge) or Error
    step: int | None  # the (global) step where the rule fired
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


class NoTrial(FileNotFoundError):
    """The folder holds no smdebug trial."""


def open_trial(where: str):
    """smdebug's trial at a folder (or s3:// prefix) the hook wrote."""
    if not where.startswith("s3://"):
        path = Path(where)
        if not (path / "index").is_dir() and not (path / "events").is_dir():
            raise NoTrial(
                f"no smdebug trial in {where}: expected the index/ and events/ folders that the "
                "debugger hook writes (output/tensors after a run with debugger=on, or the "
                "job's debug-output copied down from S3)"
            )
    from debugger.hook import import_smdebug

    import_smdebug()
    from smdebug.trials import create_trial

    return create_trial(where)


class Trial:
    """What the rules read: tensor names by collection or pattern, and values by mode."""

    def __init__(self, trial):
        self.trial = trial
        from smdebug.core.modes import ModeKeys

        self.modes = {"train": ModeKeys.TRAIN, "eval": ModeKeys.EVAL}

    def names(self, collection: str | None = None, regex: str | None = None) -> list[str]:
        try:
            names = self.trial.tensor_names(collection=collection) if collection else \
                self.trial.tensor_names()
        except Exception:  # an unknown collection
            return []
        if regex:
            names = [n for n in names if re.fullmatch(regex, n)]
        return sorted(names)

    def series(self, name: str, mode: str | None = None) -> list[tuple[int, np.ndarray]]:
        """(step, value) in step order: mode steps for a mode, global steps otherwise."""
        tensor = self.trial.tensor(name)
        if mode is None:
            return [(s, np.asarray(tensor.value(s))) for s in tensor.steps()]
        m = self.modes[mode]
        return [(s, np.asarray(tensor.value(s, mode=m))) for s in tensor.steps(mode=m)]

    def global_step(self, mode: str, step: int) -> int:
        return int(self.trial.global_step(self.modes[mode], step))

    def loss_passes(self) -> list[tuple[int, float, float]]:
        """(global step, mean train loss since the previous validation pass, mean valid loss)
        for each validation pass."""
        losses = self.names("losses")
        if not losses:
            return []
        from smdebug.core.modes import ModeKeys

        passes, train, valid, last = [], [], [], None
        tensor = self.trial.tensor(losses[0])
        for step in tensor.steps():
            mode = self.trial.mode(step)
            value = float(np.asarray(tensor.value(step)).mean())
            if mode == ModeKeys.TRAIN:
                if valid and train:
                    passes.append((last, float(np.mean(train)), float(np.mean(valid))))
                    train, valid = [], []
                train.append(value)
            elif mode == ModeKeys.EVAL:
                valid.append(value)
                last = step
        if valid and train:
            passes.append((last, float(np.mean(train)), float(np.mean(valid))))
        return passes


def vanishing_gradient(t: Trial, threshold: float) -> Verdict:
    names = t.names("gradients")
    if not names:
        return Verdict("vanishing_gradient", NO_DATA, None, "no gradients saved")
    worst = None
    for name in names:
        for step, value in t.series(name, "train"):
            mean = float(np.abs(value).mean())
            if mean < threshold and (worst is None or step < worst[0]):
                worst = (step, name, mean)
                break
    if worst:
        step, name, mean = worst
        return Verdict("vanishing_gradient", ISSUES, t.global_step("train", step),
                       f"mean |{name}| = {mean:.3g} < {threshold:g} at train step {step}")
    return Verdict("vanishing_gradient", NO_ISSUES, None,
                   f"every gradient's mean |value| stayed >= {threshold:g} ({len(names)} tensors)")


def exploding_tensor(t: Trial, only_nan: bool) -> Verdict:
    names = t.names()
    if not names:
        return Verdict("exploding_tensor", NO_DATA, None, "no tensors saved")
    first = None
    for name in names:
        for step, value in t.series(name):
            if not np.issubdtype(value.dtype, np.floating):
                continue
            bad = np.isnan(value).any() if only_nan else not np.isfinite(value).all()
            if bad and (first is None or step < first[0]):
                first = (step, name)
                break
    kind = "NaN" if only_nan else "NaN or infinite"
    if first:
        return Verdict("exploding_tensor", ISSUES, first[0],
                       f"{first[1]} holds {kind} values at step {first[0]}: lower the learning "
                       "rate, or clip gradients")
    return Verdict("exploding_tensor", NO_ISSUES, None, f"no {kind} values in {len(names)} tensors")


def loss_not_decreasing(t: Trial, num_steps: int, diff_percent: float) -> Verdict:
    losses = t.names("losses")
    series = t.series(losses[0], "train") if losses else []
    windows = [series[i:i + num_steps] for i in range(0, len(series) - num_steps + 1, num_steps)]
    if len(windows) < 2:
        return Verdict("loss_not_decreasing", NO_DATA, None,
                       f"{len(series)} saved training losses: need {2 * num_steps} (num_steps "
                       f"{num_steps}); save losses more often")
    previous = float(np.mean([float(v.mean()) for _, v in windows[0]]))
    for window in windows[1:]:
        mean = float(np.mean([float(v.mean()) for _, v in window]))
        if mean > previous * (1 - diff_percent / 100):
            step = window[-1][0]
            return Verdict("loss_not_decreasing", ISSUES, t.global_step("train", step),
                           f"mean training loss over the {num_steps} saved steps to train step "
                           f"{step} is {mean:.4g}: not {diff_percent:g}% below the {num_steps} "
                           f"before ({previous:.4g})")
        previous = mean
    return Verdict("loss_not_decreasing", NO_ISSUES, None,
                   f"the loss fell in each of {len(windows)} windows of {num_steps} saved steps")


def overfit(t: Trial, start_step: int, patience: int, ratio_threshold: float) -> Verdict:
    passes = [p for p in t.loss_passes() if p[0] >= start_step]
    if not passes:
        return Verdict("overfit", NO_DATA, None, "no training and validation losses saved")
    run = 0
    for step, train, valid in passes:
        ratio = (valid - train) / max(abs(train), 1e-12)
        run = run + 1 if ratio > ratio_threshold else 0
        if run >= patience:
            return Verdict("overfit", ISSUES, step,
                           f"validation loss {valid:.4g} exceeds training loss {train:.4g} by "
                           f"{ratio:.0%} (> {ratio_threshold:.0%}) for {run} validation pass(es)")
    return Verdict("overfit", NO_ISSUES, None,
                   f"validation loss within {ratio_threshold:.0%} of training loss "
                   f"({len(passes)} validation passes)")


def overtraining(t: Trial, patience_train: int, patience_validation: int, delta: float) -> Verdict:
    passes = t.loss_passes()
    if not passes:
        return Verdict("overtraining", NO_DATA, None, "no training and validation losses saved")
    best_train = best_valid = float("inf")
    since_train = since_valid = 0
    for step, train, valid in passes:
        since_train = 0 if train < best_train - delta else since_train + 1
        since_valid = 0 if valid < best_valid - delta else since_valid + 1
        best_train, best_valid = min(best_train, train), min(best_valid, valid)
        if since_valid >= patience_validation and since_train < patience_train:
            return Verdict("overtraining", ISSUES, step,
                           f"validation loss has not improved by {delta:g} for {since_valid} "
                           f"validation passes (best {best_valid:.4g}) while training loss still "
                           f"falls ({train:.4g}): stop earlier (early_stopping_patience)")
    return Verdict("overtraining", NO_ISSUES, None,
                   f"validation loss kept improving within {patience_validation} passes "
                   f"({len(passes)} validation passes)")


def poor_weight_initialization(t: Trial, threshold: float, distribution_range: float,
                               steps: int) -> Verdict:
    names = t.names("relu_input")
    if not names:
        return Verdict("poor_weight_initialization", NO_DATA, None, "no relu_input saved")
    by_step: dict[int, dict[str, np.ndarray]] = {}
    for name in names:
        for step, value in t.series(name, "train")[:steps]:
            by_step.setdefault(step, {})[name] = value
    for step in sorted(by_step):
        variances = {n: float(v.var()) for n, v in by_step[step].items()}
        low, high = min(variances.values()), max(variances.values())
        if high > threshold * max(low, 1e-12):
            lo_name = min(variances, key=variances.get)
            hi_name = max(variances, key=variances.get)
            return Verdict("poor_weight_initialization", ISSUES, t.global_step("train", step),
                           f"activation variance differs {high / max(low, 1e-12):.3g}x across "
                           f"layers ({lo_name} {low:.3g}, {hi_name} {high:.3g}) > {threshold:g}x")
        for name, value in by_step[step].items():
            spread = float(np.percentile(value, 95) - np.percentile(value, 5))
            if spread < distribution_range:
                return Verdict("poor_weight_initialization", ISSUES, t.global_step("train", step),
                               f"{name} is collapsed: 5th-95th percentile range {spread:.3g} < "
                               f"{distribution_range:g}")
    return Verdict("poor_weight_initialization", NO_ISSUES, None,
                   f"activation variances within {threshold:g}x over the first {steps} saved steps")


def _unit_activity(value: np.ndarray) -> np.ndarray:
    """Percentage of samples (and positions) where each unit (channel) is > 0."""
    if value.ndim < 2:
        return (value > 0).astype(float) * 100
    axes = tuple(i for i in range(value.ndim) if i != 1)
    return (value > 0).mean(axis=axes) * 100


def dead_relu(t: Trial, threshold_inactivity: float, threshold_layer: float) -> Verdict:
    names = t.names("relu_output")
    if not names:
        return Verdict("dead_relu", NO_DATA, None, "no relu_output saved")
    for name in names:
        for step, value in t.series(name, "train"):
            dead = float((_unit_activity(value) < threshold_inactivity).mean() * 100)
            if dead > threshold_layer:
                return Verdict("dead_relu", ISSUES, t.global_step("train", step),
                               f"{dead:.0f}% of {name}'s units are active in under "
                               f"{threshold_inactivity:g}% of inputs (> {threshold_layer:g}%)")
    return Verdict("dead_relu", NO_ISSUES, None, f"no layer of {len(names)} ReLU outputs is dead")


def saturated_activation(t: Trial, threshold_tanh: float, threshold_sigmoid: float,
                         threshold_layer: float) -> Verdict:
    names = t.names("saturation_inputs")
    if not names:
        return Verdict("saturated_activation", NO_DATA, None,
                       "no tanh_input or sigmoid_input saved (the network has neither)")
    for name in names:
        limit = threshold_tanh if "tanh" in name else threshold_sigmoid
        for step, value in t.series(name, "train"):
            saturated = float((np.abs(value) > limit).mean() * 100)
            if saturated > threshold_layer:
                return Verdict("saturated_activation", ISSUES, t.global_step("train", step),
                               f"{saturated:.0f}% of {name} beyond +-{limit:g}")
    return Verdict("saturated_activation", NO_ISSUES, None, f"{len(names)} inputs unsaturated")


def weight_update_ratio(t: Trial, large_threshold: float, small_threshold: float,
                        epsilon: float) -> Verdict:
    gradients = set(t.names("gradients"))
    trained = [n for n in t.names("weights") if f"gradient/{n}" in gradients]
    if not trained:
        return Verdict("weight_update_ratio", NO_DATA, None, "no trained weights saved twice")
    compared = 0
    for name in trained:
        series = t.series(name, "train")
        for (_, before), (step, after) in itertools.pairwise(series):
            ratio = float(np.linalg.norm(after - before) / (np.linalg.norm(before) + epsilon))
            compared += 1
            if ratio > large_threshold or ratio < small_threshold:
                size = "large" if ratio > large_threshold else "small"
                return Verdict("weight_update_ratio", ISSUES, t.global_step("train", step),
                               f"{name}'s update/weight ratio {ratio:.3g} is too {size} at train "
                               f"step {step} (limits {small_threshold:g}..{large_threshold:g})")
    if not compared:
        return Verdict("weight_update_ratio", NO_DATA, None, "weights were saved only once")
    return Verdict("weight_update_ratio", NO_ISSUES, None,
                   f"{compared} updates within {small_threshold:g}..{large_threshold:g}")


def class_imbalance(t: Trial, threshold_imbalance: float, threshold_misprediction: float,
                    samples: int, labels_regex: str, predictions_regex: str) -> Verdict:
    labels_names, logits_names = t.names(regex=labels_regex), t.names(regex=predictions_regex)
    if not labels_names or not logits_names:
        return Verdict("class_imbalance", NO_DATA, None,
                       f"no tensors match {labels_regex} and {predictions_regex}")
    labels = t.series(labels_names[0], "train")
    logits = dict(t.series(logits_names[0], "train"))
    pairs = [(y.reshape(-1), logits[s].reshape(len(y.reshape(-1)), -1).argmax(1), s)
             for s, y in labels if s in logits]
    if not pairs:
        return Verdict("class_imbalance", NO_DATA, None, "labels and predictions saved apart")
    y_all = np.concatenate([p[0] for p in pairs]).astype(int)
    counts = np.bincount(y_all[:samples])
    present = counts[counts > 0]
    if present.max() > threshold_imbalance * present.min():
        return Verdict("class_imbalance", ISSUES, t.global_step("train", pairs[0][2]),
                       f"the largest class has {present.max() / present.min():.3g}x the images of "
                       f"the smallest (> {threshold_imbalance:g}x) in the first {samples} samples")
    last_y = np.concatenate([p[0] for p in pairs])[-samples:].astype(int)
    last_p = np.concatenate([p[1] for p in pairs])[-samples:]
    for cls in np.unique(last_y):
        wrong = float((last_p[last_y == cls] != cls).mean())
        if wrong > threshold_misprediction:
            return Verdict("class_imbalance", ISSUES, t.global_step("train", pairs[-1][2]),
                           f"class {cls} is mispredicted in {wrong:.0%} of the last {samples} "
                           f"training samples (> {threshold_misprediction:.0%})")
    return Verdict("class_imbalance", NO_ISSUES, None,
                   f"classes balanced within {threshold_imbalance:g}x; no class mispredicted "
                   f"above {threshold_misprediction:.0%}")


RULE_FUNCTIONS = {f.__name__: f for f in (
    vanishing_gradient, exploding_tensor, loss_not_decreasing, overfit, overtraining,
    poor_weight_initialization, dead_relu, saturated_activation, weight_update_ratio,
    class_imbalance,
)}
assert set(RULE_FUNCTIONS) == set(RULES)


def evaluate(where: str | Path, params: dict | str | None = None,
             only: list[str] | None = None) -> list[Verdict]:
    """Every rule (or those named in only) over the trial at where."""
    parameters = rule_parameters(params)
    trial = Trial(open_trial(str(where)))
    verdicts = []
    for name, rule in RULE_FUNCTIONS.items():
        if only and name not in only:
            continue
        try:
            verdicts.append(rule(trial, **parameters[name]))
        except Exception as e:  # one broken rule must not hide the others' verdicts
            verdicts.append(Verdict(name, ERROR, None, f"{type(e).__name__}: {e}"))
    return verdicts


def summary(verdicts: list[Verdict]) -> str:
    width = max([len(v.rule) for v in verdicts] + [4])
    lines = [f"{'rule':<{width}}  {'status':<13}  {'step':>6}  why"]
    for v in verdicts:
        step = "" if v.step is None else str(v.step)
        lines.append(f"{v.rule:<{width}}  {v.status:<13}  {step:>6}  {v.why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trial", help="the hook's output folder (or an s3:// prefix)")
    parser.add_argument("--out", type=Path, help="write rule_report.json here")
    parser.add_argument("--params", default="", help='JSON: {"rule": {"parameter": value}}')
    parser.add_argument("--rules", default="", help="comma-separated rule names (default: all)")
    parser.add_argument("--fail-on-issues", action="store_true",
                        help="exit with 3 when a rule finds issues")
    args = parser.parse_args(argv)
    only = [r for r in args.rules.split(",") if r]
    unknown = set(only) - set(RULE_FUNCTIONS)
    if unknown:
        parser.error(f"unknown rules {sorted(unknown)}; rules: {', '.join(RULE_FUNCTIONS)}")
    try:
        verdicts = evaluate(args.trial, args.params, only)
    except (NoTrial, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(verdicts))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rule_report.json").write_text(
            json.dumps([v.to_dict() for v in verdicts], indent=2) + "\n")
    found = any(v.status == ISSUES for v in verdicts)
    return 3 if found and args.fail_on_issues else 0


if __name__ == "__main__":
    sys.exit(main())
