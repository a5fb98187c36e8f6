"""Checkpoints for spot training: written after every epoch and on SIGTERM, resumed automatically.

SageMaker syncs /opt/ml/checkpoints with checkpoint_s3_uri, restores it into a restarted job, and
stops a job (spot interruption, StopTrainingJob, MaxRuntime) with SIGTERM then SIGKILL 120 s
later. The checkpoint holds everything needed to continue exactly where training stopped,
mid-epoch included: model, optimizer, scheduler, scaler, epoch, position in the epoch, partial
sums, history and RNG states. It is loaded with weights_only=True: tensors and plain data only.
"""
from __future__ import annotations

import logging
import os
import random
import signal
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"


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


def save(directory: Path, state: dict) -> Path:
    """Atomic: a kill during the write leaves the previous checkpoint intact."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(directory: Path) -> dict | None:
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
