"""Run the training image exactly as SageMaker runs a training job, on this machine.

    python -m scripts.local_training_job --image byoc-train:latest --data demo_data \
        --job-dir local_run/job --hp epochs=3 --hp weights=none [--sagemaker-debugger]

Writes /opt/ml/input/config/{hyperparameters,resourceconfig,inputdataconfig}.json (hyperparameter
values as SDK v2 sends them: str() of each) and, with --sagemaker-debugger, the
debughookconfig.json that SageMaker writes for a DebuggerHookConfig (debugger/config.py's collections), mounts each channel
read-only at /opt/ml/input/data/<channel>, mounts job-dir as /opt/ml, and runs
`docker run ... IMAGE train` with hostname algo-1 and TRAINING_JOB_NAME set, as SageMaker does
(--job-name; the same name again is a restart of the same job, which resumes its checkpoint).
--checkpoints mounts a folder of your own as /opt/ml/checkpoints, playing the checkpoint S3
prefix that several jobs may share; each --env NAME=VALUE is set in the container as the job's
Environment is (MLFLOW_TRACKING_URI, say). Afterwards job-dir holds model/, output/ (data/, failure or
success) and checkpoints/, as S3 would.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from debugger.config import hook_config

CHANNELS = ("train", "valid", "test")
DEFAULT_JOB_NAME = "local-training-job"


def write_config(job_dir: Path, hyperparameters: dict, channels: list[str], hosts=("algo-1",),
                 debug_hook: dict | None = None):
    config = job_dir / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    if debug_hook is not None:
        (config / "debughookconfig.json").write_text(json.dumps(debug_hook, indent=2))
    (config / "hyperparameters.json").write_text(
        json.dumps({k: str(v) for k, v in hyperparameters.items()}, indent=2)
    )
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": hosts[0], "hosts": list(hosts), "network_interface_name": "eth0",
    }))
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
               "RecordWrapperType": "None"} for name in channels
    }))
    for sub in ("model", "output/data", "checkpoints"):
        (job_dir / sub).mkdir(parents=True, exist_ok=True)


def docker_command(image: str, job_dir: Path, data: Path, name: str | None = None,
                   detach: bool = False, job_name: str = DEFAULT_JOB_NAME,
                   checkpoints: Path | None = None, env: dict[str, str] | None = None) -> list[str]:
    """checkpoints: a host folder mounted as /opt/ml/checkpoints (default: job_dir's own);
    env: the job's Environment (CreateTrainingJob's), which SageMaker sets in the container."""
    channels = [c for c in CHANNELS if (data / c).is_dir()]
    cmd = ["docker", "run", "--hostname", "algo-1", "--shm-size", "1g",
           "-e", f"TRAINING_JOB_NAME={job_name}"]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    cmd += ["-d"] if detach else ["--rm"]
    if name:
        cmd += ["--name", name]
    cmd += ["-v", f"{job_dir.resolve()}:/opt/ml"]
    if checkpoints is not None:
        checkpoints.mkdir(parents=True, exist_ok=True)
        cmd += ["-v", f"{checkpoints.resolve()}:/opt/ml/checkpoints"]
    for channel in channels:
        cmd += ["-v", f"{(data / channel).resolve()}:/opt/ml/input/data/{channel}:ro"]
    return cmd + [image, "train"]


def prepare_job(job_dir: Path, data: Path, hyperparameters: dict,
                debugger_save_interval: int | None = None) -> None:
    """debugger_save_interval: None for no hook; 0 for the collections' own intervals."""
    debug_hook = None
    if debugger_save_interval is not None:  # where SageMaker points the hook in the container
        debug_hook = hook_config("/opt/ml/output/tensors", debugger_save_interval)
    write_config(job_dir, hyperparameters, [c for c in CHANNELS if (data / c).is_dir()],
                 debug_hook=debug_hook)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="byoc-train:latest")
    parser.add_argument("--data", required=True, type=Path, help="folder with train/ valid/ [test/]")
    parser.add_argument("--job-dir", required=True, type=Path, help="becomes /opt/ml")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--sagemaker-debugger", action="store_true",
                        help="configure the smdebug hook as SageMaker Debugger does (a trial in "
                             "output/tensors, beside the TensorBoard record every job writes)")
    parser.add_argument("--debugger-save-interval", type=int, default=0,
                        help="with --sagemaker-debugger: save every collection this often "
                             "(default: theirs)")
    parser.add_argument("--job-name", default=DEFAULT_JOB_NAME,
                        help="TRAINING_JOB_NAME; the same name again resumes that job's checkpoint")
    parser.add_argument("--checkpoints", type=Path,
                        help="a folder mounted as /opt/ml/checkpoints (plays checkpoint_s3_uri)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set in the container, as the job's Environment is "
                             "(MLFLOW_TRACKING_URI=..., say)")
    args = parser.parse_args()
    for item in args.hp + args.env:
        if "=" not in item:
            parser.error(f"{item!r} is not NAME=VALUE")
    hyperparameters = dict(item.split("=", 1) for item in args.hp)
    prepare_job(args.job_dir, args.data, hyperparameters,
                args.debugger_save_interval if args.sagemaker_debugger else None)
    return subprocess.call(docker_command(args.image, args.job_dir, args.data,
                                          job_name=args.job_name, checkpoints=args.checkpoints,
                                          env=dict(item.split("=", 1) for item in args.env)))


if __name__ == "__main__":
    sys.exit(main())
