"""What `train` runs in the training image: SAGEMAKER_TRAINING_MODULE=train.launcher:main.

The sagemaker-training toolkit's `train` command reads SageMaker's configuration (resourceconfig,
hyperparameters, channels), calls main() and turns an exception into /opt/ml/output/failure and
exit code 1. main() starts train.train in one process, or under torchrun with one process per
GPU on every host, passes SIGTERM on (so a stopped or interrupted spot job checkpoints), and
reports the failure reason that train.train wrote.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from sagemaker_training import environment, errors

log = logging.getLogger(__name__)
MASTER_PORT = "7777"


class TrainingFailed(errors.ClientError):
    """Its text becomes the failure file and the job's FailureReason."""


def command(env: environment.Environment, processes_per_host: int) -> list[str]:
    """python -m train.train, under torchrun when there is more than one process.

    The script reads SageMaker's hyperparameters.json itself: the toolkit's own argv
    (env.to_cmd_args()) JSON-decodes every value and re-renders it, so a dict becomes
    `k={'a': 1}` and "1.10" becomes 1.1."""
    hyperparameters = Path(env.input_config_dir) / environment.HYPERPARAMETERS_FILE
    script = ["-m", "train.train", "--hyperparameters", str(hyperparameters)]
    hosts = list(env.hosts)
    if len(hosts) == 1 and processes_per_host == 1:
        return [sys.executable, *script]
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(len(hosts)),
        "--nproc_per_node", str(processes_per_host),
        "--node_rank", str(hosts.index(env.current_host)),
        "--master_addr", env.master_hostname,
        "--master_port", MASTER_PORT,
        *script,
    ]


def main() -> None:
    env = environment.Environment()
    # NPROC_PER_NODE overrides one process per GPU (e.g. several CPU processes for testing DDP).
    processes = int(os.environ.get("NPROC_PER_NODE") or env.num_gpus or 1)
    cmd = command(env, processes)
    log.info("starting: %s", " ".join(cmd))
    child_env = {**os.environ, **env.to_env_vars()}
    code_dir = str(Path(__file__).resolve().parent.parent)
    process = subprocess.Popen(cmd, env=child_env, cwd=code_dir)

    def forward(signum, frame):
        log.warning("forwarding signal %d to training", signum)
        process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    returncode = process.wait()
    if returncode != 0:
        failure = Path(env.output_dir) / "failure"
        reason = failure.read_text() if failure.is_file() else ""
        raise TrainingFailed(
            reason or f"the training process exited with code {returncode} without saying why "
            "(killed for lack of memory? see the log above)"
        )
