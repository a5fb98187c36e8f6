"""The rules, the record and the profiler: real tiny training runs judged by the rules over
their TensorBoard record (and an smdebug trial of the same run), rule actions, the rule command,
the profiler's bottleneck rules, and the HTML report rendered by a real browser."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from debugger import profiler
from debugger.config import collections
from debugger.rules import ISSUES, NO_DATA, NO_ISSUES
from scripts.make_demo_data import generate
from tests.conftest import ROOT, rendered_dom, tiny_args
from tests.unit.test_training import wait_for
from train.metrics import parse_metrics

def hook_config(path, local_path, intervals: dict) -> str:
    """A debughookconfig.json in SageMaker's shape, saving the collections named in intervals."""
    table = collections()
    config = {"LocalPath": str(local_path), "HookParameters": {}, "CollectionConfigurations": [
        {"CollectionName": name, "CollectionParameters": {
            **{k: v for k, v in table[name].items() if not k.endswith("save_interval")},
            "save_interval": str(every)}}
        for name, every in intervals.items()]}
    path.write_text(json.dumps(config))
    return str(path)


def training_command(data, root, checkpoints=None, **values) -> list[str]:
    """train.train into root/out (SageMaker's /opt/ml), its checkpoints there or in
    checkpoints (the prefix SageMaker syncs)."""
    return [sys.executable, "-m", "train.train", "--data-dir", str(data), "--output-root",
            str(root / "out"), "--cache-dir", str(root / "cache"),
            *(["--checkpoint-dir", str(checkpoints)] if checkpoints else []), *tiny_args(**values)]


def run(data, root, intervals=None, checkpoints=None, **overrides):
    """train.train; with intervals, also the smdebug hook configured as SageMaker does it
    (SMDEBUG_CONFIG_FILE_PATH). Returns (result, verdicts by rule from rule_report.json)."""
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    values = {"log_every_steps": 100, "profiler_interval": 0.1, **overrides}
    if intervals is not None:
        env["SMDEBUG_CONFIG_FILE_PATH"] = hook_config(root / "debughookconfig.json",
                                                      root / "tensors", intervals)
        values.setdefault("debugger", "strict")
    cmd = training_command(data, root, checkpoints, **values)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    report = root / "out" / "output" / "data" / "rule_report.json"
    verdicts = {v["rule"]: v for v in json.loads(report.read_text())} if report.is_file() else {}
    return result, verdicts


@pytest.fixture(scope="module")
def twenty_per_class(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("d20") / "data", {"train": 20, "valid": 5, "test": 1})


# The record's tensors every 5 steps (and each of the first 10), the hook's at the same pace: the
# two records of one run see the same training.
RECORD_INTERVAL = 5
BOTH = {"losses": 1, "loss_inputs": 1, "gradients": 5, "weights": 5, "biases": 5,
        "relu_input": 5, "relu_output": 5, "saturation_inputs": 5}


@pytest.fixture(scope="module")
def healthy(twenty_per_class, tmp_path_factory):
    """A short healthy run, stopped (4 epochs) before it converges, writing both records."""
    root = tmp_path_factory.mktemp("healthy")
    result, verdicts = run(twenty_per_class, root, BOTH, epochs=4, record_interval=RECORD_INTERVAL,
                           rule_parameters=json.dumps({"class_imbalance": {"samples": 120}}))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result, verdicts


def issues(verdicts):
    return sorted(name for name, v in verdicts.items() if v["status"] == ISSUES)


# What may fire on the short healthy run, and why; every other rule must not.
MAY_FIRE_WHEN_HEALTHY = {
    # 4 epochs on 120 generated images stop long before the network converges: in the last
    # 120 training samples one class can still be mispredicted more often than not.
    "class_imbalance": "the run stops before it converges",
}


