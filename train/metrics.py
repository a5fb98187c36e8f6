"""The training log's metric lines and the regexes that read them: the one place for both.

SageMaker's metric definitions, the hyperparameter tuner's objective and the local scripts all
import METRIC_DEFINITIONS from here. A metric line looks like

    #metrics epoch=3 train_loss=0.5123 train_acc=0.8312 valid_loss=0.6012 valid_acc=0.8100 valid_best_acc=0.8250 ...
    #metrics test_loss=0.4410 test_top1=0.9200 test_top5=0.9900
    #metrics issues_vanishing_gradient=0 issues_overfit=2 ...            (each rule's issues)

Every value is key=number with no spaces; each key appears on one kind of line only, and no key
ends another (a regex for valid_acc= must not read valid_best_acc=).
"""
from __future__ import annotations

import math
import re

from debugger.config import PROFILER_RULES, RULES

PREFIX = "#metrics"
_NUMBER = r"([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf))"

# SageMaker metric name -> key in the log line.
METRICS = {
    "train:loss": "train_loss",
    "train:accuracy": "train_acc",
    "valid:loss": "valid_loss",
    "valid:accuracy": "valid_acc",
    "valid:best_accuracy": "valid_best_acc",
    "test:loss": "test_loss",
    "test:top1": "test_top1",
    "test:top5": "test_top5",
    "epoch:time_seconds": "epoch_time",
    "train:images_per_second": "images_per_sec",
}
# Each rule's count of issues found so far, logged every epoch: CloudWatch and the tuner see them.
METRICS.update({f"rule:{rule}": f"issues_{rule}" for rule in {**RULES, **PROFILER_RULES}})
METRIC_DEFINITIONS = [
    {"Name": name, "Regex": rf"{key}={_NUMBER}"} for name, key in METRICS.items()
]
# The tuners' objective: the best validation accuracy so far, logged every epoch. Its last value is
# the exported model's accuracy (the artifact holds the best epoch), and the last value is what
# SageMaker's tuner ranks a training job by; its per-epoch values feed early stopping.
OBJECTIVE_METRIC = "valid:best_accuracy"
OBJECTIVE_TYPE = "Maximize"


def format_metrics(**values: float | int) -> str:
    """'#metrics k=v k=v' with stable number formatting."""
    parts = []
    for key, value in values.items():
        if isinstance(value, int):
            parts.append(f"{key}={value}")
        elif math.isfinite(value):
            parts.append(f"{key}={value:.6g}" if abs(value) >= 1e4 else f"{key}={value:.4f}")
        else:
            parts.append(f"{key}={'nan' if math.isnan(value) else 'inf'}")
    return " ".join([PREFIX, *parts])


def parse_metrics(log_text: str) -> dict[str, list[float]]:
    """Every value of every SageMaker metric found in a log, in order (as SageMaker reads it)."""
    return {
        d["Name"]: [float(v) for v in re.findall(d["Regex"], log_text)]
        for d in METRIC_DEFINITIONS
    }
