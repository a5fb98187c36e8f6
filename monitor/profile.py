"""The comparison of a window of captured traffic with the model's baseline (artifact/baseline.py):
two-sample Kolmogorov-Smirnov tests on each number and a chi-square test on the classes, each at
significance ALPHA, so an unchanged window of any size raises a violation about once in a
thousand checks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from artifact.baseline import QUANTILES, STATISTICS, Described, feature_distance

ALPHA = 0.001


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