def test_a_short_healthy_run_fires_only_the_rules_it_should(healthy):
    _, result, verdicts = healthy
    assert set(issues(verdicts)) <= set(MAY_FIRE_WHEN_HEALTHY), {
        rule: verdicts[rule]["why"] for rule in issues(verdicts)}
    # Every debugger rule had data to judge, but saturated_activation (a ResNet has no tanh).
    judged = {name for name, v in verdicts.items() if v["status"] in (NO_ISSUES, ISSUES)}
    assert {"vanishing_gradient", "exploding_tensor", "loss_not_decreasing", "overfit",
            "overtraining", "poor_weight_initialization", "dead_relu", "weight_update_ratio",
            "class_imbalance", "dataloader_bound", "step_outlier", "memory_increase"} <= judged
    assert verdicts["saturated_activation"]["status"] == NO_DATA
    assert "rules over" in result.stdout


def test_the_rules_run_every_epoch_and_their_counts_reach_the_metric_definitions(healthy):
    _, result, verdicts = healthy
    metrics = parse_metrics(result.stdout)
    # One line per epoch (the rules judged the record while the job ran), and one at its end.
    assert len(metrics["rule:overfit"]) == 4 + 1
    for rule, verdict in verdicts.items():
        assert metrics[f"rule:{rule}"][-1] == verdict["issues"]
    assert all(v["issues"] == 0 for v in verdicts.values() if v["status"] != ISSUES)


