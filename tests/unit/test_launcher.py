"""train.launcher builds the command from the toolkit's real Environment (SageMaker's config files)."""
import json
import os
import subprocess
import sys

from scripts.local_training_job import write_config
from tests.conftest import ROOT

PRINT_COMMAND = """
import json, sys
from sagemaker_training import environment
from train.launcher import command
print(json.dumps(command(environment.Environment(), int(sys.argv[1]))))
"""


def launcher_command(tmp_path, hosts, current, processes):
    write_config(tmp_path, {"epochs": 3, "hidden_units": [64, 32], "amp": True}, ["train", "valid"],
                 hosts=hosts)
    config = tmp_path / "input" / "config" / "resourceconfig.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "current_host": current}))
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", PRINT_COMMAND, str(processes)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_one_host_one_process_runs_the_script_directly(tmp_path):
    cmd = launcher_command(tmp_path, ["algo-1"], "algo-1", 1)
    assert cmd[1:] == ["-m", "train.train", "--amp", "True", "--epochs", "3",
                       "--hidden_units", "[64, 32]"]


def test_several_hosts_run_under_torchrun(tmp_path):
    cmd = launcher_command(tmp_path, ["algo-1", "algo-2"], "algo-2", 4)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    options = dict(zip(cmd[3:13:2], cmd[4:13:2]))
    assert options == {"--nnodes": "2", "--nproc_per_node": "4", "--node_rank": "1",
                       "--master_addr": "algo-1", "--master_port": "7777"}
    assert cmd[13:16] == ["-m", "train.train", "--amp"]
