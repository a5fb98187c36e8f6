"""Data pipeline throughput: the decode cache against decoding every JPEG every epoch.

    python -m bench.data_pipeline [--data DIR] [--image-size 224]

Measures, in one run on the same images: (1) the first pass, prepare(): decode full-size JPEGs,
resize, write the cache; (2) a cached epoch: DataLoader over the cache with the train transform;
(3) the baseline: a naive ImageFolder-style loader that decodes and resizes every file every epoch.
Prints images/s and the ratios (cached / first pass, cached / naive).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from artifact.preprocess import decode_resized
from scripts.make_demo_data import generate
from train.data import CachedImages, DecodeCache, load_splits, prepare
from train.transforms import train_transform


class NaiveImages(torch.utils.data.Dataset):
    """Decode + resize from the original file on every access (no cache)."""

    def __init__(self, samples, resize, transform):
        self.samples, self.resize, self.transform = samples, resize, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        image = torch.from_numpy(decode_resized(path, self.resize)).permute(2, 0, 1)
        return self.transform(image), label


def epoch_rate(dataset, workers: int, batch_size: int = 32) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         num_workers=workers)
    started, count = time.perf_counter(), 0
    for images, _ in loader:
        count += len(images)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="default: generate the demo data set")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or generate(Path(tmp) / "data")
        splits = load_splits(data / "train", data / "valid", None)
        n = len(splits["train"].samples) + len(splits["valid"].samples)
        resize = round(args.image_size * 8 / 7)
        cache = DecodeCache(Path(tmp) / "cache", resize, "bilinear")
        started = time.perf_counter()
        prepare(splits, cache, workers=workers)
        first_pass = n / (time.perf_counter() - started)
        transform = train_transform(args.image_size)
        cached = epoch_rate(CachedImages(splits["train"], cache, transform), workers)
        naive = epoch_rate(NaiveImages(splits["train"].samples, resize, transform), workers)
    result = {
        "images": n, "image_size": args.image_size, "workers": workers,
        "first_pass_images_per_s": round(first_pass, 1),
        "cached_epoch_images_per_s": round(cached, 1),
        "naive_epoch_images_per_s": round(naive, 1),
        "cached_vs_first_pass": round(cached / first_pass, 2),
        "cached_vs_naive": round(cached / naive, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
