"""Rules, their parameters and the collections they read: the one place both SageMaker's managed
rules (scripts/sagemaker_train.py) and the local ones (debugger/rules.py, profiler.py) take them from.

Names and parameters are SageMaker's (sagemaker.debugger.rule_configs): a rule that fires here
fires under the same name on SageMaker.
"""
from __future__ import annotations

import copy
import json

# Our profiler rules that SageMaker's ProfilerReport also runs, under its names.
SAGEMAKER_PROFILER_RULES = {"cpu_bottleneck": "CPUBottleneck",
                            "low_gpu_utilization": "LowGPUUtilization",
                            "step_outlier": "StepOutlier", "memory_increase": "GPUMemoryIncrease",
                            "batch_size": "BatchSize"}
SYSTEM_MONITOR_INTERVAL_MS = 500  # SageMaker's profiler samples CPU/GPU/memory this often

# The `debugger` hyperparameter: where the hook's configuration comes from (debugger/hook.py).
HOOK_MODES = ("auto", "on", "strict", "off")

# Built-in debugger rules: name (rule_configs function) -> parameters, as SageMaker documents them.
# PyTorch's hook names the loss module's inputs CrossEntropyLoss_input_0 (logits) and _1 (labels).
RULES: dict[str, dict] = {
    "vanishing_gradient": {"threshold": 1e-7},
    "exploding_tensor": {"only_nan": False},
    "loss_not_decreasing": {"num_steps": 10, "diff_percent": 0.1},
    "overfit": {"start_step": 0, "patience": 1, "ratio_threshold": 0.1},
    "overtraining": {"patience_train": 5, "patience_validation": 10, "delta": 0.01},
    "poor_weight_initialization": {"threshold": 10.0, "distribution_range": 0.001, "steps": 10},
    "dead_relu": {"threshold_inactivity": 1.0, "threshold_layer": 50.0},
    "saturated_activation": {"threshold_tanh": 9.4999, "threshold_sigmoid": 23.0,
                             "threshold_layer": 50.0},
    "weight_update_ratio": {"large_threshold": 10.0, "small_threshold": 1e-8, "epsilon": 1e-9},
    "class_imbalance": {"threshold_imbalance": 10.0, "threshold_misprediction": 0.7,
                        "samples": 500, "labels_regex": "CrossEntropyLoss_input_1",
                        "predictions_regex": "CrossEntropyLoss_input_0"},
}

# Profiler (bottleneck) rules, in the spirit of SageMaker's ProfilerReport: name -> thresholds.
PROFILER_RULES: dict[str, dict] = {
    # CPU busy (> cpu_threshold %) while the GPU idles (< gpu_threshold %) in > threshold % of samples
    "cpu_bottleneck": {"threshold": 50.0, "cpu_threshold": 90.0, "gpu_threshold": 10.0},
    # the GPU's 95th percentile utilisation below threshold_p95 %
    "low_gpu_utilization": {"threshold_p95": 70.0},
    # more than threshold % of the steps spend over wait_fraction of their time waiting for data
    "dataloader_bound": {"threshold": 20.0, "wait_fraction": 0.5},
    # more than n_outliers steps slower than the median + stddev standard deviations
    "step_outlier": {"stddev": 3.0, "n_outliers": 10},
    # the process' memory (and each GPU's) grows by more than increase % from the second quarter
    # of the run to the last
    "memory_increase": {"increase": 20.0},
    # CPU, GPU and GPU memory 95th percentiles all below their thresholds: a bigger batch would fit
    "batch_size": {"cpu_threshold_p95": 70.0, "gpu_threshold_p95": 70.0,
                   "gpu_memory_threshold_p95": 70.0},
}

# What each collection saves, and how often (in steps of its mode). Losses are scalars: every
# step, so that the loss rules see enough points; full tensors are costly: rarely (SageMaker's 500).
def collections(save_interval: int = 0) -> dict[str, dict]:
    """save_interval > 0 replaces every interval (e.g. 1 for tiny test runs)."""
    table = {
        "losses": {"save_interval": 1},
        "gradients": {"save_interval": 500},
        "weights": {"save_interval": 500},
        "biases": {"save_interval": 500},
        "relu_input": {"include_regex": ".*relu_input", "save_interval": 500},
        "relu_output": {"include_regex": ".*relu_output", "save_interval": 500},
        "saturation_inputs": {"include_regex": ".*tanh_input|.*sigmoid_input", "save_interval": 500},
        "loss_inputs": {"include_regex": "CrossEntropyLoss_input_.*", "save_interval": 10},
    }
    if save_interval > 0:
        for params in table.values():
            for key in [k for k in params if k.endswith("save_interval")]:
                params[key] = save_interval
    return table


ACTIVATION_COLLECTIONS = ("relu_input", "relu_output", "saturation_inputs", "loss_inputs")


def hook_config(local_path: str, save_interval: int = 0) -> dict:
    """A debughookconfig.json as SageMaker writes it (every value a string)."""
    return {
        "LocalPath": local_path,
        "HookParameters": {},
        "CollectionConfigurations": [
            {"CollectionName": name, "CollectionParameters": {k: str(v) for k, v in params.items()}}
            for name, params in collections(save_interval).items()
        ],
    }


# The `rule_actions` hyperparameter: what the job does when a rule fires, as SageMaker Debugger's
# StopTraining action did: {"loss_not_decreasing": "stop"}.
ACTIONS = ("stop",)


def rule_actions(actions: dict | None) -> dict[str, str]:
    """The actions, checked: every key a rule, every value one of ACTIONS."""
    actions = actions or {}
    if not isinstance(actions, dict):
        raise ValueError(f'expected an object such as {{"loss_not_decreasing": "stop"}}, got '
                         f"{actions!r}")
    rules = {**RULES, **PROFILER_RULES}
    for rule, action in actions.items():
        if rule not in rules:
            raise ValueError(f"unknown rule {rule!r}; rules: {', '.join(rules)}")
        if action not in ACTIONS:
            raise ValueError(f"{rule}: unknown action {action!r}; actions: {', '.join(ACTIONS)}")
    return dict(actions)


def rule_parameters(overrides: dict | str | None = None) -> dict[str, dict]:
    """Every rule's parameters (debugger and profiler), with overrides such as
    {"loss_not_decreasing": {"num_steps": 5}} (or that as JSON) applied and checked."""
    params = copy.deepcopy({**RULES, **PROFILER_RULES})
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"rule parameters are not JSON ({e}): expected "
                             '{"rule_name": {"parameter": value}}') from None
    for rule, values in (overrides or {}).items():
        if rule not in params:
            raise ValueError(f"unknown rule {rule!r}; rules: {', '.join(params)}")
        if not isinstance(values, dict):
            raise ValueError(f"parameters of {rule} must be an object, got {values!r}")
        for name, value in values.items():
            if name not in params[rule]:
                raise ValueError(f"{rule} has no parameter {name!r}; it has: "
                                 f"{', '.join(params[rule])}")
            if not isinstance(value, type(params[rule][name])) and not (
                    isinstance(params[rule][name], float) and isinstance(value, int)):
                raise ValueError(f"{rule}.{name} must be a {type(params[rule][name]).__name__}, "
                                 f"got {value!r}")
            params[rule][name] = value
    return params
