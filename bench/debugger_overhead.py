"""What the debugger hook and the profiler cost a training step, against no instrumentation.

    python -m bench.debugger_overhead [--arch resnet18] [--batch-size 8] [--steps 30] [--rounds 3]

Synthetic 224 px batches, the whole network trained (the most tensors for the hook), on CUDA when
present, else the CPU. Three set-ups, interleaved round by round (each round starting with another) so that drift hits
all alike:
  baseline  no hook, no profiler
  profiler  the system sampler (1 s) and per-step timing, as every training run has them
  hook      that, plus the smdebug hook with debugger/config.py's default collections: losses
            every step, loss inputs every 10 steps, full tensors (weights, gradients, ReLU
            activations) every 500 steps, which step 0 pays for
Reports the median step time of each, the steady overhead (steps 1..N), the one-off cost of a
full save, and the overhead amortised over the 500 steps between full saves. Results also go to
bench/results/debugger_overhead.json. (torch.profiler's trace, 3 steps early in the first epoch,
is left out: it costs those few steps only.)
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from debugger import hook as debug_hook
from debugger import profiler
from debugger.config import collections
from train.config import TrainConfig
from train.model import create_model, make_optimizer

FULL_SAVE_EVERY = collections()["weights"]["save_interval"]


def step_times(arch: str, setup: str, batch: int, steps: int, device) -> list[float]:
    config = TrainConfig(architecture=arch, weights="none", hidden_units=[512], finetune_blocks=-1)
    model, head = create_model(config, 133)
    model.to(device)
    optimizer = make_optimizer(model, head, config)
    criterion = nn.CrossEntropyLoss()
    images = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.randint(0, 133, (batch,), device=device)

    def step() -> float:
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # synchronises, as training's logging does

    model.train()
    step()  # warm-up before any instrumentation
    with tempfile.TemporaryDirectory() as tmp:
        hook = None
        if setup == "hook":
            hook = debug_hook.create("on", model, criterion, Path(tmp) / "tensors")
            debug_hook.set_mode(hook, "train")
        monitor = profiler.Monitor(setup != "baseline", interval=1.0).start()
        times = []
        for _ in monitor.timed(range(steps + 1), epoch=1):
            started = time.perf_counter()
            monitor.end_step(step())
            times.append(time.perf_counter() - started)
        debug_hook.close(hook, model, criterion)
        monitor.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs: dict[str, list[list[float]]] = {"baseline": [], "profiler": [], "hook": []}
    setups = list(runs)
    for round_ in range(args.rounds):  # each round starts with another set-up: no order bias
        for setup in setups[round_ % 3:] + setups[:round_ % 3]:
            runs[setup].append(step_times(args.arch, setup, args.batch_size, args.steps, device))
    # Median over runs of each run's median step: one slow run (machine noise) moves it little.
    steady = {s: statistics.median(statistics.median(r[1:]) for r in rs) for s, rs in runs.items()}
    first = {s: statistics.median(r[0] for r in rs) for s, rs in runs.items()}
    spread = {s: [round(statistics.median(r[1:]) * 1000, 1) for r in rs] for s, rs in runs.items()}
    base = steady["baseline"]
    full_save_s = first["hook"] - steady["hook"]
    amortised = (steady["hook"] * (FULL_SAVE_EVERY - 1) + first["hook"]) / FULL_SAVE_EVERY
    results = {
        "device": str(device), "arch": args.arch, "batch": args.batch_size, "steps": args.steps,
        "rounds": args.rounds, "threads": torch.get_num_threads(),
        "median_step_ms": {s: round(v * 1000, 1) for s, v in steady.items()},
        "median_step_ms_per_run": spread,
        "profiler_vs_baseline": round(steady["profiler"] / base, 3),
        "hook_vs_baseline_steady": round(steady["hook"] / base, 3),
        "full_save_extra_s": round(full_save_s, 2),
        f"hook_vs_baseline_amortised_over_{FULL_SAVE_EVERY}_steps": round(amortised / base, 3),
    }
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "debugger_overhead.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
