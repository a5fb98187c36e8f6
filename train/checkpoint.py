"""Checkpoints for spot training: written after every epoch and on SIGTERM, resumed automatically.

SageMaker syncs /opt/ml/checkpoints with checkpoint_s3_uri and stops a job (spot interruption,
StopTrainingJob, MaxRuntime) with SIGTERM then SIGKILL 120 s later. It syncs the prefix down into
every job that names it, not only into a spot restart of the same job: so each job keeps its
checkpoint in a folder of its own, /opt/ml/checkpoints/<TRAINING_JOB_NAME>/ (a restart keeps the
name), and never reads or writes another job's. The checkpoint holds everything needed to
continue exactly where training stopped, mid-epoch included: model, optimizer, scheduler, scaler,
epoch, position in the epoch, partial sums, history, RNG states, and the job's name and
hyperparameters, checked on load. It is loaded with weights_only=True: tensors and plain data.

A spot restart gets back only what the checkpoint prefix holds: its /opt/ml/output (the
TensorBoard record included) and /opt/ml/model start empty. So the record's event files, which
the rules, the report and the MLflow rule counts are judged from, travel beside the checkpoint
(<job>/record/), copied with each save, and come back into the empty output folder before the
resumed job writes on (debugger/record.py then drops what came after the checkpoint's step).
"""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import torch

from debugger.record import EVENT_FILE_PATTERN

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"
TRACKING_RUN_FILE = "mlflow_run_id"  # beside the checkpoint, synced with it
RECORD_FOLDER = "record"  # the TensorBoard record's event files, as they were at the save
FINISHED_FILE = "finished"  # the job ran to its end: no restart of it will come
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

    def keep_record(self, record_dir: Path) -> None:
        """A copy of the record's event files (written up to the checkpoint's step) beside it;
        each replaces its copy atomically."""
        kept = self.directory / RECORD_FOLDER
        kept.mkdir(parents=True, exist_ok=True)
        for path in record_dir.glob(EVENT_FILE_PATTERN):
            tmp = kept / f".{path.name}.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, kept / path.name)

    def restore_record(self, record_dir: Path) -> list[str]:
        """The kept event files that record_dir lacks (a spot restart's output folder is
        empty), copied back into it; their names. A folder that has them (a local rerun) keeps
        its own, which hold the same steps and more."""
        kept = self.directory / RECORD_FOLDER
        missing = [p for p in sorted(kept.glob(EVENT_FILE_PATTERN))
                   if not (record_dir / p.name).exists()]
        if missing:
            record_dir.mkdir(parents=True, exist_ok=True)
        for path in missing:
            shutil.copyfile(path, record_dir / path.name)
        return [p.name for p in missing]

    def load(self, tensors: bool = True) -> dict | None:
        """The checkpoint; tensors=False: memory-mapped, its tensors left unread (its settings
        are read in a moment, whatever the model's size)."""
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True, mmap=not tensors)

    def tracking_run(self) -> str | None:
        """The MLflow run this job records itself in (train/tracking.py), kept beside its
        checkpoint so that a restart continues the run; None before the run was opened."""
        path = self.directory / TRACKING_RUN_FILE
        return path.read_text().strip() or None if path.is_file() else None

    def keep_tracking_run(self, run_id: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / TRACKING_RUN_FILE).write_text(run_id + "\n")

    def mark_finished(self) -> None:
        """The job ran to its end: a later job of the same name (a local rerun in the same
        folder) is a new job, not a restart of this one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / FINISHED_FILE).write_text("the job finished\n")

    def finished(self) -> bool:
        return (self.directory / FINISHED_FILE).is_file()

    def start_afresh(self) -> None:
        """Remove a finished job's checkpoint, its MLflow run's id and its record: what is
        left of a job that will not be restarted."""
        for name in (CHECKPOINT_FILE, TRACKING_RUN_FILE, FINISHED_FILE):
            (self.directory / name).unlink(missing_ok=True)
        shutil.rmtree(self.directory / RECORD_FOLDER, ignore_errors=True)

    def other_jobs(self) -> list[str]:
        """Checkpoints under root that belong to other jobs (a shared prefix syncs them here)."""
        found = sorted(p.parent.name for p in self.root.glob(f"*/{CHECKPOINT_FILE}")
                       if p.parent != self.directory)
        if (self.root / CHECKPOINT_FILE).is_file():
            found.append(f"{CHECKPOINT_FILE} (an older image's, job unknown)")
        return found
