"""Fast trials for a frozen backbone: its features of every train/valid image are computed once
and cached; each trial then trains only the classifier head on them.

A frozen backbone (finetune_blocks=0) gives the same features every epoch, up to augmentation:
here they are the centre crop's (eval preprocessing), so a fast trial sees no random crops or
flips. The head, optimiser, schedule and loss are training's own (train/), so what a fast trial
ranks high trains the same way through the normal path.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from artifact.manifest import Preprocessing
from artifact.network import make_head
from train.config import TrainConfig
from train.data import CachedImages, DecodeCache, load_splits, prepare
from train.model import create_model, make_optimizer, make_scheduler
from train.transforms import Normalizer, eval_transform

log = logging.getLogger(__name__)
# The hyperparameters that change the features; all the others only change the head's training.
FEATURE_FIELDS = ("architecture", "weights", "image_size", "resize_size", "interpolation")


@dataclass
class Features:
    train_x: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    num_classes: int


def cache_key(config: TrainConfig, data_dir: Path) -> str:
    """Changes with the backbone, the preprocessing, or any file of train/ and valid/."""
    digest = hashlib.sha256(json.dumps([getattr(config, f) for f in FEATURE_FIELDS]).encode())
    for split in ("train", "valid"):
        for path in sorted((data_dir / split).glob("*/*")):
            stat = path.stat()
            digest.update(f"{path.relative_to(data_dir)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


@torch.no_grad()
def extract(config: TrainConfig, data_dir: Path, cache_dir: Path) -> Features:
    """The backbone's features of train/ and valid/, from cache_dir when computed before."""
    path = cache_dir / f"features-{config.architecture}-{cache_key(config, data_dir)}.npz"
    if path.is_file():
        saved = np.load(path)
        return Features(*(torch.from_numpy(saved[k]) for k in ("tx", "ty", "vx", "vy")),
                        int(saved["classes"]))
    splits = load_splits(data_dir / "train", data_dir / "valid", None)
    decoded = DecodeCache(cache_dir / "images", config.resize_size, config.interpolation)
    prepare(splits, decoded, workers=os.cpu_count() or 1)
    model, head_name = create_model(config, len(splits["train"].classes))
    parent, _, child = head_name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    model.eval()
    preprocessing = Preprocessing()
    normalize = Normalizer(preprocessing.mean, preprocessing.std, torch.device("cpu"), False)
    arrays = []
    for split in ("train", "valid"):
        images = CachedImages(splits[split], decoded, eval_transform(config.image_size))
        loader = torch.utils.data.DataLoader(images, batch_size=64)
        xs, ys = zip(*((model(normalize(x)), y) for x, y in loader))
        arrays += [torch.cat(xs).float().numpy(), torch.cat(ys).numpy()]
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, tx=arrays[0], ty=arrays[1], vx=arrays[2], vy=arrays[3],
             classes=len(splits["train"].classes))
    log.info("backbone features: %d train, %d valid images, %d values each -> %s",
             len(arrays[0]), len(arrays[2]), arrays[0].shape[1], path)
    return Features(*(torch.from_numpy(a) for a in arrays), len(splits["train"].classes))


def train_head(features: Features, config: TrainConfig,
               report: Callable[[int, float], None] | None = None) -> float:
    """Training's head on the cached features; after each epoch, report(epoch, the best validation
    accuracy so far: train/'s objective) may raise to stop the trial. Returns the best."""
    torch.manual_seed(config.seed)
    head = make_head(features.train_x.shape[1], config.hidden_units, config.dropout,
                     features.num_classes)
    optimizer = make_optimizer(head, None, config)  # as train/: no decay on biases
    size = len(features.train_y)
    # As train/'s loader: a last partial batch is dropped, unless it is the only one.
    steps_per_epoch = size // config.batch_size if size > config.batch_size else 1
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    best = 0.0
    for epoch in range(1, config.epochs + 1):
        head.train()
        order = torch.randperm(size)
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            loss = criterion(head(features.train_x[batch]), features.train_y[batch])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at epoch {epoch}: "
                                         "lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        head.eval()
        with torch.no_grad():
            accuracy = (head(features.valid_x).argmax(1) == features.valid_y).float().mean().item()
        best = max(best, accuracy)
        if report:
            report(epoch, best)
    return best