def test_tensorboards_reader_opens_the_record(healthy):
    from tensorboard.backend.event_processing import event_accumulator

    root, _, _ = healthy
    folder = root / "out" / "output" / "tensorboard"
    events = event_accumulator.EventAccumulator(str(folder), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0}).Reload()
    scalars, histograms = events.Tags()["scalars"], events.Tags()["histograms"]
    steps = len(events.Scalars("loss/train"))
    assert steps == 4 * (120 // 16) and len(events.Scalars("lr")) == steps  # every step
    # epoch figures at each epoch's last step: one axis of steps for every tag
    assert [e.step for e in events.Scalars("epoch/valid_acc")] == [7, 14, 21, 28]
    assert len(events.Scalars("loss/valid_pass")) == 4
    recorded = [e.step for e in events.Scalars("gradient/fc.0.weight/mean_abs")]
    assert recorded == [*range(1, 11), 15, 20, 25]
    for prefix in ("weight/fc.0.weight/", "update_ratio/layer1.0.conv1.weight",
                   "relu_input/layer1.0.relu/", "relu_input/layer1.0.relu#2/", "step/",
                   "system/cpu_percent"):
        assert any(t.startswith(prefix) for t in scalars), prefix
    assert {"classes/labels", "relu_activity/relu"} <= set(histograms)
    assert list(folder.glob("*.pt.trace.json"))  # torch.profiler's trace, for its plugin


def test_the_tensorboard_record_and_the_smdebug_trial_give_the_same_verdicts(healthy):
    """One run wrote both records; every debugger rule judges each to the same status."""
    from debugger.rules import SmdebugTrial, TensorBoardRecord, evaluate

    root, _, verdicts = healthy
    params = {"class_imbalance": {"samples": 120}}
    tensorboard = {v.rule: v.status for v in evaluate(
        TensorBoardRecord(root / "out" / "output" / "tensorboard"), params)}
    trial = {v.rule: v.status for v in evaluate(SmdebugTrial(str(root / "tensors")), params)}
    assert trial == tensorboard
    assert tensorboard == {rule: verdicts[rule]["status"] for rule in tensorboard}
    assert {ISSUES, NO_ISSUES} & set(trial.values())  # both judged, not NoData throughout


def test_zero_learning_rate_fires_loss_not_decreasing(twenty_per_class, tmp_path):
    # A flat loss passes each window-to-window comparison by chance half the time: many windows.
    result, verdicts = run(twenty_per_class, tmp_path, epochs=8, lr=0,
                           rule_parameters=json.dumps({"loss_not_decreasing": {"num_steps": 5}}))
    assert result.returncode == 0, result.stdout[-3000:]
    assert verdicts["loss_not_decreasing"]["status"] == ISSUES
    assert verdicts["weight_update_ratio"]["status"] == ISSUES  # nothing moves at all
    assert "exploding_tensor" not in issues(verdicts)


def test_a_rule_action_stops_training(twenty_per_class, tmp_path):
    result, verdicts = run(
        twenty_per_class, tmp_path, epochs=8, lr=0,
        rule_parameters=json.dumps({"loss_not_decreasing": {"num_steps": 3}}),
        rule_actions=json.dumps({"loss_not_decreasing": "stop"}))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "rule_actions: loss_not_decreasing fired, so training stops after epoch" in result.stdout
    history = json.loads((tmp_path / "out/output/data/history.json").read_text())
    assert len(history) < 8
    assert verdicts["loss_not_decreasing"]["stopped_training"] is True
    assert not any(v["stopped_training"] for r, v in verdicts.items() if r != "loss_not_decreasing")
    from artifact.manifest import read_manifest

    manifest = read_manifest(tmp_path / "out" / "model")
    assert manifest.metrics["epochs_run"] == len(history)
    report = (tmp_path / "out/output/data/training_report.html").read_text()
    assert "stopped early by rule loss_not_decreasing" in report


def in_process(data, out, monkeypatch, caplog, **overrides) -> tuple[int, dict]:
    """train.main in this process (the tests swap a piece of it); (exit code, verdicts)."""
    from train import train

    monkeypatch.setattr(signal, "signal", lambda *args: None)  # leave pytest's handlers alone
    caplog.set_level(logging.INFO, logger="train")
    values = {"log_every_steps": 100, "profiler_interval": 0.1, "export_onnx": "false",
              **overrides}
    code = train.main(["--data-dir", str(data), "--output-root", str(out), "--cache-dir",
                       str(out / "cache"), *tiny_args(**values)])
    report = out / "output" / "data" / "rule_report.json"
    return code, {v["rule"]: v for v in json.loads(report.read_text())}


def test_a_rule_action_keeps_the_best_epochs_weights_not_the_last(twenty_per_class, tmp_path,
                                                                   monkeypatch, caplog):
    """Validation scripted so that epoch 2 is the best and epoch 3's loss fires overfit, whose
    action stops the run: the exported weights are epoch 2's, which differ from epoch 3's."""
    from safetensors.torch import load_file

    from train import train

    scripted = iter([(1.0, 0.5, 0.1), (0.9, 0.9, 0.1), (5.0, 0.7, 50.0), (5.0, 0.6, 50.0)])
    weights = []

    def evaluate(training, loader):
        weights.append({k: v.detach().clone() for k, v in training.model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(train, "evaluate", evaluate)
    out = tmp_path / "run"
    code, verdicts = in_process(twenty_per_class, out, monkeypatch, caplog, epochs=4,
                                rule_actions=json.dumps({"overfit": "stop"}))
    assert code == 0, caplog.text[-3000:]
    assert verdicts["overfit"]["stopped_training"] is True and len(weights) == 3
    exported = load_file(str(out / "model" / "model.safetensors"))
    trained = [k for k in exported if "running" not in k and "num_batches" not in k]
    assert any(not torch.equal(weights[1][k], weights[2][k]) for k in trained)
    assert all(torch.equal(exported[k], weights[1][k]) for k in trained)


def fp16_on_the_cpu(monkeypatch, initial_loss_scale: float):
    """float16 autocast and GradScaler's loss scaling, as on a T4 (the default ml.g4dn), on
    the CPU: GradScaler runs there too."""
    from train import train

    precision = train.Precision(torch.float16, "cpu", initial_loss_scale=initial_loss_scale)
    monkeypatch.setattr(train.Precision, "choose", lambda device, amp: precision)


def test_fp16_steps_that_the_loss_scaler_skips_fire_no_tensor_or_update_rule(
        twenty_per_class, tmp_path, monkeypatch, caplog):
    """A scale of 2**24 overflows float16 for the first steps (as 65536 often does on a T4):
    the scaler skips each and halves its scale. The record notes them and leaves their
    gradients (infinite) and update ratios (0: nothing moved) out of the rules' evidence."""
    from tensorboard.backend.event_processing import event_accumulator

    import warnings

    fp16_on_the_cpu(monkeypatch, 2.0 ** 24)
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        code, verdicts = in_process(twenty_per_class, out, monkeypatch, caplog, epochs=3,
                                    record_interval=RECORD_INTERVAL)
    assert code == 0, caplog.text[-3000:]
    # the schedule waits for the steps the optimizer takes: no "lr_scheduler.step() before
    # optimizer.step()" in a T4 job's log
    assert not [w for w in warned if "lr_scheduler.step()" in str(w.message)]
    assert verdicts["exploding_tensor"]["status"] == NO_ISSUES, verdicts["exploding_tensor"]
    assert verdicts["weight_update_ratio"]["status"] == NO_ISSUES, verdicts["weight_update_ratio"]
    events = event_accumulator.EventAccumulator(str(out / "output" / "tensorboard"), {
        event_accumulator.SCALARS: 0}).Reload()
    skipped = [e.step for e in events.Scalars("amp/overflow")]
    assert skipped[0] == 1 and len(skipped) >= 5  # the scaler searched for its scale
    scales = [e.value for e in events.Scalars("amp/loss_scale")]
    assert scales[0] == 2.0 ** 24 and scales[len(skipped)] == 2.0 ** (24 - len(skipped))
    rates = [e.value for e in events.Scalars("lr")]  # warm-up: rising with each step taken
    assert len(set(rates[:len(skipped) + 1])) == 1 and rates[len(skipped) + 1] > rates[0]
    recorded = {e.step for e in events.Scalars("gradient/fc.0.weight/max_abs")}
    assert recorded and not recorded & set(skipped)
    assert f"{len(skipped)} steps skipped by fp16 loss scaling" in verdicts["exploding_tensor"][
        "why"]


def test_an_fp16_run_that_diverges_still_fires_exploding_tensor(twenty_per_class, tmp_path,
                                                                monkeypatch, caplog):
    fp16_on_the_cpu(monkeypatch, 2.0 ** 16)
    code, verdicts = in_process(twenty_per_class, tmp_path / "run", monkeypatch, caplog,
                                epochs=2, lr=1e6)
    assert code == 1 and "the training loss became" in caplog.text
    assert verdicts["exploding_tensor"]["status"] == ISSUES, verdicts["exploding_tensor"]


# The record's tags that are wall-clock figures: present after a restart, never the same.
WALL_CLOCK = ("system/", "step/wait_s", "step/compute_s")


def as_the_prefix_holds(*record_dirs, into):
    """The record as SageMaker's TensorBoard S3 prefix holds it after a restart: each
    container's files, uploaded as they were written, the later container's over the earlier's
    where their names are the same (the files it restored from the checkpoint)."""
    into.mkdir(parents=True)
    for folder in record_dirs:
        for path in folder.glob("events.out.tfevents.*"):
            shutil.copyfile(path, into / path.name)
    return into


def assert_the_same_record_and_verdicts(record_dir, verdicts, alone_dir, alone_verdicts):
    """Each tensor rule's verdict, with the counts it judged (in its why), and each scalar
    tag's steps and values but the wall-clock ones, as TensorBoard's reader gives them."""
    from debugger.rules import RULE_FUNCTIONS, TensorBoardRecord

    assert {r: verdicts[r] for r in RULE_FUNCTIONS} == {r: alone_verdicts[r] for r in RULE_FUNCTIONS}
    assert set(verdicts) == set(alone_verdicts)  # the profiler's rules judged too
    record, alone = TensorBoardRecord(record_dir), TensorBoardRecord(alone_dir)
    assert set(record.scalar_tags) == set(alone.scalar_tags)
    for tag in alone.scalar_tags:
        if tag.startswith(WALL_CLOCK):
            continue
        got, want = record.scalars(tag), alone.scalars(tag)
        assert [step for step, _ in got] == [step for step, _ in want], tag
        assert np.allclose([v for _, v in got], [v for _, v in want], rtol=0, atol=1e-6), tag


def test_a_run_killed_mid_epoch_and_restarted_as_sagemaker_restarts_it_has_the_record_and_verdicts_of_one_left_alone(
        twenty_per_class, tmp_path):
    """A spot interruption as SIGKILL, mid-epoch. SageMaker's restart gets back the checkpoint
    prefix alone: a fresh output folder, no record. The job resumes from its last epoch's
    checkpoint, the record before it comes back with it, and the steps after it are written
    again. Training on the CPU repeats bit for bit, so the record SageMaker's prefix holds reads
    as the run left alone's, and the rules judge as they judged it."""
    settings = {"epochs": 3, "record_interval": RECORD_INTERVAL, "log_every_steps": 1,
                "profiler_interval": 0.1,
                "rule_parameters": json.dumps({"class_imbalance": {"samples": 120}})}
    result, alone = run(twenty_per_class, tmp_path / "alone", **settings)
    assert result.returncode == 0, result.stdout[-3000:]

    checkpoints = tmp_path / "checkpoints"
    first = subprocess.Popen(
        training_command(twenty_per_class, tmp_path / "first", checkpoints, **settings), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(first, "epoch 2 step 4/")
    first.kill()
    first.communicate(timeout=60)
    assert not (tmp_path / "first/out/output/data/rule_report.json").exists()  # it was killed
    result, resumed = run(twenty_per_class, tmp_path / "second", checkpoints=checkpoints,
                          **settings)
    assert result.returncode == 0 and "resumed from" in result.stdout, result.stdout[-3000:]
    assert "record: the steps before the checkpoint restored into" in result.stdout
    prefix = as_the_prefix_holds(tmp_path / "first/out/output/tensorboard",
                                 tmp_path / "second/out/output/tensorboard",
                                 into=tmp_path / "prefix")
    assert_the_same_record_and_verdicts(prefix, resumed,
                                        tmp_path / "alone/out/output/tensorboard", alone)
    # and the restarted job judged what its own folder holds: the same
    assert_the_same_record_and_verdicts(tmp_path / "second/out/output/tensorboard", resumed,
                                        tmp_path / "alone/out/output/tensorboard", alone)


def test_an_enormous_learning_rate_fires_exploding_tensor(twenty_per_class, tmp_path):
    result, verdicts = run(twenty_per_class, tmp_path, epochs=2, lr=1e6)
    assert result.returncode == 1  # the loss became infinite: the run fails, the rules still run
    assert "the training loss became" in (tmp_path / "out/output/failure").read_text()
    assert verdicts["exploding_tensor"]["status"] == ISSUES
    assert verdicts["exploding_tensor"]["step"] is not None


def test_long_training_on_a_tiny_split_fires_overfit(tmp_path):
    data = generate(tmp_path / "data", {"train": 2, "valid": 10, "test": 1})
    result, verdicts = run(data, tmp_path / "run", epochs=25, batch_size=4, dropout=0,
                           label_smoothing=0)
    assert result.returncode == 0, result.stdout[-3000:]
    assert verdicts["overfit"]["status"] == ISSUES


def test_a_vanishing_threshold_fires_vanishing_gradient(small_data, tmp_path):
    """The job's rule_parameters reach the rules: every gradient is below a threshold of 1."""
    result, verdicts = run(small_data, tmp_path, epochs=1,
                           rule_parameters=json.dumps({"vanishing_gradient": {"threshold": 1.0}}))
    assert result.returncode == 0, result.stdout[-3000:]
    assert verdicts["vanishing_gradient"]["status"] == ISSUES
    assert "< 1 at step 1" in verdicts["vanishing_gradient"]["why"]


def test_the_rule_command_judges_a_record_or_a_trial_again(healthy, tmp_path):
    root, _, _ = healthy
    for record in (root / "out" / "output" / "tensorboard", root / "tensors"):
        cmd = [sys.executable, "-m", "debugger.rules", str(record), "--out", str(tmp_path),
               "--rules", "exploding_tensor,overfit",
               "--params", json.dumps({"overfit": {"ratio_threshold": -1.0}})]  # any gap fires
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        saved = {v["rule"]: v for v in json.loads((tmp_path / "rule_report.json").read_text())}
        assert set(saved) == {"exploding_tensor", "overfit"}
        assert saved["overfit"]["status"] == ISSUES and saved["overfit"]["issues"] == 4
        assert saved["exploding_tensor"]["status"] == NO_ISSUES
        assert "IssuesFound" in result.stdout
        failing = subprocess.run(cmd + ["--fail-on-issues"], cwd=ROOT, capture_output=True,
                                 timeout=300)
        assert failing.returncode == 3


def test_the_rule_command_on_a_folder_without_a_record(tmp_path):
    result = subprocess.run([sys.executable, "-m", "debugger.rules", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no record in" in result.stderr and "output/tensorboard" in result.stderr


@pytest.mark.parametrize("bad", ["{not json", '["a list"]',
                                 '{"CollectionConfigurations": [{"CollectionParameters": {}}]}',
                                 ('{"CollectionConfigurations": [{"CollectionName": "losses", '
                                  '"CollectionParameters": {"save_interval": "often"}}]}')])
def test_a_malformed_hook_config_is_skipped_unless_strict(small_data, tmp_path, bad):
    config = tmp_path / "debughookconfig.json"
    config.write_text(bad)
    env = {**os.environ, "SMDEBUG_CONFIG_FILE_PATH": str(config)}
    for mode, code in (("auto", 0), ("strict", 1)):
        out = tmp_path / mode
        cmd = [sys.executable, "-m", "train.train", "--data-dir", str(small_data),
               "--output-root", str(out), "--cache-dir", str(tmp_path / "cache"),
               *tiny_args(debugger=mode, epochs=1, export_onnx="false")]
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == code, result.stdout[-3000:]
        if mode == "auto":
            assert "Training goes on without it" in result.stdout
            assert (out / "model" / "manifest.json").is_file()
        else:
            assert str(config) in (out / "output" / "failure").read_text()


def test_without_a_hook_config_there_is_no_hook_and_the_rules_still_run(small_data, tmp_path):
    """debugger=auto and no debughookconfig.json (every job of an account opened today): no
    smdebug trial, and every rule judged over the TensorBoard record."""
    result, verdicts = run(small_data, tmp_path, None, debugger="auto", epochs=1)
    assert result.returncode == 0, result.stdout[-3000:]
    assert not (tmp_path / "out" / "output" / "tensors").exists()
    assert {"vanishing_gradient", "dataloader_bound"} <= set(verdicts)
    assert verdicts["exploding_tensor"]["status"] == NO_ISSUES


def test_debugger_on_uses_the_projects_collections(small_data, tmp_path):
    result, verdicts = run(small_data, tmp_path, None, debugger="on", epochs=2)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "out/output/tensors/index").is_dir()
    assert verdicts["exploding_tensor"]["status"] == NO_ISSUES


@pytest.mark.parametrize("name, value, message", [
    ("rule_parameters", '{"overfit": {"patience": "x"}}', "overfit.patience must be a int"),
    ("rule_actions", '{"overfit": "halt"}', "overfit: unknown action 'halt'; actions: stop"),
    ("rule_actions", '{"overfitting": "stop"}', "unknown rule 'overfitting'"),
])
def test_bad_rule_settings_are_a_hyperparameter_error(small_data, tmp_path, name, value, message):
    result, _ = run(small_data, tmp_path, None, **{name: value})
    assert result.returncode == 1
    failure = (tmp_path / "out/output/failure").read_text()
    assert message in failure and "Valid hyperparameters" in failure
    assert not (tmp_path / "out" / "output" / "tensorboard").exists()  # before training


# The profiler's bottleneck rules over synthetic measurements.

def steps(waits, computes, epoch=1):
    return [{"epoch": epoch, "step": i + 1, "loss": 1.0, "wait_s": w, "compute_s": c}
            for i, (w, c) in enumerate(zip(waits, computes))]


def by_rule(verdicts):
    return {v.rule: v.status for v in verdicts}


def test_steps_waiting_for_data_fire_dataloader_bound():
    slow_data = {"steps": steps([0.09] * 30, [0.01] * 30), "system": []}
    fast_data = {"steps": steps([0.001] * 30, [0.1] * 30), "system": []}
    assert by_rule(profiler.evaluate(slow_data))["dataloader_bound"] == ISSUES
    assert by_rule(profiler.evaluate(fast_data))["dataloader_bound"] == NO_ISSUES


def test_step_outliers_fire_past_n_outliers():
    computes = [0.1] * 200
    for i in range(0, 200, 15):  # 14 steps ten times slower
        computes[i] = 1.0
    verdicts = profiler.evaluate({"steps": steps([0.0] * 200, computes), "system": []},
                                 {"step_outlier": {"n_outliers": 5}})
    assert by_rule(verdicts)["step_outlier"] == ISSUES


def system(n, cpu, gpu=None, gpu_memory=None, rss=lambda i: 1000.0):
    samples = []
    for i in range(n):
        s = {"t": i, "cpu_percent": cpu, "memory_percent": 10, "process_rss_mb": rss(i)}
        if gpu is not None:
            s.update({"gpu0_percent": gpu, "gpu0_memory_percent": gpu_memory})
        samples.append(s)
    return samples


def test_gpu_rules():
    starved = by_rule(profiler.evaluate({"steps": [], "system": system(40, 95, 5, 30)}))
    assert starved["cpu_bottleneck"] == ISSUES and starved["low_gpu_utilization"] == ISSUES
    idle = by_rule(profiler.evaluate({"steps": [], "system": system(40, 20, 30, 20)}))
    assert idle["batch_size"] == ISSUES and idle["cpu_bottleneck"] == NO_ISSUES
    busy = by_rule(profiler.evaluate({"steps": [], "system": system(40, 50, 95, 80)}))
    assert busy["low_gpu_utilization"] == busy["batch_size"] == busy["cpu_bottleneck"] == NO_ISSUES
    cpu_only = by_rule(profiler.evaluate({"steps": [], "system": system(40, 50)}))
    assert cpu_only["low_gpu_utilization"] == NO_DATA


def test_memory_growth_fires_memory_increase():
    leaking = {"steps": [], "system": system(40, 50, rss=lambda i: 1000.0 + 50 * i)}
    assert by_rule(profiler.evaluate(leaking))["memory_increase"] == ISSUES
    assert by_rule(profiler.evaluate(leaking, {"memory_increase": {"increase": 500.0}}))[
        "memory_increase"] == NO_ISSUES


def test_the_sampler_and_step_timer_measure_a_real_loop(tmp_path):
    timer = profiler.Profiler(True, interval=0.05, trace_dir=tmp_path / "trace",
                              trace_steps=2).start()
    import time

    import torch

    for step, _ in enumerate(timer.timed(range(8), epoch=1), start=1):
        torch.randn(200, 200) @ torch.randn(200, 200)
        time.sleep(0.02)
        timer.end_step(step, 1.0)
    data = timer.stop()
    assert len(data["steps"]) == 8 and all(s["compute_s"] >= 0.02 for s in data["steps"])
    assert len(data["system"]) >= 2 and 0 <= data["system"][-1]["cpu_percent"] <= 100
    assert list((tmp_path / "trace").glob("*.pt.trace.json"))  # TensorBoard's trace format


def test_sagemakers_profiler_interval_is_honoured_and_a_bad_config_ignored(tmp_path, caplog):
    config = tmp_path / "profilerconfig.json"
    config.write_text('{"ProfilingIntervalInMilliseconds": 500, "ProfilingParameters": {}}')
    assert profiler.sagemaker_interval(config) == 0.5
    assert profiler.sagemaker_interval(tmp_path / "absent.json") is None
    for bad in ("{not json", '{"ProfilingIntervalInMilliseconds": -5}', "[1]"):
        config.write_text(bad)
        assert profiler.sagemaker_interval(config) is None
        assert f"ignoring {config}" in caplog.text
        caplog.clear()


# The report, in a real browser.

def test_the_report_renders_its_plots_in_a_browser(healthy, tmp_path):
    root, _, _ = healthy
    report = root / "out/output/data/training_report.html"
    dom = rendered_dom(report.as_uri(), tmp_path / "profile")
    assert 'data-plots-loaded="4"' in dom
    for plot in ("plot-loss", "plot-accuracy", "plot-system", "plot-steps"):
        assert f'id="{plot}"' in dom
    assert "Debugger rules" in dom and "loss_not_decreasing" in dom
