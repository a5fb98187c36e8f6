"""What a set of images looks like to the model, the baseline made of it, and the comparison of a
window of traffic with that baseline.

Every image is described by the same numbers at training time (the validation images) and at
monitoring time (captured requests): its size as sent, its brightness and colour, the model's
top-1 class and confidence, and the distance of its backbone features (the input of the last
Linear layer) from the validation images' mean, in units of their spread. The baseline keeps 101
quantiles of each number, the class shares and the features' mean and spread; a window is
compared with two-sample Kolmogorov-Smirnov tests and a chi-square test on the classes, each at
significance ALPHA, so an unchanged window of any size raises a violation about once in a
thousand checks.
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from artifact.manifest import Manifest
from artifact.preprocess import IMAGE_FORMATS, center_crop, decode_resized, normalize

BASELINE_FILE = "baseline.json"
BASELINE_FORMAT = 1
ALPHA = 0.001
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


class Network:
    """The trained network, answering (probabilities, penultimate features) for a batch."""

    def __init__(self, model, device="cpu"):
        import torch

        from artifact.network import last_linear

        self.torch, self.device = torch, torch.device(device)
        self.model = model.to(self.device).eval()
        self._features = []
        last_linear(self.model)[1].register_forward_pre_hook(
            lambda _, inputs: self._features.append(inputs[0].detach().float().cpu()))

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._features.clear()
        with self.torch.no_grad():
            logits = self.model(self.torch.from_numpy(batch).to(self.device)).float()
        return logits.softmax(1).cpu().numpy(), self._features[-1].numpy()


def describe(items: Iterable[tuple[bytes | str, tuple[int, float] | None]], manifest: Manifest,
             network: Network, on_error=None, batch_size: int = 32) -> Described:
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


@dataclass
class Check:
    feature_name: str
    statistic: float  # KS distance, or chi-square
    threshold: float
    description: str
    window: list[float] = field(default_factory=list)  # the window's values, for the report

    @property
    def violated(self) -> bool:
        return self.statistic > self.threshold


def ks_distance(quantiles: np.ndarray, sample: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance between a sample and a distribution known by its
    quantiles (its CDF interpolated between them)."""
    sample = np.sort(sample)
    points = np.concatenate([sample, quantiles])
    lo = np.searchsorted(quantiles, points, side="left")
    hi = np.searchsorted(quantiles, points, side="right")
    edges = len(quantiles) - 1
    # The baseline's CDF at each point: linear between its quantiles, flat over repeated ones.
    inside = np.interp(points, quantiles, QUANTILES)
    base_lo = np.where(lo == hi, inside, lo / edges)
    base_hi = np.where(lo == hi, inside, (hi - 1) / edges)
    ours_lo = np.searchsorted(sample, points, side="left") / len(sample)
    ours_hi = np.searchsorted(sample, points, side="right") / len(sample)
    return float(max(np.abs(ours_lo - base_lo).max(), np.abs(ours_hi - base_hi).max()))


def ks_threshold(n: int, m: int, alpha: float = ALPHA) -> float:
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def chi_square_threshold(dof: int, alpha: float = ALPHA) -> float:
    """Wilson-Hilferty's approximation of the chi-square quantile (no scipy in the images)."""
    z = {0.001: 3.090, 0.01: 2.326, 0.05: 1.645}[alpha]
    k = max(dof, 1)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def compare(baseline: dict, window: Described) -> list[Check]:
    """One check per statistic and one on the predicted classes."""
    n, m = window.images, baseline["images"]
    features = baseline["features"]
    values = {**window.values, "feature_distance": feature_distance(
        window.features, np.array(features["mean"]), np.array(features["std"]))}
    checks = []
    for name, meaning in STATISTICS.items():
        quantiles = np.array(baseline["quantiles"][name])
        distance = ks_distance(quantiles, values[name])
        checks.append(Check(
            name, distance, ks_threshold(n, m),
            f"{meaning}: median {np.median(values[name]):.4g} against {quantiles[50]:.4g} in "
            f"training's validation images (KS distance {distance:.3f})",
            values[name].tolist()))
    shares = np.array(baseline["class_shares"])
    # Laplace smoothing: a class the validation images never got still has some chance.
    expected = n * (shares * m + 0.5) / (m + 0.5 * len(shares))
    observed = np.bincount(window.predicted, minlength=len(shares))
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    moved = np.argsort(-np.abs(observed - expected))[:3]
    checks.append(Check(
        "predicted_class", chi2, chi_square_threshold(len(shares) - 1),
        "predicted classes: most changed " + ", ".join(
            f"{baseline['classes'][i]} {observed[i] / n:.1%} (was {shares[i]:.1%})" for i in moved)
        + f" (chi-square {chi2:.1f})",
        observed.tolist()))
    return checks
