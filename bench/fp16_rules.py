"""The rules on a real GPU's fp16 training, for a machine that has one (a T4, as the default
ml.g4dn.xlarge, or any CUDA GPU: bench/fp16_rules.py forces float16 with loss scaling).

    python -m bench.fp16_rules [--epochs 3] [--initial-loss-scale 65536] [--lr 0.003]

Trains resnet18 on generated shapes (64 px, 40 images per class) with train/train.py on CUDA,
float16 autocast and GradScaler from the given scale (65536 is GradScaler's own start, where the
first steps often overflow), and prints what the rules said and what loss scaling did: the
steps it skipped and the scale it settled on. A healthy run must fire neither exploding_tensor
nor weight_update_ratio; --lr 1e6 makes one that diverges, where exploding_tensor must fire.
Results also go to bench/results/fp16_rules.json. Exits 2 without a CUDA device.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

from bench import RESULTS
from scripts.make_demo_data import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--initial-loss-scale", type=float, default=2.0 ** 16)
    parser.add_argument("--lr", type=float, default=0.003)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    from tensorboard.backend.event_processing import event_accumulator

    from train import train

    # float16 with loss scaling whatever the GPU (bfloat16 on compute capability 8.0+ has none)
    precision = train.Precision(torch.float16, "cuda", args.initial_loss_scale)
    train.Precision.choose = staticmethod(lambda device, amp: precision)
    with tempfile.TemporaryDirectory() as work:
        data = generate(Path(work) / "data", {"train": 40, "valid": 10, "test": 5})
        out = Path(work) / "run"
        code = train.main(["--data-dir", str(data), "--output-root", str(out),
                           "--cache-dir", str(Path(work) / "cache"), "--weights", "none",
                           "--finetune_blocks", "-1", "--image_size", "64",
                           "--epochs", str(args.epochs), "--lr", str(args.lr),
                           "--export_onnx", "false", "--log_every_steps", "50"])
        verdicts = json.loads((out / "output" / "data" / "rule_report.json").read_text())
        events = event_accumulator.EventAccumulator(
            str(out / "output" / "tensorboard"), {event_accumulator.SCALARS: 0}).Reload()
        scalars = events.Tags()["scalars"]
        skipped = [e.step for e in events.Scalars("amp/overflow")] if "amp/overflow" in \
            scalars else []
        scales = [e.value for e in events.Scalars("amp/loss_scale")] if "amp/loss_scale" in \
            scalars else []
    result = {"device": torch.cuda.get_device_name(), "exit_code": code,
              "initial_loss_scale": args.initial_loss_scale, "lr": args.lr,
              "skipped_steps": skipped, "final_loss_scale": scales[-1] if scales else None,
              "verdicts": {v["rule"]: {"status": v["status"], "why": v["why"]}
                           for v in verdicts}}
    print(f"{result['device']}: exit {code}; loss scaling skipped steps {skipped}, scale "
          f"{args.initial_loss_scale:g} -> {result['final_loss_scale']}")
    for rule, verdict in result["verdicts"].items():
        print(f"  {rule:<28} {verdict['status']:<14} {verdict['why']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fp16_rules.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
