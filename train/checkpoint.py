"""Checkpoints for spot training: written after every epoch and on SIGTERM, resumed automatically.

SageMaker syncs /opt/ml/checkpoints with checkpoint_s3_uri and stops a job (spot interruption,
StopTrainingJob, MaxRuntime) with SIGTERM then SIGKILL 120 s later. It syncs the prefix down into
every job that names it, not only into a spot restart of the same job: so each job keeps its
checkpoint in a folder of its own, /opt/ml/checkpoints/<TRAINING_JOB_NAME>/ (a restart keeps the
name), and never reads or writes another job's. The checkpoint holds everything needed to
continue exactly where training stopped, mid-epoch included: model, optimizer, scheduler, scaler,
epoch, position in the epoch, partial sums, history, RNG states, and the job's name and
hyperparameters, checked on load. It is loaded with weights_only=True: tensors and plain data.
"""
from __future__ import annotations

import logging
import os
import random
import re
import signal
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"
TRACKING_RUN_FILE = "mlflow_run_id"  # beside the checkpoint, synced with it
LOCAL_JOB = "local-run"  # the job name outside SageMaker (no TRAINING_JOB_NAME)


class StopRequested:
    """Set by SIGTERM; the training loop checks it after every step."""

    def __init__(self):
        self.requested = False

    def install(self) -> "StopRequested":
        def handler(signum, frame):
            log.warning("received signal %d: will checkpoint after this step and exit", signum)
            self.requested = True

        signal.signal(signal.SIGTERM, handler)
        return self


class TrainingStopped(Exception):
    """Training was stopped by a signal after saving a checkpoint."""


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def job_name() -> str:
    """SageMaker's TRAINING_JOB_NAME: the same for a spot restart of a job, unique otherwise."""
    return os.environ.get("TRAINING_JOB_NAME", "").strip() or LOCAL_JOB


class JobCheckpoints:
    """One job's checkpoint: root/<job>/checkpoint.pt, where root is what SageMaker syncs."""

    def __init__(self, root: Path, job: str):
        self.root, self.job = root, job
        self.directory = root / re.sub(r"[^A-Za-z0-9._-]", "-", job)
        self.path = self.directory / CHECKPOINT_FILE

    def save(self, state: dict) -> Path:
        """Atomic: a kill during the write leaves the previous checkpoint intact."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({**state, "job": self.job}, tmp)
        os.replace(tmp, self.path)
        return self.path

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def tracking_run(self) -> str | None:
        """The MLflow run this job records itself in (train/tracking.py), kept beside its
        checkpoint so that a restart continues the run; None before the run was opened."""
        path = self.directory / TRACKING_RUN_FILE
        return path.read_text().strip() or None if path.is_file() else None

    def keep_tracking_run(self, run_id: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / TRACKING_RUN_FILE).write_text(run_id + "\n")

    def other_jobs(self) -> list[str]:
        """Checkpoints under root that belong to other jobs (a shared prefix syncs them here)."""
        found = sorted(p.parent.name for p in self.root.glob(f"*/{CHECKPOINT_FILE}")
                       if p.parent != self.directory)
        if (self.root / CHECKPOINT_FILE).is_file():
            found.append(f"{CHECKPOINT_FILE} (an older image's, job unknown)")
        return found
