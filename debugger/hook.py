"""The smdebug hook for train/: SageMaker Debugger's tensors (losses, weights, gradients, ...).

Where the hook's configuration comes from, by the `debugger` hyperparameter:
  auto    (default) SageMaker's /opt/ml/input/config/debughookconfig.json when the job has one
          (SMDEBUG_CONFIG_FILE_PATH names another); no hook, no import and no cost without it
  on      that file, or else the project's collections (debugger/config.py) saved under
          output/tensors, so that the rules can run after a local run too
  strict  as on, but a malformed configuration stops the job instead of being skipped
  off     never
The hook stays on the eager path (no torch.compile) and never saves bfloat16 activations, which
smdebug cannot write.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from debugger.config import ACTIVATION_COLLECTIONS, hook_config

log = logging.getLogger(__name__)
SAGEMAKER_CONFIG = Path("/opt/ml/input/config/debughookconfig.json")


class HookConfigError(ValueError):
    """The hook's configuration is malformed, or smdebug cannot run. The message says why."""


def config_file() -> Path:
    return Path(os.environ.get("SMDEBUG_CONFIG_FILE_PATH") or SAGEMAKER_CONFIG)


def read_config(path: Path) -> dict:
    """debughookconfig.json, checked for the shape smdebug expects."""
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HookConfigError(f"{path} is not readable JSON: {e}") from None
    if not isinstance(config, dict):
        raise HookConfigError(f"{path} must hold a JSON object, not {type(config).__name__}")
    if not isinstance(config.get("HookParameters", {}) or {}, dict):
        raise HookConfigError(f"{path}: HookParameters must be an object")
    collections = config.get("CollectionConfigurations") or []
    if not isinstance(collections, list) or not all(
        isinstance(c, dict) and isinstance(c.get("CollectionName"), str)
        and isinstance(c.get("CollectionParameters", {}) or {}, dict) for c in collections
    ):
        raise HookConfigError(
            f"{path}: CollectionConfigurations must be a list of "
            '{"CollectionName": "...", "CollectionParameters": {...}}'
        )
    for c in collections:
        for key, value in (c.get("CollectionParameters") or {}).items():
            if key.endswith("save_interval") and not str(value).strip().isdigit():
                raise HookConfigError(f"{path}: {c['CollectionName']}.{key} must be a whole "
                                      f"number of steps, got {value!r}")
    return config


def without_activations(config: dict) -> dict:
    """The configuration less the activation collections (bfloat16 under autocast on GPUs)."""
    kept = [c for c in config.get("CollectionConfigurations") or []
            if c["CollectionName"] not in ACTIVATION_COLLECTIONS]
    return {**config, "CollectionConfigurations": kept}


def import_smdebug():
    # smdebug 1.0.34's generated protobuf code needs the pure-Python protobuf runtime with
    # protobuf >= 4; it must be chosen before protobuf is first imported.
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")
    # smdebug's framework profiler is broken on torch >= 2 (debugger/profiler.py replaces it):
    # keep it from reading SageMaker's profilerconfig.json.
    os.environ.setdefault("SMPROFILER_CONFIG_PATH", "/nonexistent/profilerconfig.json")
    try:
        import smdebug.pytorch as smd
    except Exception as e:  # ImportError, or protobuf's TypeError when imported too late
        raise HookConfigError(
            f"smdebug cannot be imported ({type(e).__name__}: {e}); install it as "
            "requirements/smdebug.txt says"
        ) from None
    _without_tostring()
    return smd


class _TensorBytes:
    """An array as smdebug's make_tensor_proto reads it, with the ndarray.tostring() that
    numpy 2.3 removed (smdebug 1.0.34's one call of it) answered by tobytes()."""

    def __init__(self, array):
        self.array, self.dtype, self.shape = array, array.dtype, array.shape

    def tostring(self) -> bytes:
        return self.array.tobytes()

    def __iter__(self):
        return iter(self.array)


def _without_tostring() -> None:
    """Let smdebug write tensors on any numpy 2, rather than hold every image below 2.3."""
    import numpy as np
    from smdebug.core import writer
    from smdebug.core.tfevent import util

    if hasattr(np.ndarray, "tostring") or getattr(util.make_tensor_proto, "shimmed", False):
        return
    original = util.make_tensor_proto

    def make_tensor_proto(nparray_data, tag):
        return original(_TensorBytes(np.asarray(nparray_data)), tag)

    make_tensor_proto.shimmed = True
    util.make_tensor_proto = writer.make_tensor_proto = make_tensor_proto


def create(mode: str, model: nn.Module, criterion: nn.Module, tensors_dir: Path, *,
           save_interval: int = 0, bfloat16: bool = False, is_main: bool = True):
    """The registered hook, or None when there is nothing to do (or a skipped bad config)."""
    path = config_file()
    try:
        if mode == "off" or (mode == "auto" and not path.is_file()):
            return None
        if path.is_file():
            config, source = read_config(path), str(path)
        else:
            config, source = hook_config(str(tensors_dir), save_interval), "debugger/config.py"
        if bfloat16:
            log.warning("debugger: activations are bfloat16 under autocast, which smdebug cannot "
                        "save: not saving %s", ", ".join(ACTIVATION_COLLECTIONS))
            config = without_activations(config)
        out_dir = Path(config.get("LocalPath") or "/opt/ml/output/tensors")
        if is_main and out_dir.exists():  # smdebug refuses an existing trial: a previous run's
            log.info("debugger: removing the previous run's tensors in %s", out_dir)
            shutil.rmtree(out_dir)
        smd = import_smdebug()
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(config, f)
        try:
            hook = smd.Hook.create_from_json_file(f.name)
        finally:
            os.unlink(f.name)
    except Exception as e:  # smdebug's own errors too: the hook never stops a job unless strict
        reason = str(e) if isinstance(e, HookConfigError) else f"{type(e).__name__}: {e}"
        if mode == "strict":
            raise HookConfigError(f"debugger hook: {reason}") from None
        log.error("debugger hook: %s. Training goes on without it (hyperparameter "
                  "debugger=strict makes this fatal).", reason)
        return None
    for module in model.modules():  # an in-place ReLU would overwrite the relu_input it saves
        if isinstance(module, nn.ReLU):
            module.inplace = False
    hook.register_module(model)
    hook.register_loss(criterion)
    log.info("debugger: saving %s to %s (configuration from %s)",
             ", ".join(c["CollectionName"] for c in config.get("CollectionConfigurations") or [])
             or "the default collections", out_dir, source)
    return hook


def set_mode(hook, mode: str) -> None:
    """mode: train, eval or predict (smdebug counts steps per mode)."""
    if hook is not None:
        smd = import_smdebug()
        hook.set_mode({"train": smd.modes.TRAIN, "eval": smd.modes.EVAL,
                       "predict": smd.modes.PREDICT}[mode])


def close(hook, *modules: nn.Module) -> Path | None:
    """Flush the trial and take the hook off the modules (exporting must not run it). Returns
    the trial's folder."""
    if hook is None:
        return None
    hook.close()
    for root in modules:
        for module in root.modules():
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
    return Path(hook.out_dir)
