"""What the serving benchmarks share: the ResNet-50 model folder they serve (133 classes, random
weights: the compute of a trained one, written by train/'s own exporter, with its int8 copy from
train/quantize.py), the generated images that calibrate it, and a photo-sized request body."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from artifact.manifest import Manifest, Preprocessing, write_manifest
from artifact.network import build_network
from artifact.preprocess import eval_input
from scripts.make_demo_data import make_image
from train.export import export_int8, write_artifact

CALIBRATION = 64


def calibration_batches(n: int = CALIBRATION) -> list[np.ndarray]:
    """Demo-data images through the eval preprocessing: plausible activations to calibrate on."""
    rng = np.random.default_rng(0)
    batches = []
    for i in range(n):
        buffer = io.BytesIO()
        make_image(rng, i % 6).resize((320, 240)).save(buffer, format="JPEG")
        batches.append(eval_input(buffer.getvalue(), Preprocessing())[None])
    return batches


def make_model(model_dir: Path) -> Path:
    """The model folder, written once and reused by later runs."""
    if (model_dir / "manifest.json").is_file() and (model_dir / "model.int8.onnx").is_file():
        return model_dir
    model, _ = build_network("resnet50", 133, [], 0.0)
    manifest = Manifest(architecture="resnet50", classes=[f"{i:03d}.breed" for i in range(133)],
                        preprocessing=Preprocessing(), name="bench-resnet50")
    write_artifact(model, manifest, model_dir, torch.randn(2, 3, 224, 224))
    batches = calibration_batches()
    manifest.precisions["int8"] = export_int8(model_dir, batches, batches[:8],
                                              np.zeros(8, dtype=np.int64))
    write_manifest(model_dir, manifest)
    return model_dir


def photo() -> bytes:
    """A 960x720 JPEG, about the size of the dog-breed photos."""
    image = make_image(np.random.default_rng(0), 3).resize((960, 720))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
