"""The data set: class folders per split, checked, decoded once into a cache, then loaded fast.

Full-size JPEGs cost milliseconds each to decode, every epoch. prepare() decodes every image once
(in parallel), resizes its shorter side to the eval resize size, and stores the uint8 pixels as
.npy in a cache folder; epochs then only read small arrays. The same pass finds corrupt,
truncated and non-image files, which are skipped and listed in the data report.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from artifact.preprocess import FOLDER_MAX_PIXELS, IMAGE_EXTENSIONS, decode_resized
from train.environment import DataError

log = logging.getLogger(__name__)



@dataclass
class Split:
    name: str
    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]  # (file, class index), readable images only after prepare()
    skipped: list[dict] = field(default_factory=list)  # {"file": ..., "reason": ...}


def scan_split(name: str, root: Path) -> Split:
    """Class folders (sorted names) and their files; files with non-image extensions are skipped."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples, skipped = [], []
    for index, class_name in enumerate(classes):
        for path in sorted((root / class_name).rglob("*")):
            if not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                samples.append((path, index))
            else:
                skipped.append({"file": str(path), "reason": "not an image file (by extension)"})
    return Split(name, root, classes, samples, skipped)


def load_splits(train: Path, valid: Path, test: Path | None) -> dict[str, Split]:
    """Scan the splits and check that they can be trained on together."""
    splits = {"train": scan_split("train", train), "valid": scan_split("valid", valid)}
    if test is not None:
        splits["test"] = scan_split("test", test)
    reference = splits["train"].classes
    if len(reference) < 2:
        raise DataError(
            f"the train channel ({train}) has {len(reference)} class folder(s): a classifier "
            "needs at least two. Lay it out as train/<class name>/<image files>."
        )
    for split in splits.values():
        if split.classes != reference:
            missing = sorted(set(reference) - set(split.classes))
            extra = sorted(set(split.classes) - set(reference))
            raise DataError(
                f"class folders differ between train and {split.name} ({split.root}): "
                f"{split.name} lacks {missing[:10]}{'...' if len(missing) > 10 else ''} and has "
                f"extra {extra[:10]}{'...' if len(extra) > 10 else ''}. Every split needs the "
                "same class folders (an empty folder is fine)."
            )
        if not split.samples:
            raise DataError(
                f"the {split.name} channel ({split.root}) holds no image files "
                f"({', '.join(IMAGE_EXTENSIONS)}) in its class folders."
            )
    return splits


class DecodeCache:
    """Decoded, resized images as .npy files keyed by source path, size, mtime and resize."""

    def __init__(self, root: Path, shorter_side: int, interpolation: str):
        self.root, self.shorter_side, self.interpolation = root, shorter_side, interpolation

    def path_for(self, source: Path) -> Path:
        stat = source.stat()
        key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.shorter_side}|{self.interpolation}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"

    def ensure(self, source: Path) -> str | None:
        """Decode source into the cache unless it is there; returns why it failed, or None."""
        target = self.path_for(source)
        if target.exists():
            return None
        try:
            array = decode_resized(source, self.shorter_side, self.interpolation,
                                   FOLDER_MAX_PIXELS)
        except Exception as e:  # any decoder error means: skip this file, keep training
            return f"{type(e).__name__}: {e}"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, target)  # atomic: concurrent ranks or workers never see half a file
        return None

    def load(self, source: Path) -> np.ndarray:
        return np.load(self.path_for(source))


def _ensure_one(job):
    cache, path = job
    return path, cache.ensure(path)


def prepare(splits: dict[str, Split], cache: DecodeCache, workers: int) -> dict:
    """Decode every image into the cache in parallel; drop unreadable ones. Returns the report."""
    report = {}
    for split in splits.values():
        started = time.perf_counter()
        jobs = [(cache, path) for path, _ in split.samples]
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = dict(pool.imap_unordered(_ensure_one, jobs, chunksize=8))
        else:
            results = dict(map(_ensure_one, jobs))
        bad = {path: reason for path, reason in results.items() if reason}
        split.skipped += [{"file": str(p), "reason": r} for p, r in sorted(bad.items())]
        split.samples = [(p, label) for p, label in split.samples if p not in bad]
        seconds = time.perf_counter() - started
        for item in split.skipped:
            log.warning("skipping %s: %s", item["file"], item["reason"])
        log.info(
            "prepared %s: %d images, %d skipped, %.1f s (%.0f images/s)",
            split.name, len(split.samples), len(split.skipped), seconds,
            len(jobs) / max(seconds, 1e-9),
        )
        if not split.samples:
            raise DataError(f"no readable image in the {split.name} channel ({split.root}).")
        report[split.name] = {
            "images": len(split.samples),
            "skipped": split.skipped,
            "per_class": np.bincount(
                [label for _, label in split.samples], minlength=len(split.classes)
            ).tolist(),
            "prepare_seconds": round(seconds, 3),
        }
    return report


class CachedImages(torch.utils.data.Dataset):
    """(uint8 CHW tensor, label) pairs read from the decode cache, then transformed."""

    def __init__(self, split: Split, cache: DecodeCache, transform):
        # Cache paths once: hashing and stat-ing the source on every access would tax each step.
        self.files = [cache.path_for(path) for path, _ in split.samples]
        self.labels = [label for _, label in split.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = torch.from_numpy(np.load(self.files[index])).permute(2, 0, 1)
        return self.transform(image), self.labels[index]


class ShardedSampler(torch.utils.data.Sampler[int]):
    """Deterministic per-epoch order, sharded across ranks, that can start mid-epoch on resume.

    Training shards are cut to equal length (DDP needs the same number of steps on every rank).
    """

    def __init__(self, size: int, rank: int, world_size: int, shuffle: bool, seed: int,
                 equal_shards: bool):
        self.size, self.rank, self.world_size = size, rank, world_size
        self.shuffle, self.seed, self.equal_shards = shuffle, seed, equal_shards
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """start: samples of this rank's shard already consumed (resuming mid-epoch)."""
        self.epoch, self.start = epoch, start

    def _shard(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.equal_shards:
            order = order[: self.size - self.size % self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard()[self.start :])

    def __len__(self) -> int:
        return len(self._shard()) - self.start
