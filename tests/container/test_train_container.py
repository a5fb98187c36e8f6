"""The training image, run exactly as SageMaker runs it: /opt/ml mounted, hostname algo-1, `train`."""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

from artifact.manifest import read_manifest
from scripts.local_training_job import docker_command, prepare_job
from tests.conftest import ROOT, TINY
from train.metrics import parse_metrics

DEMO_HYPERPARAMETERS = json.loads((ROOT / "scripts" / "demo_hyperparameters.json").read_text())


def test_trains_the_demo_data_to_95_percent(demo_job):
    job, log = demo_job
    assert (job / "output" / "success").exists() and not (job / "output" / "failure").exists()
    metrics = parse_metrics(log)
    assert len(metrics["valid:accuracy"]) == int(DEMO_HYPERPARAMETERS["epochs"])
    assert metrics["test:top1"][0] >= 0.95, log[-3000:]
    manifest = read_manifest(job / "model")
    assert manifest.name == "demo-shapes" and manifest.onnx_max_abs_diff < 1e-3
    assert {p.name for p in (job / "model").iterdir()} == {
        "manifest.json", "model.safetensors", "model.onnx", "model.int8.onnx", "baseline.json"}
    for name in ("evaluation.json", "confusion_matrix.png", "misclassified.csv", "data_report.json"):
        assert (job / "output" / "data" / name).is_file()


