"""baseline.json: what the validation images look like to the model, written into the artifact
by train/ and read by the drift monitor (monitor/), which compares captured traffic with it.

Every image is described by the same numbers at training time (the validation images) and at
monitoring time (captured requests): its size as sent, its brightness and colour, the model's
top-1 class and confidence, and the distance of its backbone features (the input of the last
Linear layer) from the validation images' mean, in units of their spread. The baseline keeps 101
quantiles of each number, the class shares and the features' mean and spread.
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from artifact.manifest import BASELINE_FILE, Manifest
from artifact.preprocess import IMAGE_FORMATS, center_crop, decode_resized, normalize

BASELINE_FORMAT = 1
QUANTILES = np.linspace(0, 1, 101)
# name: what the report says it is
STATISTICS = {
    "confidence": "top-1 probability",
    "feature_distance": "backbone features' distance from the validation images' (RMS z-score)",
    "brightness": "mean luma (0-255)",
    "red": "mean red (0-255)",
    "green": "mean green (0-255)",
    "blue": "mean blue (0-255)",
    "width": "width as sent (pixels)",
    "height": "height as sent (pixels)",
    "aspect": "width / height",
}
_EXIF_SIDEWAYS = (5, 6, 7, 8)  # orientations that swap width and height for display


# describe_images' network: artifact.network.ClassifierWithFeatures (torch), passed in so that this
# module needs numpy and Pillow only.


class BaselineError(ValueError):
    """A baseline that cannot be compared with this window or model."""


@dataclass
class Described:
    """Per-image numbers of a set of images, in STATISTICS order, and their predicted classes."""
    values: dict[str, np.ndarray]
    predicted: np.ndarray
    features: np.ndarray  # (images, feature size)

    @property
    def images(self) -> int:
        return len(self.predicted)


def image_numbers(source: bytes | str, manifest: Manifest) -> tuple[dict[str, float], np.ndarray]:
    """(size, brightness and colour of one image, the network's input for it)."""
    steps = manifest.preprocessing
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as header:  # no pixel decoded
        width, height = header.size
        if header.getexif().get(0x0112) in _EXIF_SIDEWAYS:
            width, height = height, width
    array = decode_resized(data, steps.resize_size, steps.interpolation)
    mean = array.reshape(-1, 3).mean(0)
    numbers = {"width": float(width), "height": float(height), "aspect": width / height,
               "brightness": float(mean @ [0.299, 0.587, 0.114]),
               "red": float(mean[0]), "green": float(mean[1]), "blue": float(mean[2])}
    return numbers, normalize(center_crop(array, steps.image_size), steps.mean, steps.std)


def describe_images(items: Iterable[tuple[bytes | str, tuple[int, float] | None]], manifest: Manifest,
             network, on_error=None, batch_size: int = 32) -> Described:
    """The numbers of every (image, answer). The answer is the (class, probability) the endpoint
    gave when the image was captured, used instead of the network's own top-1 (which a
    reduced-precision endpoint may not share exactly); None to use the network's. An image that
    cannot be decoded is passed to on_error(index, reason) and left out."""
    rows, predicted, confidence, features, batch, answers = [], [], [], [], [], []

    def run():
        probabilities, feats = network(np.stack(batch))
        for answer, p in zip(answers, probabilities):
            top = (int(p.argmax()), float(p.max()))
            predicted.append((answer or top)[0])
            confidence.append((answer or top)[1])
        features.append(feats)
        batch.clear()
        answers.clear()

    for index, (source, answer) in enumerate(items):
        try:
            numbers, tensor = image_numbers(source, manifest)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            if on_error is None:
                raise
            on_error(index, f"not a readable image ({type(e).__name__})")
            continue
        rows.append(numbers)
        batch.append(tensor)
        answers.append(answer)
        if len(batch) == batch_size:
            run()
    if batch:
        run()
    values = {name: np.array([row[name] for row in rows], dtype=np.float64)
              for name in STATISTICS if name not in ("confidence", "feature_distance")}
    values["confidence"] = np.array(confidence, dtype=np.float64)
    return Described(values, np.array(predicted, dtype=np.int64),
                     np.concatenate(features) if features else np.zeros((0, 0)))


def feature_distance(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.sqrt((((features - mean) / std) ** 2).mean(1))


def make_baseline(described: Described, manifest: Manifest) -> dict:
    if described.images < 2:
        raise BaselineError("a baseline needs at least 2 images")
    mean = described.features.mean(0)
    std = described.features.std(0) + 1e-6  # dead units (always 0 after ReLU) have no spread
    values = {**described.values,
              "feature_distance": feature_distance(described.features, mean, std)}
    counts = np.bincount(described.predicted, minlength=manifest.num_classes)
    return {
        "format_version": BASELINE_FORMAT,
        "model": {"name": manifest.name, "version": manifest.version},
        "classes": manifest.classes,
        "images": described.images,
        "class_shares": (counts / counts.sum()).tolist(),
        "quantiles": {name: np.quantile(values[name], QUANTILES).tolist() for name in STATISTICS},
        "features": {"mean": mean.tolist(), "std": std.tolist()},
    }


def check_baseline(baseline: dict, manifest: Manifest) -> None:
    """BaselineError unless the baseline was made by this very model."""
    if baseline.get("format_version") != BASELINE_FORMAT:
        raise BaselineError(f"baseline format_version {baseline.get('format_version')!r}; this "
                            f"monitor reads {BASELINE_FORMAT}: retrain to make a new one")
    made_by = baseline.get("model", {})
    if (made_by.get("name"), made_by.get("version")) != (manifest.name, manifest.version):
        raise BaselineError(
            f"the baseline was made by model {made_by.get('name')} version "
            f"{made_by.get('version')}, but the model is {manifest.name} version "
            f"{manifest.version}: use the baseline.json of the model the endpoint serves")
