"""tune.local end to end: real (tiny) training runs as trials, a resumable study, failures kept."""
from __future__ import annotations

import csv
import json
import logging

import optuna
import pytest

from scripts.local_endpoint import free_port
from tests.conftest import TINY
from train.config import from_hyperparameters
from tune import local

FIXED = [f"--hp={k}={v}" for k, v in {**TINY, "epochs": "2"}.items()]


def read_trials(out):
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_a_small_study_writes_the_best_configuration_and_resumes(small_data_master, tmp_path):
    out = tmp_path / "tuning"
    assert local.main(["--data", str(small_data_master), "--trials", "3", "--out", str(out), *FIXED]) == 0
    rows = read_trials(out)
    assert len(rows) == 3 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert all(isinstance(v, str) for v in best.values())  # as hyperparameters.json holds them
    config = from_hyperparameters(best)
    assert config.epochs == 2 and config.image_size == 32
    completed = [r for r in rows if r["state"] == "COMPLETE"]
    assert float(best["lr"]) == float(max(completed, key=lambda r: float(r["valid:best_accuracy"]))["lr"])
    for name in ("objective_by_trial.png", "parameter_importance.png", "study.db"):
        assert (out / name).stat().st_size > 0

    # The same storage again: the study goes on where it was.
    assert local.main(["--data", str(small_data_master), "--trials", "1", "--out", str(out), *FIXED]) == 0
    assert [r["trial"] for r in read_trials(out)] == ["0", "1", "2", "3"]
    study = optuna.load_study(study_name="byoc", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 4


def test_failed_trials_are_recorded_with_their_reason(small_data_master, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"type": "categorical", "values": [1e30, 1e31]}}))
    out = tmp_path / "tuning"
    code = local.main(["--data", str(small_data_master), "--trials", "2", "--out", str(out),
                       "--space", str(space), *FIXED, "--hp=epochs=3"])
    assert code == 1  # no trial completed
    rows = read_trials(out)
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
    assert all("training exited with 1" in r["failure"] and "nan" in r["failure"].lower()
               for r in rows), rows


def test_a_trial_past_its_timeout_fails_and_the_study_goes_on(small_data_master, tmp_path):
    out = tmp_path / "tuning"
    code = local.main(["--data", str(small_data_master), "--trials", "2", "--out", str(out),
                       "--trial-timeout-s", "1", *FIXED])
    assert code == 1
    assert [r["failure"] for r in read_trials(out)] == ["ran past the trial timeout of 1 s"] * 2


def test_fast_trials_reuse_cached_features_and_their_best_trains_normally(small_data_master,
                                                                          tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "tuning"
    args = ["--data", str(small_data_master), "--out", str(out), "--fast", *FIXED]
    assert local.main([*args, "--trials", "4"]) == 0
    [features] = (out / "cache").glob("features-*.npz")
    made = features.stat().st_mtime_ns
    assert local.main([*args, "--trials", "2"]) == 0
    assert features.stat().st_mtime_ns == made  # computed once, then read
    rows = read_trials(out)
    assert len(rows) == 6 and "finetune_blocks" not in rows[0]
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["finetune_blocks"] == "0"
    cmd = [sys.executable, "-m", "train.train", "--data-dir", str(small_data_master),
           "--output-root", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    cmd += [arg for k, v in best.items() for arg in (f"--{k}", v)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_fast_trials_refuse_a_space_that_changes_the_features(small_data_master, tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"image_size": {"type": "categorical", "values": [32, 48]}}))
    with pytest.raises(SystemExit) as stopped:
        local.main(["--data", str(small_data_master), "--fast", "--space", str(space), *FIXED])
    assert stopped.value.code == 2
    assert "image_size cannot be tuned with it" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    from scripts import local_mlflow

    process, url = local_mlflow.start(tmp_path_factory.mktemp("mlflow"))
    yield url
    local_mlflow.stop(process)


def study_runs(url: str, experiment: str) -> tuple:
    """The study's run and its trials' runs, by trial number."""
    from mlflow import MlflowClient

    client = MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags["optuna_trial"]): r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert len(runs) == 1 + len(children)
    return parent, children


@pytest.mark.parametrize("fast", [False, True])
def test_a_tracked_study_is_a_run_with_a_run_nested_for_each_trial(small_data_master, tmp_path,
                                                                   mlflow_server, monkeypatch,
                                                                   fast):
    experiment = f"study-{'fast' if fast else 'trained'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    out = tmp_path / "tuning"
    args = ["--data", str(small_data_master), "--out", str(out), *FIXED,
            *(["--fast"] if fast else [])]
    assert local.main([*args, "--trials", "3"]) == 0
    assert local.main([*args, "--trials", "1"]) == 0  # continued: the same study's run
    parent, children = study_runs(mlflow_server, experiment)
    rows = {int(r["trial"]): r for r in read_trials(out)}
    assert sorted(children) == sorted(rows) == [0, 1, 2, 3]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "byoc"
    best = max((r for r in rows.values() if r["state"] == "COMPLETE"),
               key=lambda r: float(r["valid:best_accuracy"]))
    assert parent.data.tags["best_trial"] == best["trial"]
    for number, run in children.items():
        state = rows[number]["state"]
        assert run.data.tags["optuna_state"] == state
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[state]
        assert float(run.data.params["lr"]) == float(rows[number]["lr"])
        assert run.info.run_name == f"trial-{number:04d}"


def test_a_tracked_failed_trial_is_a_failed_run_with_its_reason(small_data_master, tmp_path,
                                                               mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "study-failing")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"type": "categorical", "values": [1e30, 1e31]}}))
    out = tmp_path / "tuning"
    assert local.main(["--data", str(small_data_master), "--trials", "1", "--out", str(out),
                       "--space", str(space), *FIXED, "--hp=epochs=3"]) == 1
    _, children = study_runs(mlflow_server, "study-failing")
    [run] = children.values()
    assert run.info.status == "FAILED" and run.data.tags["optuna_state"] == "FAIL"
    assert "nan" in run.data.tags["failure"].lower()


def test_a_study_whose_server_is_gone_tunes_on_and_says_so_once(small_data_master, tmp_path,
                                                                 monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nobody there
    out = tmp_path / "tuning"
    with caplog.at_level(logging.WARNING):
        assert local.main(["--data", str(small_data_master), "--trials", "2", "--out", str(out),
                           *FIXED, "--fast"]) == 0
    assert [row["state"] for row in read_trials(out)] == ["COMPLETE", "COMPLETE"]
    warnings = [r.getMessage() for r in caplog.records if "without tracking" in r.getMessage()]
    assert len(warnings) == 1 and "cannot be reached or refused" in warnings[0], warnings