def test_every_job_writes_the_tensorboard_record_and_judges_the_rules(demo_job):
    from tensorboard.backend.event_processing import event_accumulator

    job, log = demo_job
    assert not (job / "input" / "config" / "debughookconfig.json").exists()
    assert not (job / "output" / "tensors").exists()  # no smdebug without SageMaker's hook
    record = job / "output" / "tensorboard"  # TensorBoardOutputConfig's LocalPath
    events = event_accumulator.EventAccumulator(str(record)).Reload()
    epochs = int(DEMO_HYPERPARAMETERS["epochs"])
    assert len(events.Scalars("loss/train")) == epochs * (240 // 32)  # every step
    assert list(record.glob("*.pt.trace.json"))  # torch.profiler's trace, for its plugin
    verdicts = {v["rule"]: v for v in json.loads((job / "output/data/rule_report.json").read_text())}
    assert len(verdicts) == 16 and verdicts["exploding_tensor"]["status"] == "NoIssuesFound"
    # The demo trains as long as its data needs: a newcomer's first run reports no issue (longer,
    # loss_not_decreasing and overtraining rightly say it trains on past convergence).
    assert [rule for rule, v in verdicts.items() if v["status"] == "IssuesFound"] == []
    metrics = parse_metrics(log)
    assert len(metrics["rule:exploding_tensor"]) == epochs + 1  # every epoch, and at the end
    assert metrics["rule:overtraining"][-1] == verdicts["overtraining"]["issues"]
    report = (job / "output" / "data" / "training_report.html").read_text()
    assert report.count('class="plot"') == 4
    assert "rules over /opt/ml/output/tensorboard" in log


def test_a_sagemaker_debugger_job_saves_the_trial_and_a_rule_action_stops_it(train_image,
                                                                             demo_data, tmp_path):
    """An account that still has SageMaker Debugger: the hook config SageMaker writes makes the
    job save an smdebug trial too. A learning rate of 0 never lowers the loss; the job's
    rule_actions stop it when loss_not_decreasing fires, and it still exports its best model."""
    from debugger.rules import SmdebugTrial

    job = tmp_path / "job"
    prepare_job(job, demo_data, {
        **TINY, "epochs": "6", "lr": "0", "rule_actions": {"loss_not_decreasing": "stop"},
        "rule_parameters": {"loss_not_decreasing": {"num_steps": 4}}}, debugger_save_interval=0)
    result = subprocess.run(docker_command(train_image, job, demo_data), capture_output=True,
                            text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "rule_actions: loss_not_decreasing fired, so training stops after epoch" in log
    history = json.loads((job / "output" / "data" / "history.json").read_text())
    assert len(history) < 6 and (job / "output" / "success").exists()
    assert read_manifest(job / "model").metrics["epochs_run"] == len(history)
    verdicts = {v["rule"]: v for v in json.loads((job / "output/data/rule_report.json").read_text())}
    assert verdicts["loss_not_decreasing"]["stopped_training"] is True
    trial = SmdebugTrial(str(job / "output" / "tensors"))  # where SageMaker's config points
    assert len(trial.train_losses()) == len(history) * (240 // 16)


def test_missing_channel_fails_with_the_reason_in_the_failure_file(train_image, tmp_path):
    """Also runs the image with no command, as SDK v3 does: CMD must be `train`."""
    job = tmp_path / "job"
    prepare_job(job, tmp_path / "no-data", TINY)
    cmd = docker_command(train_image, job, tmp_path / "no-data")[:-1]  # drop "train"
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    failure = (job / "output" / "failure").read_text()
    assert failure.startswith("no 'train' channel")
    assert "estimator.fit(" in failure and "Traceback" in failure


def test_bad_hyperparameter_fails_listing_the_valid_ones(train_image, demo_data, tmp_path):
    job = tmp_path / "job"
    prepare_job(job, demo_data, {**TINY, "batch_size": "large"})
    result = subprocess.run(docker_command(train_image, job, demo_data), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1
    failure = (job / "output" / "failure").read_text()
    assert "batch_size='large': expected an integer" in failure and "Valid hyperparameters" in failure


def docker_logs(name: str) -> str:
    result = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
    return result.stdout + result.stderr


def test_jobs_sharing_a_checkpoint_prefix_keep_apart_and_a_stopped_job_resumes(train_image,
                                                                             demo_data, tmp_path):
    """One host folder plays the checkpoint S3 prefix, which SageMaker syncs into every job that
    names it. Job A finishes. Job B (another head, lr and epoch count) must train from scratch
    and leave A's checkpoint alone; stopped as a spot interruption stops it (SIGTERM to PID 1),
    B started again under its own name resumes its own checkpoint and finishes its epochs.
    B's rule_parameters are a dict, written as SDK v2 writes one (its str(): a Python repr)."""
    prefix = tmp_path / "checkpoint-prefix"
    job_a = tmp_path / "job-a"
    prepare_job(job_a, demo_data, {**TINY, "epochs": "3"})
    first = subprocess.run(docker_command(train_image, job_a, demo_data, job_name="job-a",
                                          checkpoints=prefix),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:]
    a_checkpoint = (prefix / "job-a" / "checkpoint.pt").read_bytes()

    job_b, name = tmp_path / "job-b", f"byoc-test-{uuid.uuid4().hex[:8]}"
    prepare_job(job_b, demo_data, {
        **TINY, "epochs": "4", "batch_size": "8", "lr": "0.01", "hidden_units": "[24]",
        "rule_parameters": {"dataloader_bound": {"threshold": 0.0, "wait_fraction": 0.0}}})
    job = {"job_name": "job-b", "checkpoints": prefix}
    subprocess.run(docker_command(train_image, job_b, demo_data, name=name, detach=True, **job),
                   check=True, capture_output=True)
    try:
        deadline = time.time() + 300
        while "epoch 2 step 5/" not in docker_logs(name):
            assert time.time() < deadline, "training never reached epoch 2"
            time.sleep(0.5)
        subprocess.run(["docker", "stop", "-t", "120", name], check=True, capture_output=True)
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", name],
                               capture_output=True, text=True).stdout.strip()
        stopped_log = docker_logs(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert state == "1", stopped_log[-3000:]
    assert "resumed from" not in stopped_log
    assert "other jobs' checkpoints, left alone: job-a" in stopped_log
    assert "stopped by SIGTERM" in (job_b / "output" / "failure").read_text()
    assert (prefix / "job-b" / "checkpoint.pt").is_file()
    assert (prefix / "job-a" / "checkpoint.pt").read_bytes() == a_checkpoint

    second = subprocess.run(docker_command(train_image, job_b, demo_data, **job),
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "resumed from /opt/ml/checkpoints/job-b at epoch 2" in second.stdout
    assert not (job_b / "output" / "failure").exists()
    history = json.loads((job_b / "output" / "data" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert read_manifest(job_b / "model").hidden_units == [24]
    assert (prefix / "job-a" / "checkpoint.pt").read_bytes() == a_checkpoint
    verdicts = {v["rule"]: v for v in json.loads((job_b / "output/data/rule_report.json").read_text())}
    assert "(limit 0%" in verdicts["dataloader_bound"]["why"]  # the job's own threshold


def test_the_rules_fire_on_broken_training_in_the_container(train_image, demo_data, tmp_path):
    """Training made to go wrong, in the image as SageMaker runs it: long training on a tiny
    split overfits and stops lowering its loss; an enormous learning rate explodes (the job fails
    saying why, and its rules are judged all the same)."""
    from scripts.make_demo_data import generate

    tiny = generate(tmp_path / "tiny", {"train": 2, "valid": 10, "test": 1})
    job = tmp_path / "overfit"
    prepare_job(job, tiny, {**TINY, "epochs": "25", "batch_size": "4", "dropout": "0",
                            "label_smoothing": "0", "export_onnx": "false",
                            "drift_baseline": "false"})
    result = subprocess.run(docker_command(train_image, job, tiny), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    verdicts = {v["rule"]: v for v in json.loads((job / "output/data/rule_report.json").read_text())}
    assert verdicts["overfit"]["status"] == "IssuesFound"
    assert verdicts["loss_not_decreasing"]["status"] == "IssuesFound"

    job = tmp_path / "explode"
    prepare_job(job, demo_data, {**TINY, "lr": "1000000"})
    result = subprocess.run(docker_command(train_image, job, demo_data), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1
    assert "the training loss became" in (job / "output" / "failure").read_text()
    verdicts = {v["rule"]: v for v in json.loads((job / "output/data/rule_report.json").read_text())}
    assert verdicts["exploding_tensor"]["status"] == "IssuesFound"


def test_a_spot_restart_as_sagemaker_restores_it_has_the_record_verdicts_and_report_of_a_job_left_alone(
        train_image, demo_data, tmp_path):
    """A spot interruption as SageMaker makes it: `docker stop` (SIGTERM) during epoch 3. The
    restart is a new container of the same job name whose /opt/ml/output and /opt/ml/model
    are empty: only the checkpoint prefix comes back. Its verdicts, rule counts, report and
    record (read over both containers' files, as the job's TensorBoard S3 prefix holds them)
    are those of the same job left alone; wall-clock figures need only be there."""
    from debugger.rules import RULE_FUNCTIONS
    from tests.unit.test_debugger import as_the_prefix_holds, assert_the_same_record_and_verdicts

    hyperparameters = {**TINY, "epochs": "4", "record_interval": "5", "profiler_interval": "0.1"}

    def job(name: str, job_name: str, checkpoints=None, detach=False, container=None):
        folder = tmp_path / name
        prepare_job(folder, demo_data, hyperparameters)
        command = docker_command(train_image, folder, demo_data, job_name=job_name,
                                 checkpoints=checkpoints, detach=detach, name=container)
        return folder, command

    def finished(folder) -> tuple[dict, str]:
        report = json.loads((folder / "output/data/rule_report.json").read_text())
        return {v["rule"]: {k: x for k, x in v.items() if k != "stopped_training"}
                for v in report}, (folder / "output/data/training_report.html").read_text()

    alone, command = job("alone", "byoc-alone")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    alone_log = result.stdout + result.stderr
    alone_verdicts, alone_report = finished(alone)

    prefix, container = tmp_path / "checkpoint-prefix", f"byoc-test-{uuid.uuid4().hex[:8]}"
    first, command = job("first", "byoc-spot", prefix, detach=True, container=container)
    subprocess.run(command, check=True, capture_output=True)
    try:
        deadline = time.time() + 300
        while "epoch 3 step 5/" not in docker_logs(container):
            assert time.time() < deadline, "training never reached epoch 3"
            time.sleep(0.2)
        subprocess.run(["docker", "stop", "-t", "120", container], check=True,
                       capture_output=True)
        stopped_log = docker_logs(container)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    assert "stopped by SIGTERM during epoch 3" in (first / "output" / "failure").read_text()
    assert not (first / "output/data/history.json").exists(), stopped_log[-3000:]  # it stopped

    second, command = job("second", "byoc-spot", prefix)  # a new /opt/ml: output, model empty
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "resumed from /opt/ml/checkpoints/byoc-spot at epoch 3" in log
    assert "record: the steps before the checkpoint restored" in log
    verdicts, report = finished(second)
    record = as_the_prefix_holds(first / "output/tensorboard", second / "output/tensorboard",
                                 into=tmp_path / "tensorboard-prefix")
    assert_the_same_record_and_verdicts(record, verdicts, alone / "output/tensorboard",
                                        alone_verdicts)
    def last_counts(text: str) -> str:  # the rules' issue counts, as the job's end logs them
        return [line for line in text.splitlines() if "#metrics issues_" in line][-1].split(
            "#metrics ")[1]

    assert last_counts(log) == last_counts(alone_log)

    def tensor_rule_rows(html: str) -> list[str]:  # the report's table of the tensor rules
        return [row for row in re.findall(r'<tr class="[^"]*"><td>\w+</td>.*?</tr>', html)
                if re.search(r"<td>(\w+)</td>", row)[1] in RULE_FUNCTIONS]

    assert tensor_rule_rows(report) == tensor_rule_rows(alone_report)
    assert len(tensor_rule_rows(report)) == len(RULE_FUNCTIONS)
    assert "<tr><td>epochs run</td><td>4</td></tr>" in report
