"""train.train end to end on the host, as a subprocess (exit codes, files and log as SageMaker sees them)."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime
import pytest
import torch

from artifact.manifest import read_manifest
from artifact.network import load_trained
from artifact.preprocess import eval_input
from tests.conftest import ROOT, tiny_args
from train.metrics import OBJECTIVE_METRIC, parse_metrics


def train_cmd(data, out, *extra, **overrides):
    return [sys.executable, "-m", "train.train", "--data-dir", str(data), "--output-root", str(out),
            "--cache-dir", str(out / "cache"), *tiny_args(**overrides), *extra]


def run_training(data, out, *extra, **overrides):
    return subprocess.run(train_cmd(data, out, *extra, **overrides), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_training_writes_a_complete_artifact(small_data, tmp_path):
    out = tmp_path / "run"
    result = run_training(small_data, out)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = parse_metrics(result.stdout)
    assert len(metrics["train:loss"]) == len(metrics["valid:accuracy"]) == 2
    assert len(metrics["test:top1"]) == 1 and 0 <= metrics["test:top5"][0] <= 1

    model_dir = out / "model"
    manifest = read_manifest(model_dir)
    assert manifest.classes == sorted(p.name for p in (small_data / "train").iterdir())
    assert manifest.architecture == "resnet18" and manifest.hidden_units == [16]
    assert manifest.preprocessing.image_size == 32 and manifest.versions["torch"] == torch.__version__
    assert manifest.onnx_max_abs_diff < 1e-3
    assert manifest.metrics["test_top1"] == pytest.approx(metrics["test:top1"][0], abs=1e-4)

    # The folder alone is enough: rebuild from the manifest, and agree with ONNX Runtime.
    model = load_trained(model_dir, manifest)
    image = next((small_data / "test").rglob("*.png"))
    x = eval_input(image.read_bytes(), manifest.preprocessing)[None]
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x)).numpy()
    session = onnxruntime.InferenceSession(str(model_dir / "model.onnx"))
    onnx_logits = session.run(None, {"images": np.concatenate([x, x])})[0]
    np.testing.assert_allclose(onnx_logits[1:], torch_logits, atol=1e-4)

    data_dir = out / "output" / "data"
    for name in ("evaluation.json", "confusion_matrix.png", "misclassified.csv",
                 "training_curves.png", "history.json", "data_report.json"):
        assert (data_dir / name).is_file(), name
    evaluation = json.loads((data_dir / "evaluation.json").read_text())
    assert evaluation["images"] == 18 and len(evaluation["per_class"]) == 6
    quality = evaluation["multiclass_classification_metrics"]  # what the model registry shows
    assert quality["accuracy"]["value"] == pytest.approx(evaluation["test_top1"])
    assert sum(map(sum, (row.values() for row in quality["confusion_matrix"].values()))) == 18
    assert not (out / "output" / "failure").exists()


def test_model_quality_in_sagemakers_multiclass_format():
    from train.evaluate import model_quality

    quality = model_quality(np.array([[3, 1], [0, 4]]), ["cat", "dog"])
    assert quality["accuracy"]["value"] == 0.875
    assert quality["accuracy"]["standard_deviation"] == pytest.approx(0.1169, abs=1e-4)
    # F1: cat 6/7 (precision 1, recall 3/4), dog 8/9 (precision 4/5, recall 1), 4 images each.
    assert quality["weighted_f1"]["value"] == pytest.approx((6 / 7 + 8 / 9) / 2)
    assert quality["confusion_matrix"] == {"cat": {"cat": 3, "dog": 1}, "dog": {"cat": 0, "dog": 4}}


def test_the_same_config_trains_the_same_model_and_another_seed_another(small_data_master,
                                                                       tmp_path):
    """weights=none: every weight starts from the seed, and augmentations in DataLoader workers
    follow it too, so a rerun (a CI run, a tuning trial repeated) gives the same bytes."""
    from safetensors.torch import load_file

    def weights(name, **overrides):
        out = tmp_path / name
        result = run_training(small_data_master, out, epochs=1, num_workers=2,
                              export_onnx="false", **overrides)
        assert result.returncode == 0, result.stdout + result.stderr
        return load_file(str(out / "model" / "model.safetensors"))

    first, again, other = weights("first"), weights("again"), weights("other", seed=7)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_the_tuning_objective_is_the_best_epochs_when_the_last_is_worse(small_data_master,
                                                                        tmp_path, monkeypatch,
                                                                        caplog):
    """SageMaker's tuner ranks a job by the last value of its objective in the log; the artifact
    holds the best epoch. The loop runs in this process with validation accuracies scripted
    (0.5, 0.9, 0.7), so the last epoch is surely not the best."""
    from train import train

    scripted = iter([(1.0, 0.5, 1.0), (0.8, 0.9, 0.8), (0.9, 0.7, 0.9)])
    monkeypatch.setattr(train, "evaluate", lambda training, loader: next(scripted))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # leave pytest's handlers alone
    out = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="train")
    code = train.main(train_cmd(small_data_master, out, epochs=3, export_onnx="false")[3:])
    log = caplog.text
    assert code == 0, log[-3000:]
    metrics = parse_metrics(log)
    assert metrics["valid:accuracy"] == [0.5, 0.9, 0.7]  # what the tuner used to rank by: 0.7
    assert metrics[OBJECTIVE_METRIC] == [0.5, 0.9, 0.9]  # every epoch, for early stopping
    manifest = read_manifest(out / "model")
    assert (manifest.metrics["best_valid_acc"], manifest.metrics["best_epoch"]) == (0.9, 2)


def test_the_objective_is_the_shipped_models_own_validation_accuracy(small_data_master, tmp_path):
    out = tmp_path / "run"
    result = run_training(small_data_master, out, epochs=3, lr=0.03)
    assert result.returncode == 0, result.stdout + result.stderr
    objective = parse_metrics(result.stdout)[OBJECTIVE_METRIC][-1]
    manifest = read_manifest(out / "model")
    assert manifest.metrics["best_valid_acc"] == pytest.approx(objective, abs=1e-4)
    model = load_trained(out / "model", manifest)
    images = sorted((small_data_master / "valid").glob("*/*"))
    inputs = np.stack([eval_input(p.read_bytes(), manifest.preprocessing) for p in images])
    with torch.no_grad():
        predicted = model(torch.from_numpy(inputs)).argmax(1).tolist()
    correct = sum(manifest.classes[i] == p.parent.name for i, p in zip(predicted, images))
    assert correct / len(images) == pytest.approx(objective, abs=1e-4)


def test_a_corrupt_image_is_skipped_and_reported(small_data, tmp_path):
    (small_data / "train" / "003.Blue_triangle" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"x" * 100)
    result = run_training(small_data, tmp_path / "run", epochs=1)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "run" / "output" / "data" / "data_report.json").read_text())
    assert [s["file"].endswith("broken.jpg") for s in report["train"]["skipped"]] == [True]
    assert report["train"]["images"] == 48


@pytest.mark.parametrize("damage,expected", [
    (lambda d: os.rename(d / "valid", d / "elsewhere"), "no validation channel"),
    (lambda d: os.rename(d / "test" / "001.Red_disc", d / "test" / "001.Red_dot"), "class folders differ"),
])
def test_bad_data_fails_with_a_reason_in_the_failure_file(small_data, tmp_path, damage, expected):
    damage(small_data)
    result = run_training(small_data, tmp_path / "run")
    assert result.returncode == 1
    failure = (tmp_path / "run" / "output" / "failure").read_text()
    first_line = failure.splitlines()[0]
    assert expected in first_line
    assert "Traceback" in failure


def test_bad_hyperparameter_fails_listing_the_valid_ones(small_data, tmp_path):
    result = run_training(small_data, tmp_path / "run", "--learning-rate", "0.1")
    assert result.returncode == 1
    failure = (tmp_path / "run" / "output" / "failure").read_text()
    assert "unknown hyperparameter 'learning-rate'" in failure and "lr: float" in failure


def test_nan_loss_fails_with_advice(small_data, tmp_path):
    result = run_training(small_data, tmp_path / "run", lr=1e30, epochs=3)
    assert result.returncode == 1
    assert "lower lr" in (tmp_path / "run" / "output" / "failure").read_text()


def wait_for(process, text, timeout=300):
    """Read the process's output until a line contains text; return everything read."""
    seen, deadline = [], time.time() + timeout
    for line in process.stdout:
        seen.append(line)
        if text in line or time.time() > deadline:
            break
    return "".join(seen)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_run_resumes_without_repeating_an_epoch(small_data, tmp_path, sig):
    """Spot interruption: SIGTERM checkpoints mid-epoch; SIGKILL falls back to the last epoch's."""
    out = tmp_path / "run"
    cmd = train_cmd(small_data, out, epochs=5, batch_size=4)
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    before = wait_for(first, "epoch 2 step 3/")
    first.send_signal(sig)
    before += first.communicate(timeout=300)[0]
    assert (out / "checkpoints" / "local-run" / "checkpoint.pt").is_file()
    if sig == signal.SIGTERM:
        assert first.returncode == 143, before
        assert "stopped by SIGTERM" in (out / "output" / "failure").read_text()
    assert "#metrics epoch=5" not in before

    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed from" in second.stdout
    history = json.loads((out / "output" / "data" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    epochs_logged = [int(line.split("epoch=")[1].split()[0])
                     for line in (before + second.stdout).splitlines() if "#metrics epoch=" in line]
    assert sorted(epochs_logged) == [1, 2, 3, 4, 5]  # each epoch finished exactly once


def test_a_checkpoint_of_the_same_job_with_other_hyperparameters_is_not_resumed(small_data,
                                                                                tmp_path):
    """A rerun of an unfinished job in the same folder (the same job name) asking for another lr
    must not continue the old run and call it the new one: it fails, naming what differs, and
    keeps the checkpoint. Once the job has finished, the same rerun is a new job: it trains
    afresh, and says so."""
    out = tmp_path / "run"
    first = subprocess.Popen(train_cmd(small_data, out, epochs=2, log_every_steps=1), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(first, "epoch 2 step 1/")
    first.kill()
    first.communicate(timeout=60)
    checkpoint = (out / "checkpoints" / "local-run" / "checkpoint.pt").read_bytes()
    second = run_training(small_data, out, epochs=2, lr=0.01, log_every_steps=5)
    assert second.returncode == 1
    failure = (out / "output" / "failure").read_text().splitlines()[0]
    assert "lr 0.003 -> 0.01" in failure and "log_every_steps" not in failure, failure
    assert (out / "checkpoints" / "local-run" / "checkpoint.pt").read_bytes() == checkpoint

    finished = run_training(small_data, out, epochs=2, log_every_steps=1)
    assert finished.returncode == 0 and "resumed from" in finished.stdout, finished.stdout[-3000:]
    again = run_training(small_data, out, epochs=1, lr=0.01)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "that finished: this one trains afresh" in again.stdout
    assert "resumed from" not in again.stdout
    assert [h["epoch"] for h in json.loads((out / "output/data/history.json").read_text())] == [1]


def distributed_cmd(data, out, **overrides):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", "29517", *train_cmd(data, out, **overrides)[1:]]


def worker_ranks(process) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes."""
    import psutil

    ranks = {}
    for child in psutil.Process(process.pid).children(recursive=True):
        try:
            rank = child.environ().get("RANK")
        except psutil.Error:
            continue
        if rank is not None and "train.train" in " ".join(child.cmdline()):
            ranks[int(rank)] = child.pid
    return ranks


def test_sigterm_to_one_distributed_rank_stops_both_at_one_step_and_rank_0_saves(small_data,
                                                                                 tmp_path):
    """Ranks see SIGTERM at different steps. Here only rank 1 sees it at all: rank 0 must still
    stop at the same step, save the checkpoint, and the rerun must finish exactly the epochs."""
    out = tmp_path / "run"
    cmd = distributed_cmd(small_data, out, epochs=4, batch_size=4)
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    before = wait_for(first, "epoch 2 step 2/")
    os.kill(worker_ranks(first)[1], signal.SIGTERM)
    before += first.communicate(timeout=300)[0]
    assert first.returncode != 0
    assert "stopped by SIGTERM during epoch 2" in (out / "output" / "failure").read_text(), before
    saved = torch.load(out / "checkpoints" / "local-run" / "checkpoint.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1 and saved["state"]["consumed"] > 0
    assert "#metrics epoch=2" not in before

    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed from" in second.stdout and "at epoch 2" in second.stdout
    history = json.loads((out / "output" / "data" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


@pytest.mark.parametrize("capability,dtype,loss_scaling", [
    ((7, 5), torch.float16, True),  # T4: the default ml.g4dn.xlarge
    ((7, 0), torch.float16, True),  # V100
    ((8, 6), torch.bfloat16, False),  # A10G
    ((9, 0), torch.bfloat16, False),  # H100
])
def test_bfloat16_only_where_the_gpu_has_it_natively(monkeypatch, capability, dtype, loss_scaling):
    from train.train import Precision

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # torch answers True on a T4 too (emulation): the choice must not rest on it.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    precision = Precision.choose(torch.device("cuda", 0), amp=True)
    assert (precision.dtype, precision.loss_scaling) == (dtype, loss_scaling)
    assert Precision.choose(torch.device("cuda", 0), amp=False).dtype is None
    assert Precision.choose(torch.device("cpu"), amp=True).dtype is None


def test_two_process_distributed_training(small_data, tmp_path):
    """DistributedDataParallel with gloo on 2 CPU processes, end to end; only rank 0 writes."""
    out = tmp_path / "run"
    cmd = distributed_cmd(small_data, out)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("#metrics epoch=2") == 1  # only rank 0 logs metrics
    assert read_manifest(out / "model").onnx_max_abs_diff < 1e-3
    assert len(parse_metrics(result.stdout)["test:top1"]) == 1


def test_a_network_that_cannot_be_quantized_is_exported_in_fp32(tmp_path):
    """An enormous learning rate on a dozen images diverges without a non-finite loss: the
    quantizer cannot calibrate the network. The job still exports its fp32 artifact and says why
    there is no int8 copy, instead of failing on the quantizer's assertion."""
    from scripts.make_demo_data import generate

    data = generate(tmp_path / "data", {"train": 2, "valid": 10, "test": 1})
    out = tmp_path / "run"
    result = run_training(data, out, lr=1e6)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "int8 copy not made (" in result.stdout + result.stderr
    manifest = read_manifest(out / "model")
    assert "int8" not in manifest.precisions and not (out / "model" / "model.int8.onnx").exists()
    assert (out / "model" / "model.onnx").is_file()
