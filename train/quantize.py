"""A reduced-precision copy of the exported model for CPU endpoints, and the gate it must pass.

ONNX Runtime static int8 quantization (QDQ format: uint8 activations, int8 per-channel weights,
which x86's VNNI instructions multiply), calibrated on the job's own training images through
the eval preprocessing. The copy is then run beside the fp32 model on the validation and test
images: it is served by default only when its top-1 agrees with fp32's on at least
MIN_AGREEMENT of them and its accuracy is at most MAX_ACCURACY_DROP below. Both runs use ONNX
Runtime, as the server does; nothing here needs a GPU.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from artifact.manifest import ONNX_INPUT, ONNX_OUTPUT

MIN_AGREEMENT = 0.995  # top-1 agreement with fp32 on validation + test images
MAX_ACCURACY_DROP = 0.005  # in accuracy (0.5 points)
CALIBRATION_IMAGES = 256  # at most; the training split's first images in file order


def quantize_int8(fp32: Path, out: Path, calibration: Iterable[np.ndarray]) -> None:
    """Write the int8 copy of the fp32 ONNX model, calibrated on NCHW float32 batches."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {ONNX_INPUT: batch}

    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"  # shapes inferred, BatchNorms folded
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Batches(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)


def session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def top1(model, batches: Iterable[np.ndarray]) -> np.ndarray:
    return np.concatenate([model.run([ONNX_OUTPUT], {ONNX_INPUT: b})[0].argmax(1)
                           for b in batches])


def compare(fp32: Path, reduced: Path, batches: list[np.ndarray], labels: np.ndarray) -> dict:
    """Top-1 agreement of the two models, and each one's accuracy, on the same inputs."""
    reference, candidate = top1(session(fp32), batches), top1(session(reduced), batches)
    result = {"images": int(len(labels)),
              "agreement": float((reference == candidate).mean()),
              "fp32_accuracy": float((reference == labels).mean()),
              "accuracy": float((candidate == labels).mean())}
    result["passed"] = bool(result["agreement"] >= MIN_AGREEMENT and
                            result["accuracy"] >= result["fp32_accuracy"] - MAX_ACCURACY_DROP)
    return result
