"""train.launcher builds the command from the toolkit's real Environment (SageMaker's config
files), and every hyperparameter reaches the typed config intact in each form SageMaker is given."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from scripts.local_training_job import write_config
from tests.conftest import ROOT
from train.config import TrainConfig

# The toolkit reads SAGEMAKER_BASE_DIR when it is imported: a fresh process per job folder.
PRINT_COMMAND = """
import json, sys
from sagemaker_training import environment
from train.launcher import command
print(json.dumps(command(environment.Environment(), int(sys.argv[1]))))
"""
# What the training process makes of that command: train.train's own parsing, into the config.
PRINT_CONFIG = """
import dataclasses, json, sys
from sagemaker_training import environment
from train.config import from_hyperparameters
from train.launcher import command
from train.train import parse_args
cmd = command(environment.Environment(), 1)
_, values = parse_args(cmd[cmd.index("train.train") + 1:])
print(json.dumps(dataclasses.asdict(from_hyperparameters(values))))
"""


def in_job(tmp_path, script: str, *args: str) -> str:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def launcher_command(tmp_path, hosts, current, processes):
    write_config(tmp_path, {"epochs": 3, "hidden_units": [64, 32], "amp": True}, ["train", "valid"],
                 hosts=hosts)
    config = tmp_path / "input" / "config" / "resourceconfig.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "current_host": current}))
    return json.loads(in_job(tmp_path, PRINT_COMMAND, str(processes)))


def test_one_host_one_process_runs_the_script_on_sagemakers_hyperparameters_file(tmp_path):
    cmd = launcher_command(tmp_path, ["algo-1"], "algo-1", 1)
    assert cmd[1:] == ["-m", "train.train", "--hyperparameters",
                       str(tmp_path / "input" / "config" / "hyperparameters.json")]


def test_several_hosts_run_under_torchrun(tmp_path):
    cmd = launcher_command(tmp_path, ["algo-1", "algo-2"], "algo-2", 4)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    options = dict(zip(cmd[3:13:2], cmd[4:13:2]))
    assert options == {"--nnodes": "2", "--nproc_per_node": "4", "--node_rank": "1",
                       "--master_addr": "algo-1", "--master_port": "7777"}
    assert cmd[13:16] == ["-m", "train.train", "--hyperparameters"]


# Every hyperparameter `python -m train.train --help` documents, each with a value other than its
# default, as a user writes it in a hyperparameters file or the SDK's dict. "1.10" must stay text
# (the toolkit's argv made it 1.1) and the dict must stay a dict (the toolkit made it
# `overfit={'patience': 3}`).
DOCUMENTED = {
    "architecture": "efficientnet_b0", "weights": "IMAGENET1K_V1", "hidden_units": [750, 500, 250],
    "dropout": 0.35, "finetune_blocks": 2, "epochs": 7, "batch_size": 48, "optimizer": "sgd",
    "lr": 0.0125, "backbone_lr_scale": 0.25, "momentum": 0.85, "weight_decay": 5e-05,
    "warmup_epochs": 0.5, "label_smoothing": 0.05, "early_stopping_patience": 3, "seed": 7,
    "image_size": 192, "resize_size": 220, "interpolation": "bicubic", "num_workers": 2,
    "amp": False, "channels_last": False, "model_name": "1.10", "export_onnx": False,
    "export_int8": False, "drift_baseline": False,
    "log_every_steps": 5, "debugger": "strict", "debugger_save_interval": 10,
    "rule_parameters": {"overfit": {"patience": 3}, "step_outlier": {"stddev": 2.5}},
    "rule_actions": {"loss_not_decreasing": "stop"}, "record_interval": 4,
    "profiler": False, "profiler_interval": 2.5, "profiler_trace_steps": 0,
    "mlflow_required": True,
}


def test_the_table_covers_every_hyperparameter():
    defaults = dataclasses.asdict(TrainConfig())
    assert set(DOCUMENTED) == set(defaults)
    assert [name for name, value in DOCUMENTED.items() if defaults[name] == value] == []


def sdk_v3(value) -> str:
    """SDK v3's own serialization (ModelTrainer): strings as they are, JSON for the rest."""
    from sagemaker.train.utils import safe_serialize

    return safe_serialize(value)


def sdk_v2(value) -> str:
    """SDK v2 (Estimator): str() of each value. v2 cannot be installed beside v3, so this is its
    rule restated; tests/container/test_sdk_v2_local.py drives the images with v2 itself."""
    return str(value)


@pytest.fixture
def sdk_v3_request(aws, tmp_path, monkeypatch):
    """HyperParameters exactly as SDK v3 sends them in CreateTrainingJob, from the launch script
    given DOCUMENTED as its --hyperparameters file (captured on its way to moto)."""
    from botocore.client import BaseClient

    from scripts import sagemaker_train

    sent = []
    real_call = BaseClient._make_api_call

    def recording_call(client, operation_name, params):
        if operation_name == "CreateTrainingJob":
            sent.append(params["HyperParameters"])
        return real_call(client, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording_call)
    hp_file = tmp_path / "hp.json"
    hp_file.write_text(json.dumps(DOCUMENTED))
    sagemaker_train.main(["--data", "s3://data/dogs", "--output", "s3://data/runs", "--role",
                          "arn:aws:iam::123456789012:role/R", "--no-wait",
                          "--hyperparameters", str(hp_file)])
    [hyperparameters] = sent
    return hyperparameters


FORMS = {
    "sdk v3": lambda: {k: sdk_v3(v) for k, v in DOCUMENTED.items()},
    "sdk v2": lambda: {k: sdk_v2(v) for k, v in DOCUMENTED.items()},
    # v2's framework estimators, and anyone writing hyperparameters.json by hand
    "all JSON": lambda: {k: json.dumps(v) for k, v in DOCUMENTED.items()},
    # the README's --hp rule_parameters='{"overfit": ...}': a JSON text, sent as a string
    "rules as text, v2": lambda: {**{k: sdk_v2(v) for k, v in DOCUMENTED.items()},
                                  "rule_parameters": json.dumps(DOCUMENTED["rule_parameters"])},
    "rules as text, v3": lambda: {**{k: sdk_v3(v) for k, v in DOCUMENTED.items()}, "rule_parameters":
                                  json.dumps(json.dumps(DOCUMENTED["rule_parameters"]))},
}


def typed_config_in_job(tmp_path, hyperparameters: dict) -> dict:
    write_config(tmp_path, {}, ["train", "valid"])
    (tmp_path / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({**hyperparameters, "sagemaker_job_name": "j", "_tuning_objective_metric": "x"}))
    return json.loads(in_job(tmp_path, PRINT_CONFIG))


def test_the_launch_scripts_request_reaches_the_config_intact(sdk_v3_request, tmp_path):
    assert sdk_v3_request["rule_parameters"] == json.dumps(DOCUMENTED["rule_parameters"])
    assert typed_config_in_job(tmp_path, sdk_v3_request) == DOCUMENTED


@pytest.mark.parametrize("form", FORMS)
def test_every_form_reaches_the_config_intact(form, tmp_path):
    assert typed_config_in_job(tmp_path, FORMS[form]()) == DOCUMENTED
