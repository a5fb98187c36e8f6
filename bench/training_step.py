"""Training-step throughput (images/s) for resnet18 and resnet50 at 224 px on this machine.

    python -m bench.training_step [--batch-size 16] [--steps 5]

Synthetic batches (the data pipeline is measured by bench.data_pipeline), forward + backward +
AdamW step, for the two fine-tuning extremes: head only (the default) and the whole network.
Runs on CUDA when present (with bf16 autocast and channels_last, as training does), else the CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from torch import nn

from train.config import TrainConfig
from train.model import create_model, make_optimizer, set_trainable


def steps_per_second(arch: str, finetune_blocks: int, batch: int, steps: int, device) -> float:
    config = TrainConfig(architecture=arch, weights="none", hidden_units=[512])
    model, head = create_model(config, 133)
    set_trainable(model, head, finetune_blocks)
    cuda = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if cuda else torch.preserve_format)
    optimizer = make_optimizer(model, head, config)
    images = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.randint(0, 133, (batch,), device=device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    criterion = nn.CrossEntropyLoss()
    model.train()

    def step():
        with autocast():
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {"device": str(device), "threads": torch.get_num_threads(), "batch": args.batch_size}
    for arch in ("resnet18", "resnet50"):
        for label, blocks in (("head_only", 0), ("full", -1)):
            rate = steps_per_second(arch, blocks, args.batch_size, args.steps, device)
            results[f"{arch}_{label}_images_per_s"] = round(rate, 1)
    for arch in ("resnet18", "resnet50"):
        results[f"{arch}_head_only_vs_full"] = round(
            results[f"{arch}_head_only_images_per_s"] / results[f"{arch}_full_images_per_s"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
