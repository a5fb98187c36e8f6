"""Trial speed of the local tuner with and without the backbone-feature cache, on the demo data.

    python -m bench.tuning_trials [--slow-trials 3] [--fast-trials 20] [--epochs 5]

Both studies tune the same search space with the backbone frozen (finetune_blocks=0) and the
demo's settings (resnet18, 64 px): the baseline runs every trial through train.train (the
normal path, images already decoded into the shared cache), the fast one trains the head on
features computed once. Reports seconds per completed trial (median), trials per minute, the
one-time feature extraction, and the ratios.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench import RESULTS
from scripts.make_demo_data import generate
from tune import local



def study(data: Path, out: Path, trials: int, fixed: dict, space: Path, fast: bool) -> dict:
    started = time.perf_counter()
    args = ["--data", str(data), "--trials", str(trials), "--out", str(out), "--space", str(space),
            *[f"--hp={k}={v}" for k, v in fixed.items()]]
    local.main(args + (["--fast"] if fast else []))
    wall = time.perf_counter() - started
    with open(out / "trials.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["state"] == "COMPLETE"]
    seconds = statistics.median(float(r["seconds"]) for r in rows)
    return {"wall_s": wall, "completed": len(rows), "median_trial_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow-trials", type=int, default=3)
    parser.add_argument("--fast-trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    fixed = {"architecture": "resnet18", "weights": "none", "image_size": "64",
             "hidden_units": "[]", "epochs": str(args.epochs), "finetune_blocks": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = generate(tmp / "data")
        # The space without finetune_blocks: both studies keep the backbone frozen.
        space = json.loads(local.search_space.DEFAULT_SPACE.read_text())
        space.pop("finetune_blocks")
        (tmp / "space.json").write_text(json.dumps(space))
        slow = study(data, tmp / "slow", args.slow_trials, fixed, tmp / "space.json", fast=False)
        fast = study(data, tmp / "fast", args.fast_trials, fixed, tmp / "space.json", fast=True)
        fast["extraction_s"] = fast["wall_s"] - fast["median_trial_s"] * args.fast_trials
    per_trial = slow["median_trial_s"] / fast["median_trial_s"]
    amortised = slow["median_trial_s"] / (fast["wall_s"] / args.fast_trials)
    results = {"slow": slow, "fast": fast, "per_trial_ratio": per_trial,
               "amortised_ratio": amortised, "settings": fixed}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tuning_trials.json").write_text(json.dumps(results, indent=2))
    print(f"demo data (240 train / 60 valid images), resnet18 frozen, 64 px, {args.epochs} epochs per trial")
    print(f"normal path:   {slow['median_trial_s']:7.2f} s per trial  "
          f"({60 / slow['median_trial_s']:7.1f} trials/min), {slow['completed']} completed")
    print(f"feature cache: {fast['median_trial_s']:7.2f} s per trial  "
          f"({60 / fast['median_trial_s']:7.1f} trials/min), {fast['completed']} completed; "
          f"study of {args.fast_trials} took {fast['wall_s']:.1f} s including the one-time extraction")
    print(f"per trial: {per_trial:.1f}x faster; with the extraction spread over the study: {amortised:.1f}x")


if __name__ == "__main__":
    main()
