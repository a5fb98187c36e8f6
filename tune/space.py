"""The search space: loaded once from a JSON file, handed to SageMaker's tuner or to Optuna.

Each entry names a train/ hyperparameter (train.config.TrainConfig) and its range:
    {"type": "continuous", "min": 1e-4, "max": 0.05, "scaling": "log"}   (scaling: log or linear)
    {"type": "integer", "min": 0, "max": 2}
    {"type": "categorical", "values": [16, 32, 64]}
The objective is train/'s own: train.metrics.OBJECTIVE_METRIC, read from the log by its regex.
"""
from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path

from train.config import TrainConfig, parse_value

DEFAULT_SPACE = Path(__file__).resolve().parent / "search_space.json"
_TYPES = typing.get_type_hints(TrainConfig)


class SpaceError(ValueError):
    """The search space file is wrong; the message names the entry."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # continuous, integer, categorical
    min: float | None = None
    max: float | None = None
    log: bool = False
    values: tuple = ()


def _parameter(name: str, spec: dict) -> Parameter:
    if name not in _TYPES:
        raise SpaceError(f"{name!r} is not a training hyperparameter (see python -m train.train --help)")
    kind = spec.get("type")
    tp = _TYPES[name]
    try:
        if kind == "categorical":
            values = tuple(spec["values"])
            if len(values) < 2:
                raise SpaceError(f"{name}: a categorical range needs at least two values")
            for value in values:
                parse_value(value, tp)
            return Parameter(name, kind, values=values)
        if kind in ("continuous", "integer"):
            low, high = spec["min"], spec["max"]
            parse_value(low, tp), parse_value(high, tp)
            scaling = spec.get("scaling", "linear")
            if scaling not in ("linear", "log"):
                raise SpaceError(f"{name}: scaling must be linear or log, not {scaling!r}")
            if not low < high or (scaling == "log" and low <= 0):
                raise SpaceError(f"{name}: needs min < max (and min > 0 on a log scale)")
            if kind == "integer" and not (float(low).is_integer() and float(high).is_integer()):
                raise SpaceError(f"{name}: an integer range needs whole min and max")
            return Parameter(name, kind, low, high, scaling == "log")
    except KeyError as e:
        raise SpaceError(f"{name}: a {kind} range needs {e.args[0]!r}") from None
    except ValueError as e:
        if isinstance(e, SpaceError):
            raise
        raise SpaceError(f"{name}: {e} (the hyperparameter's type is {tp})") from None
    raise SpaceError(f"{name}: type must be continuous, integer or categorical, not {kind!r}")


def load(path: str | Path = DEFAULT_SPACE) -> list[Parameter]:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SpaceError(f"cannot read the search space {path}: {e}") from None
    return [_parameter(name, spec) for name, spec in document.items() if not name.startswith("_")]


def sagemaker_ranges(space: list[Parameter]) -> dict:
    """SageMaker HyperparameterTuner's hyperparameter_ranges (SDK v3)."""
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter

    ranges = {}
    for p in space:
        scaling = "Logarithmic" if p.log else "Linear"
        if p.type == "continuous":
            ranges[p.name] = ContinuousParameter(p.min, p.max, scaling_type=scaling)
        elif p.type == "integer":
            ranges[p.name] = IntegerParameter(int(p.min), int(p.max), scaling_type=scaling)
        else:
            ranges[p.name] = CategoricalParameter([str(v) for v in p.values])
    return ranges


def suggest(trial, space: list[Parameter]) -> dict:
    """One Optuna trial's hyperparameters."""
    chosen = {}
    for p in space:
        if p.type == "continuous":
            chosen[p.name] = trial.suggest_float(p.name, p.min, p.max, log=p.log)
        elif p.type == "integer":
            chosen[p.name] = trial.suggest_int(p.name, int(p.min), int(p.max), log=p.log)
        else:
            chosen[p.name] = trial.suggest_categorical(p.name, list(p.values))
    return chosen

