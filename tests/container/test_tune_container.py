"""The local tuner's best configuration, as written, trains in the training container."""
from __future__ import annotations

import json
import subprocess

from artifact.manifest import read_manifest
from scripts.local_training_job import docker_command, prepare_job
from tests.unit.test_tune_local import FIXED
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
    hyperparameters = json.loads((job / "input" / "config" / "hyperparameters.json").read_text())
    assert hyperparameters == best
