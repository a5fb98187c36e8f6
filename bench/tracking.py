"""What recording a job in MLflow costs the job, against no tracking.

    python -m bench.tracking [--rounds 3] [--epochs 3]

The demo's data (generated) and hyperparameters, each job a real `python -m train.train`. Three
set-ups, interleaved round by round (each round in another order) so that drift hits all alike:
  off   no MLFLOW_TRACKING_URI
  on    a local MLflow server (scripts/local_mlflow.py: SQLite, artifacts sent through the
        server): parameters at the start, each epoch's figures and rule counts, the reports and
        the model (a pyfunc with the serving code) at the end
  dead  MLFLOW_TRACKING_URI at a port where nothing listens: the server is gone
Reports the medians of the training loop's time (the epochs' epoch_time, summed: what tracking
must never slow, since it logs from a background thread) and of the whole job's wall time
(which, tracked, includes waiting for the reports and the model to reach the server), and the
ratios to off. Results also go to bench/results/tracking.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import RESULTS
from scripts import local_mlflow
from scripts.local_endpoint import free_port
from scripts.make_demo_data import generate

ROOT = Path(__file__).resolve().parent.parent


def job(data: Path, out: Path, epochs: int, tracking_uri: str | None) -> dict:
    hyperparameters = {**json.loads((ROOT / "scripts" / "demo_hyperparameters.json").read_text()),
                       "epochs": str(epochs)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if tracking_uri:
        env.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_EXPERIMENT_NAME="bench")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "train.train", "--data-dir", str(data),
                    "--output-root", str(out), "--cache-dir", str(data.parent / "cache"),
                    *[arg for k, v in hyperparameters.items() for arg in (f"--{k}", v)]],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    history = json.loads((out / "output" / "data" / "history.json").read_text())
    return {"loop_s": sum(h["epoch_time"] for h in history), "job_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = generate(tmp / "data")
        server, url = local_mlflow.start(tmp / "mlflow")
        try:
            job(data, tmp / "warm-up", 1, None)  # the image cache, before any timing
            uris = {"off": None, "on": url, "dead": f"http://127.0.0.1:{free_port()}"}
            runs = {setup: [] for setup in uris}
            for round_ in range(args.rounds):
                order = list(uris)[round_ % 3:] + list(uris)[:round_ % 3]
                for setup in order:
                    runs[setup].append(job(data, tmp / f"{setup}-{round_}", args.epochs,
                                           uris[setup]))
        finally:
            local_mlflow.stop(server)
    medians = {setup: {key: statistics.median(r[key] for r in results)
                       for key in ("loop_s", "job_s")} for setup, results in runs.items()}
    ratios = {setup: {key: medians[setup][key] / medians["off"][key] for key in ("loop_s", "job_s")}
              for setup in ("on", "dead")}
    for setup, figures in medians.items():
        print(f"{setup:>4}: training loop {figures['loop_s']:.1f} s, "
              f"whole job {figures['job_s']:.1f} s")
    for setup, ratio in ratios.items():
        print(f"{setup} / off: loop {ratio['loop_s']:.2f}x, job {ratio['job_s']:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracking.json").write_text(json.dumps(
        {"rounds": args.rounds, "epochs": args.epochs, "runs": runs, "medians": medians,
         "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
