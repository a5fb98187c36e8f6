"""Hyperparameters: one typed, validated config, parsed from SageMaker's all-string values.

SageMaker writes every hyperparameter as a string into /opt/ml/input/config/hyperparameters.json:
SDK v2 sends str(value) ("True", "0.001", "[750, 500]", "{'overfit': {'patience': 3}}"), SDK v3
sends strings as they are and JSON for the rest ("true", "[750, 500]"), v2's framework
estimators JSON for everything ("\"resnet50\""), the console what was typed. parse_value()
accepts them all. Names may use '-' or '_'.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import typing
from dataclasses import dataclass, field

from debugger.config import HOOK_MODES, rule_actions, rule_parameters

OPTIMIZERS = ("adamw", "sgd")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


class ConfigError(ValueError):
    """A hyperparameter is unknown or has a bad value. The message says how to fix it."""


@dataclass
class TrainConfig:
    # Model
    architecture: str = "resnet50"  # any torchvision classification model name
    weights: str = "DEFAULT"  # DEFAULT, none, a weights name (IMAGENET1K_V2) or a file path
    hidden_units: list[int] = field(default_factory=lambda: [512])  # head's hidden layers
    dropout: float = 0.2
    finetune_blocks: int = 0  # 0: head only; N: also the last N backbone blocks; -1: everything
    # Optimisation
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3  # head learning rate (peak, after warmup)
    backbone_lr_scale: float = 0.1  # backbone lr = lr * this, when blocks are fine-tuned
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0  # linear warmup, then cosine decay to zero
    label_smoothing: float = 0.1
    early_stopping_patience: int = 0  # epochs without a better valid accuracy; 0 = off
    seed: int = 42
    # Input pipeline
    image_size: int = 224  # crop fed to the network
    resize_size: int = 0  # shorter side before cropping; 0 = image_size * 8 / 7 (256 for 224)
    interpolation: str = "bilinear"
    num_workers: int = -1  # DataLoader workers per process; -1 = sized to the CPUs
    # Hardware
    amp: bool = True  # mixed precision (CUDA only)
    channels_last: bool = True  # CUDA only
    # Output
    model_name: str = "image-classifier"  # recorded in the manifest, answered by the server
    export_onnx: bool = True
    export_int8: bool = True  # an int8 copy of model.onnx for CPU endpoints, gated on agreement
    drift_baseline: bool = True  # baseline.json for the drift monitor, from the validation images
    log_every_steps: int = 20
    # The record, the rules and the profiler (debugger/)
    record_interval: int = 10  # steps between the record's per-layer statistics (debugger/record.py)
    rule_parameters: dict = field(default_factory=dict)  # rule thresholds: {"overfit": {"patience": 2}}
    rule_actions: dict = field(default_factory=dict)  # {"loss_not_decreasing": "stop"}
    # SageMaker Debugger's smdebug hook: auto (when SageMaker configures one), on, strict, off
    debugger: str = "auto"
    debugger_save_interval: int = 0  # > 0: save every collection this often (default config)
    profiler: bool = True  # sample CPU/GPU/memory and time each step; report in output/data
    profiler_interval: float = 1.0  # seconds between system samples
    profiler_trace_steps: int = 3  # first-epoch steps traced by torch.profiler; 0 = none
    # MLflow (train/tracking.py, when MLFLOW_TRACKING_URI is set): fail before training when
    # the server cannot be reached, instead of training on without tracking
    mlflow_required: bool = False

    def __post_init__(self):
        if self.resize_size == 0:
            self.resize_size = round(self.image_size * 8 / 7)
        if self.num_workers < -1:
            raise ConfigError("num_workers must be -1 (auto) or >= 0")
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr >= 0, "lr must be >= 0"),
            (self.backbone_lr_scale >= 0, "backbone_lr_scale must be >= 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.early_stopping_patience >= 0, "early_stopping_patience must be >= 0"),
            (self.finetune_blocks >= -1, "finetune_blocks must be -1 (all), 0 (head) or N > 0"),
            (all(u >= 1 for u in self.hidden_units), "hidden_units must all be >= 1"),
            (self.image_size >= 16, "image_size must be >= 16"),
            (self.resize_size >= self.image_size, "resize_size must be >= image_size"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.interpolation in INTERPOLATIONS, f"interpolation must be one of {INTERPOLATIONS}"),
            (self.log_every_steps >= 1, "log_every_steps must be >= 1"),
            (self.debugger in HOOK_MODES, f"debugger must be one of {HOOK_MODES}"),
            (self.debugger_save_interval >= 0, "debugger_save_interval must be >= 0"),
            (self.record_interval >= 1, "record_interval must be >= 1"),
            (self.profiler_interval > 0, "profiler_interval must be > 0"),
            (self.profiler_trace_steps >= 0, "profiler_trace_steps must be >= 0"),
        ]
        for name, check in (("rule_parameters", rule_parameters), ("rule_actions", rule_actions)):
            try:
                check(getattr(self, name))
            except ValueError as e:
                checks.append((False, f"{name}: {e}"))
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ConfigError("bad hyperparameters: " + "; ".join(errors))

    @property
    def pretrained(self) -> bool:
        return self.weights.lower() != "none"


# Hyperparameters that change how a run is watched or written, not what it trains: a run may
# resume another run's checkpoint of the same job with other values for these.
NOT_TRAINING = ("num_workers", "log_every_steps", "model_name", "export_onnx", "export_int8",
                "drift_baseline", "debugger", "debugger_save_interval", "record_interval",
                "rule_parameters", "rule_actions", "profiler", "profiler_interval",
                "profiler_trace_steps", "mlflow_required")

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


def hyperparameter_help() -> str:
    """Every hyperparameter with its type and default, for error messages and --help."""
    return "\n".join(
        f"  {name}: {_type_name(_TYPES[name])} (default {_default(f)!r})" for name, f in _FIELDS.items()
    )


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) if typing.get_origin(tp) is None else str(tp)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _decoded(text: str):
    """A hyperparameter's text as JSON (SDK v3), else as a Python literal (SDK v2's str()), else
    the text itself."""
    for decode in (json.loads, ast.literal_eval):
        try:
            return decode(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def parse_value(raw, tp):
    """Convert one hyperparameter value (usually a string) to type tp, or raise ValueError."""
    value = _decoded(raw.strip()) if isinstance(raw, str) else raw
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ValueError("expected an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        return float(value)
    if tp is str:  # "1.10" stays "1.10", "True" stays "True": the text as it was written
        return value if isinstance(value, str) or not isinstance(raw, str) else raw.strip()
    if tp is dict:
        if isinstance(value, str):  # a JSON text sent as a JSON string ("\"{...}\"")
            value = _decoded(value.strip()) if value.strip() else {}
        if not isinstance(value, dict):
            raise ValueError('expected an object such as {"overfit": {"patience": 3}}')
        return value
    if typing.get_origin(tp) is list:
        if isinstance(value, str):  # "750,500" or ""
            value = [v for v in value.replace(",", " ").split()]
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError("expected a list such as [750, 500]")
        (item_type,) = typing.get_args(tp)
        return [parse_value(v, item_type) for v in value]
    raise TypeError(f"unsupported hyperparameter type {tp}")


def is_reserved(name: str) -> bool:
    """Names SageMaker adds itself (sagemaker_program, _tuning_objective_metric, ...)."""
    return name.startswith(("sagemaker_", "_"))


def from_hyperparameters(values: dict) -> TrainConfig:
    """Build the config from a hyperparameters.json-style mapping, reporting every bad entry."""
    kwargs, errors = {}, []
    for raw_name, raw in values.items():
        if is_reserved(raw_name):
            continue
        name = raw_name.replace("-", "_")
        if name not in _FIELDS:
            errors.append(f"unknown hyperparameter {raw_name!r}")
            continue
        try:
            kwargs[name] = parse_value(raw, _TYPES[name])
        except ValueError as e:
            errors.append(f"{raw_name}={raw!r}: {e}")
    if errors:
        raise ConfigError(
            "bad hyperparameters: " + "; ".join(errors) + "\nValid hyperparameters:\n"
            + hyperparameter_help()
        )
    try:
        return TrainConfig(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{e}\nValid hyperparameters:\n{hyperparameter_help()}") from None


def pairs_to_dict(args: list[str]) -> dict:
    """['--lr', '0.01', '--hidden-units', '[64, 32]'] -> {'lr': '0.01', 'hidden-units': '[64, 32]'};
    also accepts --name=value."""
    values, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"expected --name value, got {arg!r}")
        if "=" in arg:
            name, value = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(args):
            name, value = arg[2:], args[i + 1]
            i += 2
        else:
            raise ConfigError(f"hyperparameter {arg} has no value")
        values[name] = value
    return values
