"""SageMaker Debugger's built-in rules, evaluated by the training job itself.

    python -m debugger.rules OUTPUT/tensorboard [--out DIR] [--params '{"overfit": {"patience": 2}}']
    python -m debugger.rules TRIAL                 (an smdebug trial: output/tensors, or a job's
                                                    debug-output copied down from S3)

The rules keep SageMaker's names and parameters (debugger/config.py), so a rule that fires here
fires under the same name on SageMaker. They read one of two records, through the same questions
(Evidence): the TensorBoard record every job writes (debugger/record.py, read with TensorBoard's
event reader), or the smdebug trial of a job that SageMaker gave a Debugger hook. Overfit and
overtraining compare the mean training loss since the previous validation pass with that pass's
mean validation loss (the training criterion on both): their patience counts validation passes.
Loss_not_decreasing compares means over windows of num_steps recorded losses, one window with
the one before, which a noisy per-batch loss needs. Each verdict counts the issues found (the
points, windows or passes past the rule's limits): those counts are the `#metrics` that
SageMaker's metric definitions read.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from debugger.config import RULES, rule_parameters
from debugger.record import ACTIVITY_EDGES, SATURATION_EDGES, has_record

ISSUES, NO_ISSUES, NO_DATA, ERROR = "IssuesFound", "NoIssuesFound", "NoData", "Error"


@dataclass
class Verdict:
    rule: str
    status: str  # IssuesFound, NoIssuesFound, NoData (nothing to judge) or Error
    step: int | None  # the (global) step where the rule first fired
    why: str
    issues: int = 0  # how many points, windows or passes broke the rule's limits

    def to_dict(self) -> dict:
        return asdict(self)


def found(rule: str, issues: int, step: int | None, why: str) -> Verdict:
    return Verdict(rule, ISSUES, step, why, issues)


@dataclass
class Histogram:
    """Bucket counts by their right edges (TensorBoard's layout): bucket i holds values above
    limits[i - 1], up to limits[i]."""
    limits: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, edges: np.ndarray) -> "Histogram":
        counts, _ = np.histogram(np.asarray(values, dtype=np.float64).reshape(-1), bins=edges)
        return cls(np.asarray(edges[1:], dtype=np.float64), counts.astype(np.float64))

    def share_below(self, threshold: float) -> float:
        """The share of values below threshold (at bucket resolution: threshold on an edge)."""
        total = self.counts.sum()
        return float(self.counts[self.limits <= threshold + 1e-9].sum() / total) if total else 0.0

    def share_above(self, threshold: float) -> float:
        lefts = np.concatenate([[-np.inf], self.limits[:-1]])
        total = self.counts.sum()
        return float(self.counts[lefts >= threshold].sum() / total) if total else 0.0


Series = list[tuple[int, float]]


class Evidence:
    """What the rules ask of a record. Steps are global training steps."""

    def train_losses(self) -> Series:
        raise NotImplementedError

    def loss_passes(self) -> list[tuple[int, float, float]]:
        """(step, mean training loss since the previous validation pass, mean validation loss)
        for each validation pass."""
        raise NotImplementedError

    def gradient_means(self) -> dict[str, Series]:
        """Mean |gradient| of each trained parameter."""
        raise NotImplementedError

    def extremes(self) -> dict[str, Series]:
        """Max |value| of every recorded tensor (NaN or infinite when one of its values is)."""
        raise NotImplementedError

    def relu_inputs(self) -> dict[str, list[tuple[int, float, float]]]:
        """(step, variance, 5th-95th percentile spread) of each ReLU's input."""
        raise NotImplementedError

    def relu_activity(self) -> dict[str, list[tuple[int, Histogram]]]:
        """Per ReLU, the histogram over its units of the share (%) of inputs each is active on."""
        raise NotImplementedError

    def saturation_inputs(self) -> dict[str, list[tuple[int, Histogram]]]:
        """Per tanh or sigmoid, the histogram of |input|; a name that starts with tanh/ or
        sigmoid/ says which it is (else the rule goes by "tanh" in the name, as SageMaker's)."""
        raise NotImplementedError

    def update_ratios(self) -> dict[str, Series]:
        raise NotImplementedError

    def learning_rates(self) -> Series:
        """The learning rate each step was given (empty when the record has none)."""
        return []

    def overflows(self) -> Series:
        """(step, loss scale) of each step that fp16 loss scaling skipped because its gradients
        overflowed at that scale (empty when the record has none)."""
        return []

    def class_counts(self, labels_regex: str, predictions_regex: str
                     ) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(step, images per class, mispredicted images per class) of training batches."""
        raise NotImplementedError


def passes_of(train: Series, valid: Series) -> list[tuple[int, float, float]]:
    """Pair each validation pass with the mean training loss recorded since the one before."""
    passes, start = [], None
    for step, value in valid:
        since = [loss for s, loss in train if (start is None or s > start) and s <= step]
        if since:
            passes.append((step, float(np.mean(since)), value))
        start = step
    return passes


class TensorBoardRecord(Evidence):
    """The record debugger/record.py writes, read with TensorBoard's EventAccumulator. reload()
    reads what was written since the last read (the rules run every epoch)."""

    def __init__(self, folder: str | Path):
        from tensorboard.backend.event_processing import event_accumulator

        logging.getLogger("tensorboard").setLevel(logging.WARNING)  # a line per read otherwise
        self.folder = Path(folder)
        self.events = event_accumulator.EventAccumulator(
            str(self.folder), size_guidance={event_accumulator.SCALARS: 0,
                                             event_accumulator.HISTOGRAMS: 0})
        self.reload()

    def reload(self) -> "TensorBoardRecord":
        self.events.Reload()
        tags = self.events.Tags()
        self.scalar_tags, self.histogram_tags = tags["scalars"], tags["histograms"]
        return self

    def scalars(self, tag: str) -> Series:
        if tag not in self.scalar_tags:
            return []
        return [(e.step, e.value) for e in self.events.Scalars(tag)]

    def by_pattern(self, pattern: str) -> dict[str, Series]:
        """{name: series} of the scalar tags matching pattern, whose one group is the name."""
        named = {}
        for tag in self.scalar_tags:
            match = re.fullmatch(pattern, tag)
            if match:
                named[match.group(1)] = self.scalars(tag)
        return dict(sorted(named.items()))

    def histograms(self, prefix: str) -> dict[str, list[tuple[int, Histogram]]]:
        named = {}
        for tag in sorted(t for t in self.histogram_tags if t.startswith(prefix)):
            named[tag[len(prefix):]] = [
                (e.step, Histogram(np.array(e.histogram_value.bucket_limit),
                                   np.array(e.histogram_value.bucket)))
                for e in self.events.Histograms(tag)]
        return named

    def train_losses(self) -> Series:
        return self.scalars("loss/train")

    def loss_passes(self):
        return passes_of(self.train_losses(), self.scalars("loss/valid_pass"))

    def gradient_means(self):
        return self.by_pattern(r"gradient/(.+)/mean_abs")

    def extremes(self):
        return {"loss/train": self.train_losses(),
                **{f"gradient/{k}": v for k, v in self.by_pattern(r"gradient/(.+)/max_abs").items()},
                **{f"weight/{k}": v for k, v in self.by_pattern(r"weight/(.+)/max_abs").items()}}

    def relu_inputs(self):
        variance = self.by_pattern(r"relu_input/(.+)/variance")
        spread = {name: dict(series)
                  for name, series in self.by_pattern(r"relu_input/(.+)/spread").items()}
        return {name: [(s, v, spread.get(name, {}).get(s, np.nan)) for s, v in series]
                for name, series in variance.items()}

    def relu_activity(self):
        return self.histograms("relu_activity/")

    def saturation_inputs(self):
        return self.histograms("saturation_input/")

    def update_ratios(self):
        return self.by_pattern(r"update_ratio/(.+)")

    def learning_rates(self):
        return self.scalars("lr")

    def overflows(self):
        return self.scalars("amp/overflow")

    def class_counts(self, labels_regex, predictions_regex):
        def per_class(histogram: Histogram) -> dict[int, float]:
            return {int(round(limit - 0.5)): count
                    for limit, count in zip(histogram.limits, histogram.counts) if count}

        labels = [(step, per_class(h)) for step, h in self.histograms("classes/labels").get("", [])]
        wrong = {step: per_class(h)
                 for step, h in self.histograms("classes/mispredicted").get("", [])}
        size = 1 + max([max(counts, default=0) for _, counts in labels], default=0)
        rows = []
        for step, counts in labels:
            seen, missed = np.zeros(size), np.zeros(size)
            for index, count in counts.items():
                seen[index] = count
            for index, count in wrong.get(step, {}).items():
                missed[index] = count
            rows.append((step, seen, missed))
        return rows


    def profile(self) -> dict:
        """The profiler's steps and system samples, as debugger/profiler.py keeps them."""
        timing = {key: dict(self.scalars(f"step/{key}")) for key in ("wait_s", "compute_s", "epoch")}
        steps = [{"step": step, "epoch": int(timing["epoch"].get(step, 0)), "wait_s": wait,
                  "compute_s": timing["compute_s"].get(step, 0.0)}
                 for step, wait in sorted(timing["wait_s"].items())]
        # Every sample writes each of its metrics once, at its step: the n-th point of every
        # system/ tag is the n-th sample.
        samples: list[dict] = []
        for tag in self.scalar_tags:
            if tag.startswith("system/"):
                for n, (step, value) in enumerate(self.scalars(tag)):
                    if n == len(samples):
                        samples.append({"step": step})
                    samples[n][tag[len("system/"):]] = value
        return {"steps": steps, "system": samples}


class NoRecord(FileNotFoundError):
    """The folder holds neither a TensorBoard record nor an smdebug trial."""


class SmdebugTrial(Evidence):
    """An smdebug trial (the hook SageMaker configures), asked the same questions."""

    def __init__(self, where: str):
        from debugger.hook import import_smdebug

        import_smdebug()
        from smdebug.core.modes import ModeKeys
        from smdebug.trials import create_trial

        self.trial = create_trial(where)
        self.train, self.eval = ModeKeys.TRAIN, ModeKeys.EVAL

    def names(self, collection: str | None = None, regex: str | None = None) -> list[str]:
        try:
            names = self.trial.tensor_names(collection=collection) if collection else \
                self.trial.tensor_names()
        except Exception:  # an unknown collection
            return []
        return sorted(n for n in names if not regex or re.fullmatch(regex, n))

    def series(self, name: str, train_only: bool = True) -> list[tuple[int, np.ndarray]]:
        """(global step, value) in step order; training steps only unless told otherwise."""
        tensor = self.trial.tensor(name)
        if not train_only:
            return [(s, np.asarray(tensor.value(s))) for s in tensor.steps()]
        return [(int(self.trial.global_step(self.train, s)),
                 np.asarray(tensor.value(s, mode=self.train))) for s in tensor.steps(mode=self.train)]

    def train_losses(self):
        losses = self.names("losses")
        return [(s, float(v.mean())) for s, v in self.series(losses[0])] if losses else []

    def loss_passes(self):
        losses = self.names("losses")
        if not losses:
            return []
        passes, train, valid, last = [], [], [], None
        tensor = self.trial.tensor(losses[0])
        for step in tensor.steps():
            mode = self.trial.mode(step)
            value = float(np.asarray(tensor.value(step)).mean())
            if mode == self.train:
                if valid and train:
                    passes.append((last, float(np.mean(train)), float(np.mean(valid))))
                    train, valid = [], []
                train.append(value)
            elif mode == self.eval:
                valid.append(value)
                last = step
        if valid and train:
            passes.append((last, float(np.mean(train)), float(np.mean(valid))))
        return passes

    def gradient_means(self):
        return {n: [(s, float(np.abs(v).mean())) for s, v in self.series(n)]
                for n in self.names("gradients")}

    def extremes(self):
        out = {}
        for name in self.names():
            out[name] = [(s, float(np.abs(v).max())) for s, v in self.series(name, False)
                         if np.issubdtype(v.dtype, np.floating) and v.size]
        return out

    def relu_inputs(self):
        return {n: [(s, float(v.var()), float(np.percentile(v, 95) - np.percentile(v, 5)))
                    for s, v in self.series(n)] for n in self.names("relu_input")}

    def relu_activity(self):
        return {n: [(s, Histogram.of(unit_activity(v), ACTIVITY_EDGES)) for s, v in self.series(n)]
                for n in self.names("relu_output")}

    def saturation_inputs(self):
        return {n: [(s, Histogram.of(np.abs(v), SATURATION_EDGES)) for s, v in self.series(n)]
                for n in self.names("saturation_inputs")}

    def update_ratios(self):
        gradients = set(self.names("gradients"))
        out = {}  # weights only, as the record: a bias starts at 0
        for name in [n for n in self.names("weights") if f"gradient/{n}" in gradients
                     and not n.endswith("bias")]:
            out[name] = [(step, float(np.linalg.norm(after - before) / (np.linalg.norm(before)
                                                                         + 1e-12)))
                         for (_, before), (step, after) in itertools.pairwise(self.series(name))]
        return out

    def class_counts(self, labels_regex, predictions_regex):
        labels, logits = self.names(regex=labels_regex), self.names(regex=predictions_regex)
        if not labels or not logits:
            return []
        predicted = dict(self.series(logits[0]))
        rows = []
        for step, y in self.series(labels[0]):
            if step not in predicted:
                continue
            y = y.reshape(-1).astype(int)
            guess = predicted[step].reshape(len(y), -1).argmax(1)
            size = int(max(y.max(), guess.max())) + 1
            rows.append((step, np.bincount(y, minlength=size).astype(float),
                         np.bincount(y[guess != y], minlength=size).astype(float)))
        return rows


def unit_activity(value: np.ndarray) -> np.ndarray:
    """Percentage of samples (and positions) where each unit (channel) is > 0."""
    if value.ndim < 2:
        return (value > 0).astype(float) * 100
    axes = tuple(i for i in range(value.ndim) if i != 1)
    return (value > 0).mean(axis=axes) * 100


def open_record(where: str | Path) -> Evidence:
    """The TensorBoard record or the smdebug trial at a folder (or a trial's s3:// prefix)."""
    text = str(where)
    if text.startswith("s3://"):
        return SmdebugTrial(text)
    path = Path(text)
    if has_record(path):
        return TensorBoardRecord(path)
    if (path / "index").is_dir() or (path / "events").is_dir():
        return SmdebugTrial(text)
    raise NoRecord(
        f"no record in {where}: expected the TensorBoard event files every training job writes "
        "(output/tensorboard), or the index/ and events/ folders of an smdebug trial "
        "(output/tensors, or a job's debug-output copied down from S3)")


# The rules: each takes the evidence and its SageMaker parameters, and says what it found.

def vanishing_gradient(e: Evidence, threshold: float) -> Verdict:
    means = e.gradient_means()
    if not means:
        return Verdict("vanishing_gradient", NO_DATA, None, "no gradients recorded")
    low = [(step, name, value) for name, series in means.items() for step, value in series
           if value < threshold]
    if low:
        step, name, value = min(low)
        return found("vanishing_gradient", len(low), step,
                     f"mean |{name}| = {value:.3g} < {threshold:g} at step {step} "
                     f"({len(low)} recorded gradients below)")
    return Verdict("vanishing_gradient", NO_ISSUES, None,
                   f"every gradient's mean |value| stayed >= {threshold:g} ({len(means)} tensors)")


def exploding_tensor(e: Evidence, only_nan: bool) -> Verdict:
    """Under fp16 loss scaling, an overflow at a scale above 1 is the scaler's normal search
    for its scale (the step is skipped, nothing moved, and the record leaves its tensors out);
    an overflow at a scale of 1 or less means the gradients exceed float16's range unscaled,
    and counts (as infinite: not with only_nan)."""
    extremes = e.extremes()
    overflows = e.overflows()
    if not any(extremes.values()) and not overflows:
        return Verdict("exploding_tensor", NO_DATA, None, "no tensors recorded")
    bad = [(step, f"{name} holds {'NaN' if only_nan else 'NaN or infinite'} values")
           for name, series in extremes.items() for step, value in series
           if (np.isnan(value) if only_nan else not np.isfinite(value))]
    if not only_nan:
        bad += [(step, f"the gradients overflowed float16 at a loss scale of {scale:g}, so "
                       "they exceed its range unscaled")
                for step, scale in overflows if scale <= 1]
    skipped = (f"; {len(overflows)} steps skipped by fp16 loss scaling while it searched for "
               "its scale" if overflows else "")
    if bad:
        step, what = min(bad)
        return found("exploding_tensor", len(bad), step,
                     f"{what} at step {step}: lower the learning rate, or clip gradients"
                     + skipped)
    kind = "NaN" if only_nan else "NaN or infinite"
    return Verdict("exploding_tensor", NO_ISSUES, None,
                   f"no {kind} values in {len(extremes)} tensors" + skipped)


def loss_not_decreasing(e: Evidence, num_steps: int, diff_percent: float) -> Verdict:
    series = e.train_losses()
    windows = [series[i:i + num_steps] for i in range(0, len(series) - num_steps + 1, num_steps)]
    if len(windows) < 2:
        return Verdict("loss_not_decreasing", NO_DATA, None,
                       f"{len(series)} recorded training losses: need {2 * num_steps} (num_steps "
                       f"{num_steps})")
    means = [float(np.mean([v for _, v in w])) for w in windows]
    stalled = [(window[-1][0], mean, before) for window, mean, before
               in zip(windows[1:], means[1:], means) if mean > before * (1 - diff_percent / 100)]
    if stalled:
        step, mean, before = stalled[0]
        return found("loss_not_decreasing", len(stalled), step,
                     f"mean training loss over the {num_steps} steps to step {step} is "
                     f"{mean:.4g}: not {diff_percent:g}% below the {num_steps} before "
                     f"({before:.4g}); {len(stalled)} of {len(windows) - 1} windows")
    return Verdict("loss_not_decreasing", NO_ISSUES, None,
                   f"the loss fell in each of {len(windows)} windows of {num_steps} steps")


def overfit(e: Evidence, start_step: int, patience: int, ratio_threshold: float) -> Verdict:
    passes = [p for p in e.loss_passes() if p[0] >= start_step]
    if not passes:
        return Verdict("overfit", NO_DATA, None, "no training and validation losses recorded")
    run, hits = 0, []
    for step, train, valid in passes:
        ratio = (valid - train) / max(abs(train), 1e-12)
        run = run + 1 if ratio > ratio_threshold else 0
        if run >= patience:
            hits.append((step, train, valid, ratio, run))
    if hits:
        step, train, valid, ratio, run = hits[0]
        return found("overfit", len(hits), step,
                     f"validation loss {valid:.4g} exceeds training loss {train:.4g} by "
                     f"{ratio:.0%} (> {ratio_threshold:.0%}) for {run} validation pass(es)")
    return Verdict("overfit", NO_ISSUES, None,
                   f"validation loss within {ratio_threshold:.0%} of training loss "
                   f"({len(passes)} validation passes)")


def overtraining(e: Evidence, patience_train: int, patience_validation: int,
                 delta: float) -> Verdict:
    passes = e.loss_passes()
    if not passes:
        return Verdict("overtraining", NO_DATA, None, "no training and validation losses recorded")
    best_train = best_valid = float("inf")
    since_train = since_valid = 0
    hits = []
    for step, train, valid in passes:
        since_train = 0 if train < best_train - delta else since_train + 1
        since_valid = 0 if valid < best_valid - delta else since_valid + 1
        best_train, best_valid = min(best_train, train), min(best_valid, valid)
        if since_valid >= patience_validation and since_train < patience_train:
            hits.append((step, since_valid, best_valid, train))
    if hits:
        step, since_valid, best_valid, train = hits[0]
        return found("overtraining", len(hits), step,
                     f"validation loss has not improved by {delta:g} for {since_valid} "
                     f"validation passes (best {best_valid:.4g}) while training loss still falls "
                     f"({train:.4g}): stop earlier (early_stopping_patience)")
    return Verdict("overtraining", NO_ISSUES, None,
                   f"validation loss kept improving within {patience_validation} passes "
                   f"({len(passes)} validation passes)")


def poor_weight_initialization(e: Evidence, threshold: float, distribution_range: float,
                               steps: int) -> Verdict:
    inputs = e.relu_inputs()
    if not inputs:
        return Verdict("poor_weight_initialization", NO_DATA, None, "no ReLU inputs recorded")
    by_step: dict[int, dict[str, tuple[float, float]]] = {}
    for name, series in inputs.items():
        for step, variance, spread in series[:steps]:
            by_step.setdefault(step, {})[name] = (variance, spread)
    hits = []
    for step in sorted(by_step):
        variances = {n: v for n, (v, _) in by_step[step].items()}
        low, high = min(variances.values()), max(variances.values())
        if high > threshold * max(low, 1e-12):
            hits.append((step, f"activation variance differs {high / max(low, 1e-12):.3g}x "
                               f"across layers ({min(variances, key=variances.get)} {low:.3g}, "
                               f"{max(variances, key=variances.get)} {high:.3g}) > {threshold:g}x"))
            continue
        collapsed = [n for n, (_, spread) in by_step[step].items() if spread < distribution_range]
        if collapsed:
            hits.append((step, f"{collapsed[0]} is collapsed: 5th-95th percentile range < "
                               f"{distribution_range:g}"))
    if hits:
        return found("poor_weight_initialization", len(hits), hits[0][0], hits[0][1])
    return Verdict("poor_weight_initialization", NO_ISSUES, None,
                   f"activation variances within {threshold:g}x over the first {steps} "
                   "recorded steps")


def dead_relu(e: Evidence, threshold_inactivity: float, threshold_layer: float) -> Verdict:
    activity = e.relu_activity()
    if not activity:
        return Verdict("dead_relu", NO_DATA, None, "no ReLU activity recorded")
    hits = [(step, name, 100 * histogram.share_below(threshold_inactivity))
            for name, series in activity.items() for step, histogram in series
            if 100 * histogram.share_below(threshold_inactivity) > threshold_layer]
    if hits:
        step, name, dead = min(hits)
        return found("dead_relu", len(hits), step,
                     f"{dead:.0f}% of {name}'s units are active on under "
                     f"{threshold_inactivity:g}% of inputs (> {threshold_layer:g}%)")
    return Verdict("dead_relu", NO_ISSUES, None,
                   f"no layer of {len(activity)} ReLUs is dead")


def saturated_activation(e: Evidence, threshold_tanh: float, threshold_sigmoid: float,
                         threshold_layer: float) -> Verdict:
    inputs = e.saturation_inputs()
    if not inputs:
        return Verdict("saturated_activation", NO_DATA, None,
                       "no tanh or sigmoid inputs recorded (the network has neither)")
    hits = []
    for name, series in inputs.items():
        kind = name.split("/")[0] if name.startswith(("tanh/", "sigmoid/")) else (
            "tanh" if "tanh" in name.lower() else "sigmoid")
        limit = threshold_tanh if kind == "tanh" else threshold_sigmoid
        for step, histogram in series:
            saturated = 100 * histogram.share_above(limit)
            if saturated > threshold_layer:
                hits.append((step, name, saturated, limit))
    if hits:
        step, name, saturated, limit = min(hits)
        return found("saturated_activation", len(hits), step,
                     f"{saturated:.0f}% of {name}'s inputs beyond +-{limit:g}")
    return Verdict("saturated_activation", NO_ISSUES, None, f"{len(inputs)} inputs unsaturated")


# A step whose learning rate is below this share of the run's peak (warm-up, a decayed tail) is
# asked by its schedule for tiny updates: weight_update_ratio does not call them too small.
SCHEDULED_SMALL_STEPS = 0.01


def weight_update_ratio(e: Evidence, large_threshold: float, small_threshold: float,
                        epsilon: float) -> Verdict:
    """SageMaker's limits, with one difference: an update is judged too small only at a step
    whose learning rate is at least SCHEDULED_SMALL_STEPS of the run's peak. At the tail of a
    cosine schedule a weight near 1 moves by less than float32 resolves, so its ratio is
    exactly 0: the schedule doing its job, not a stalled network. A run at lr 0 still fires."""
    ratios = e.update_ratios()
    compared = sum(len(series) for series in ratios.values())
    if not compared:
        return Verdict("weight_update_ratio", NO_DATA, None, "no weight updates recorded")
    rates = dict(e.learning_rates())
    floor = SCHEDULED_SMALL_STEPS * max(rates.values(), default=0.0)

    def asked_to_move(step: int) -> bool:
        return rates.get(step, floor) >= floor

    points = [(step, name, ratio) for name, series in ratios.items() for step, ratio in series]
    small = [point for point in points if point[2] < small_threshold]
    judged_small = [point for point in small if asked_to_move(point[0])]
    hits = [point for point in points if point[2] > large_threshold] + judged_small
    scheduled = len(small) - len(judged_small)
    excused = (f"; {scheduled} smaller at steps whose learning rate was under "
               f"{SCHEDULED_SMALL_STEPS:.0%} of its peak, as the schedule asked" if scheduled
               else "")
    if hits:
        step, name, ratio = min(hits)
        size = "large" if ratio > large_threshold else "small"
        return found("weight_update_ratio", len(hits), step,
                     f"{name}'s update/weight ratio {ratio:.3g} is too {size} at step {step} "
                     f"(limits {small_threshold:g}..{large_threshold:g}; {len(hits)} of "
                     f"{compared} updates{excused})")
    return Verdict("weight_update_ratio", NO_ISSUES, None,
                   f"{compared} updates within {small_threshold:g}..{large_threshold:g}{excused}")


def class_imbalance(e: Evidence, threshold_imbalance: float, threshold_misprediction: float,
                    samples: int, labels_regex: str, predictions_regex: str) -> Verdict:
    rows = e.class_counts(labels_regex, predictions_regex)
    if not rows:
        return Verdict("class_imbalance", NO_DATA, None, "no labels and predictions recorded")
    size = max(len(seen) for _, seen, _ in rows)
    grown = [(s, np.pad(seen, (0, size - len(seen))), np.pad(missed, (0, size - len(missed))))
             for s, seen, missed in rows]

    def total(chosen):
        return (sum(seen for _, seen, _ in chosen), sum(missed for _, _, missed in chosen))

    def within(chosen_rows):  # whole steps until `samples` images are counted
        chosen, count = [], 0
        for row in chosen_rows:
            if count >= samples:
                break
            chosen.append(row)
            count += row[1].sum()
        return chosen

    hits = []
    first, _ = total(within(grown))
    present = first[first > 0]
    if present.max() > threshold_imbalance * present.min():
        hits.append((grown[0][0], f"the largest class has {present.max() / present.min():.3g}x "
                                  f"the images of the smallest (> {threshold_imbalance:g}x) in "
                                  f"the first {samples} samples"))
    last_seen, last_missed = total(within(list(reversed(grown))))
    for cls in np.flatnonzero(last_seen):
        wrong = last_missed[cls] / last_seen[cls]
        if wrong > threshold_misprediction:
            hits.append((grown[-1][0], f"class {cls} is mispredicted in {wrong:.0%} of the last "
                                       f"{samples} training samples (> "
                                       f"{threshold_misprediction:.0%})"))
    if hits:
        return found("class_imbalance", len(hits), hits[0][0], hits[0][1])
    return Verdict("class_imbalance", NO_ISSUES, None,
                   f"classes balanced within {threshold_imbalance:g}x; no class mispredicted "
                   f"above {threshold_misprediction:.0%}")


RULE_FUNCTIONS = {f.__name__: f for f in (
    vanishing_gradient, exploding_tensor, loss_not_decreasing, overfit, overtraining,
    poor_weight_initialization, dead_relu, saturated_activation, weight_update_ratio,
    class_imbalance,
)}
assert set(RULE_FUNCTIONS) == set(RULES)


def evaluate(evidence: Evidence, params: dict | str | None = None,
             only: list[str] | None = None) -> list[Verdict]:
    """Every rule (or those named in only) over the evidence."""
    parameters = rule_parameters(params)
    verdicts = []
    for name, rule in RULE_FUNCTIONS.items():
        if only and name not in only:
            continue
        try:
            verdicts.append(rule(evidence, **parameters[name]))
        except Exception as e:  # one broken rule must not hide the others' verdicts
            verdicts.append(Verdict(name, ERROR, None, f"{type(e).__name__}: {e}"))
    return verdicts


def summary(verdicts: list[Verdict]) -> str:
    width = max([len(v.rule) for v in verdicts] + [4])
    lines = [f"{'rule':<{width}}  {'status':<13}  {'issues':>6}  {'step':>6}  why"]
    for v in verdicts:
        step = "" if v.step is None else str(v.step)
        lines.append(f"{v.rule:<{width}}  {v.status:<13}  {v.issues:>6}  {step:>6}  {v.why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("record", help="a job's output/tensorboard, or an smdebug trial (a "
                                       "folder or an s3:// prefix)")
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
        verdicts = evaluate(open_record(args.record), args.params, only)
    except (NoRecord, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(verdicts))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rule_report.json").write_text(
            json.dumps([v.to_dict() for v in verdicts], indent=2) + "\n")
    return 3 if args.fail_on_issues and any(v.status == ISSUES for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
