"""Writes the model artifact (see artifact/__init__.py): safetensors, ONNX checked against PyTorch,
and the manifest."""
from __future__ import annotations

import contextlib
import io
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from artifact.manifest import (
    INT8_FILE, ONNX_FILE, ONNX_INPUT, ONNX_OUTPUT, WEIGHTS_FILE, Manifest, write_manifest,
)

log = logging.getLogger(__name__)
# Largest |PyTorch - ONNX Runtime| logit difference accepted at export.
ONNX_TOLERANCE = 1e-3


class ExportError(RuntimeError):
    pass


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path) -> float:
    """Export with a dynamic batch axis; returns the max abs logit difference on `sample`."""
    import onnxruntime

    batch = torch.export.Dim("batch", min=1, max=1024)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
        program = torch.onnx.export(
            model, (sample,), dynamo=True, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: batch},), verbose=False,
        )
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(sample).numpy()
    actual = session.run([ONNX_OUTPUT], {ONNX_INPUT: sample.numpy()})[0]
    return float(np.abs(expected - actual).max())


def library_versions() -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__}
    for name in ("onnx", "onnxruntime", "safetensors"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    return versions


def export_int8(model_dir: Path, calibration: list[np.ndarray], checked: list[np.ndarray],
                labels: np.ndarray) -> dict:
    """Write the int8 copy of model.onnx (train/quantize.py) and return its gate's figures."""
    from train import quantize

    started = time.perf_counter()
    quantize.quantize_int8(model_dir / ONNX_FILE, model_dir / INT8_FILE, calibration)
    (model_dir / INT8_FILE).chmod(0o644)
    result = quantize.compare(model_dir / ONNX_FILE, model_dir / INT8_FILE, checked,
                              labels)
    return {"file": INT8_FILE, **result,
            "calibration_images": int(sum(len(b) for b in calibration)),
            "seconds": round(time.perf_counter() - started, 1)}


def write_artifact(
    model: nn.Module, manifest: Manifest, model_dir: Path, sample: torch.Tensor | None
) -> Manifest:
    """sample: a batch of real eval inputs (NCHW float32) to check the ONNX export on."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model = model.float().to("cpu", memory_format=torch.contiguous_format).eval()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(model_dir / WEIGHTS_FILE))
    manifest.versions = library_versions()
    if sample is not None:
        diff = export_onnx(model, sample, model_dir / ONNX_FILE)
        log.info("ONNX export: max |PyTorch - ONNX Runtime| logit difference %.2e", diff)
        if diff > ONNX_TOLERANCE:
            (model_dir / ONNX_FILE).unlink()
            raise ExportError(
                f"the ONNX export differs from PyTorch by {diff:.2e} (> {ONNX_TOLERANCE}); "
                "retry with export_onnx=false to ship the PyTorch weights only"
            )
        manifest.onnx_max_abs_diff = diff
    write_manifest(model_dir, manifest)
    for path in model_dir.iterdir():  # safetensors writes 0600; servers may read as another user
        path.chmod(0o644)
    return manifest
