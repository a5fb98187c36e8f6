"""What the job's record, the profiler and the debugger hook cost a training step, against none.

    python -m bench.debugger_overhead [--arch resnet18] [--batch-size 8] [--steps 30] [--rounds 3]

Synthetic 224 px batches, the whole network trained (the most tensors to record), on CUDA when
present, else the CPU. Four set-ups, interleaved round by round (each round starting with
another) so that drift hits all alike:
  baseline  no record, no hook, no profiler
  profiler  the system sampler (1 s) and per-step timing
  record    that, plus the TensorBoard record every job writes (debugger/record.py: the loss, lr
            and classes every step; per-layer statistics, update ratios and activations every
            record_interval steps and each of the first 10), as every training run has them
  hook      (--hook) the profiler and the smdebug hook (SageMaker Debugger accounts) with
            debugger/config.py's default collections: losses
            every step, loss inputs every 10 steps, full tensors (weights, gradients, ReLU
            activations) every 500 steps, which step 0 pays for
smdebug needs protobuf's pure-Python runtime in the whole process, which slows TensorBoard's
writer too: with --hook every set-up runs on it (as a Debugger job does), without it on the native
runtime (as every other job does). Reports the median step time of each over the steps after the record's first 10 (each of which
records everything), the one-off cost of the hook's full save at step 0, and the hook's
overhead amortised over the 500 steps between full saves. Results also go to
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

from bench import RESULTS
from debugger import hook as debug_hook
from debugger import profiler
from debugger.config import collections
from debugger.record import FIRST_STEPS, Recorder
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

    def step(recorder=None, number=0) -> float:
        """One training step, recorded as train/train.py records it."""
        if recorder is not None:
            recorder.start_step(number)
        logits = model(images)
        loss = criterion(logits, labels)
        value = loss.item()  # synchronises, as training's logging does
        if recorder is not None:
            recorder.loss(number, value, logits.argmax(1), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recorder is not None:
            recorder.before_update(number)
        optimizer.step()
        if recorder is not None:
            recorder.after_update(number, 1e-3)
        return value

    model.train()
    step()  # warm-up before any instrumentation
    with tempfile.TemporaryDirectory() as tmp:
        hook = None
        if setup == "hook":
            hook = debug_hook.create("on", model, criterion, Path(tmp) / "tensors")
            debug_hook.set_mode(hook, "train")
        recorder = Recorder(Path(tmp) / "tensorboard" if setup == "record" else None, model, 133)
        recorder.start()
        timer = profiler.Profiler(setup != "baseline", interval=1.0).start()
        times = []
        for number, _ in enumerate(timer.timed(range(steps + 1), epoch=1), start=1):
            started = time.perf_counter()
            timer.end_step(number, step(recorder, number))
            times.append(time.perf_counter() - started)
        debug_hook.close(hook, model, criterion)
        timer.stop()
        recorder.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hook", action="store_true", help="also measure the smdebug hook")
    args = parser.parse_args()
    if args.hook:  # before anything imports protobuf
        debug_hook.import_smdebug()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs: dict[str, list[list[float]]] = {"baseline": [], "profiler": [], "record": []}
    if args.hook:
        runs["hook"] = []
    setups = list(runs)
    for round_ in range(args.rounds):  # each round starts with another set-up: no order bias
        shift = round_ % len(setups)
        for setup in setups[shift:] + setups[:shift]:
            runs[setup].append(step_times(args.arch, setup, args.batch_size, args.steps, device))
    # Median over runs of each run's median step: one slow run (machine noise) moves it little.
    # Steady: past the record's first steps, which record everything.
    steady = {s: statistics.median(statistics.median(r[FIRST_STEPS:]) for r in rs)
              for s, rs in runs.items()}
    first = {s: statistics.median(r[0] for r in rs) for s, rs in runs.items()}
    spread = {s: [round(statistics.median(r[FIRST_STEPS:]) * 1000, 1) for r in rs]
              for s, rs in runs.items()}
    base = steady["baseline"]
    results = {
        "device": str(device), "arch": args.arch, "batch": args.batch_size, "steps": args.steps,
        "rounds": args.rounds, "threads": torch.get_num_threads(),
        "median_step_ms": {s: round(v * 1000, 1) for s, v in steady.items()},
        "median_step_ms_per_run": spread,
        "profiler_vs_baseline": round(steady["profiler"] / base, 3),
        "record_vs_baseline": round(steady["record"] / base, 3),
        "record_vs_baseline_all_steps": round(
            statistics.median(statistics.mean(r) for r in runs["record"])
            / statistics.median(statistics.mean(r) for r in runs["baseline"]), 3),
    }
    if args.hook:
        amortised = (steady["hook"] * (FULL_SAVE_EVERY - 1) + first["hook"]) / FULL_SAVE_EVERY
        results.update({
            "hook_vs_baseline_steady": round(steady["hook"] / base, 3),
            "full_save_extra_s": round(first["hook"] - steady["hook"], 2),
            f"hook_vs_baseline_amortised_over_{FULL_SAVE_EVERY}_steps": round(amortised / base, 3),
        })
    print(json.dumps(results, indent=2))
    out = RESULTS
    out.mkdir(exist_ok=True)
    (out / "debugger_overhead.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
