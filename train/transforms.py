"""Per-image transforms on uint8 CHW tensors (in DataLoader workers) and batch normalisation on the
device. Workers ship uint8, a quarter of float32's bytes; the float maths runs where the model is.

The eval path (cached resize + centre crop + Normalizer) equals artifact.preprocess.eval_input,
which the server uses; tests/unit/test_data.py checks it.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

# Gentler than ImageNet's 0.08: fine-tuning sets are small and a crop must keep the subject.
MIN_CROP_SCALE = 0.25


def train_transform(image_size: int):
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(MIN_CROP_SCALE, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    )


def eval_transform(image_size: int):
    return v2.CenterCrop(image_size)


class Normalizer:
    """uint8 NCHW batch -> float32 (or channels_last) standardised batch on the device."""

    def __init__(self, mean, std, device: torch.device, channels_last: bool):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True).float()
        images = (images - self.mean) / self.std
        return images.contiguous(memory_format=self.memory_format)
