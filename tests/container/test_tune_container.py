"""The local tuner's best configuration, as written, trains in the training container to the
objective the tuner recorded for it."""
from __future__ import annotations

import json
import subprocess

from artifact.manifest import read_manifest
from scripts.local_training_job import docker_command, prepare_job
from tests.unit.test_tune_local import FIXED, read_trials
from train.metrics import OBJECTIVE_METRIC, parse_metrics
from tune import local


def test_the_best_hyperparameters_json_trains_in_the_container(train_image, demo_data, tmp_path):
    out = tmp_path / "tuning"
    assert local.main(["--data", str(demo_data), "--trials", "2", "--out", str(out), *FIXED]) == 0
    best = json.loads((out / "best_hyperparameters.json").read_text())
    job = tmp_path / "job"
    prepare_job(job, demo_data, best)
    result = subprocess.run(docker_command(train_image, job, demo_data), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (job / "output" / "success").exists()
    assert read_manifest(job / "model").hidden_units == [16]
    # A seeded CPU run trains the same weights from the same configuration: the container's
    # objective is the best trial's (within one validation image: the host and the image may
    # round differently in the last bits).
    trials = [r for r in read_trials(out) if r["state"] == "COMPLETE"]
    best_trial = max(trials, key=lambda r: float(r[OBJECTIVE_METRIC]))
    assert float(best["lr"]) == float(best_trial["lr"])
    reached = parse_metrics(result.stdout)[OBJECTIVE_METRIC][-1]
    valid_images = sum(1 for _ in (demo_data / "valid").glob("*/*"))
    assert abs(reached - float(best_trial[OBJECTIVE_METRIC])) <= 1 / valid_images + 1e-6
