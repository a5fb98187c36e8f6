"""Models loaded by name, for SageMaker multi-model endpoints (SAGEMAKER_MULTI_MODEL=true).

SageMaker copies each model's artifact to /opt/ml/models/<name>/model and asks the container to
load it (POST /models), invoke it (POST /models/<name>/invoke) and unload it (DELETE). SageMaker
decides what stays loaded: when a model does not fit, the load answers 507 and SageMaker unloads
models it picks, then loads again. So the store never unloads a model on its own (SageMaker would
go on routing to it). It keeps the loaded models, and the loads in flight, within a memory
budget; refuses a url outside the models root; lets a failed load leave the others serving; and
makes an unload of a model still loading wait for the load, then unload it. The server runs one
worker process in this mode (threads for concurrency), so that every request sees one store.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from artifact.manifest import ArtifactError
from serve.predictor import plan

# Resident memory of one copy of a loaded network (serve/predictor.py Plan.sessions) against its
# weights file, measured on ResNet-18/50 in fp32 and int8 with ONNX Runtime (session, prepacked
# weights, arena, warm-up), for one more model in a process that holds one: 1.4-1.9x the file
# in fp32 (malloc makes it vary), 1.5-1.9x in int8. Estimates err high (tested).
MEMORY_PER_WEIGHT_BYTE = 1.6
MEMORY_PER_SESSION = 16 * 2**20


class StoreError(Exception):
    status = 500


class BadModelUrl(StoreError):
    status = 400


class ModelNotFound(StoreError):
    status = 404


class ModelExists(StoreError):
    status = 409


class InsufficientMemory(StoreError):
    status = 507


class LoadFailed(StoreError):
    status = 500


@dataclass
class Loaded:
    name: str
    url: str
    predictor: object
    memory_bytes: int
    loaded_at: float


def estimated_memory(model_dir: Path, backend: str = "auto", precision: str = "auto",
                     threads: int = 1) -> int:
    """Bytes the model will hold once loaded: of the weights file it will serve (int8 or fp32,
    serve/predictor.py plan), once per copy of the network in memory."""
    chosen = plan(model_dir, backend, precision)
    per_copy = chosen.file.stat().st_size * MEMORY_PER_WEIGHT_BYTE + MEMORY_PER_SESSION
    return int(chosen.sessions(threads) * per_copy)


class ModelStore:
    def __init__(self, budget_bytes: int, load: Callable[[Path], object],
                 root: Path = Path("/opt/ml/models"),
                 estimate: Callable[[Path], int] = estimated_memory):
        """load: a model folder to a predictor; estimate: the bytes it will hold, before."""
        self.budget_bytes = budget_bytes
        self.root = root
        self._load = load
        self._estimate = estimate
        self._models: dict[str, Loaded] = {}
        self._loading: dict[str, int] = {}  # name -> bytes reserved while it loads
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._models)

    @property
    def used_bytes(self) -> int:
        """Loaded models and loads in flight."""
        return sum(m.memory_bytes for m in self._models.values()) + sum(self._loading.values())

    def model_dir(self, url: str) -> Path:
        folder = Path(url).resolve()
        if not folder.is_relative_to(self.root.resolve()):
            raise BadModelUrl(f"url {url!r} is outside {self.root}: SageMaker places models at "
                              f"{self.root}/<name>/model")
        return folder

    def load(self, name: str, url: str) -> Loaded:
        """Load the model folder at url as name, or raise: 409 when the name is loaded (or
        loading), 404 without a folder, 507 when it does not fit beside what is loaded."""
        model_dir = self.model_dir(url)
        with self._changed:
            if name in self._models or name in self._loading:
                raise ModelExists(f"model {name!r} is already loaded: DELETE /models/{name} "
                                  "first to load it again")
            if not model_dir.is_dir():
                raise ModelNotFound(f"no model folder at {url} for model {name!r}")
            try:
                need = self._estimate(model_dir)
            except (ArtifactError, OSError) as e:
                raise LoadFailed(f"model {name!r} at {url} could not be loaded: {e}") from None
            if self.used_bytes + need > self.budget_bytes:
                raise InsufficientMemory(
                    f"model {name!r} needs about {need / 2**20:.0f} MiB; {len(self._models)} "
                    f"loaded model(s) and {len(self._loading)} load(s) in flight hold "
                    f"{self.used_bytes / 2**20:.0f} of the {self.budget_bytes / 2**20:.0f} MiB "
                    "budget (BYOC_MODEL_MEMORY_MB): unload a model first")
            self._loading[name] = need
        try:  # outside the lock: invocations of the other models go on while this one loads
            predictor = self._load(model_dir)
        except Exception as e:
            with self._changed:
                del self._loading[name]
                self._changed.notify_all()
            detail = str(e) if isinstance(e, ArtifactError) else f"{type(e).__name__}: {e}"
            raise LoadFailed(f"model {name!r} at {url} could not be loaded: {detail}") from None
        entry = Loaded(name, url, predictor, need, time.time())
        with self._changed:
            del self._loading[name]
            self._models[name] = entry
            self._changed.notify_all()
        return entry

    def get(self, name: str) -> Loaded:
        with self._changed:
            entry = self._models.get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} is not loaded: POST /models to load it")
        return entry

    def unload(self, name: str) -> Loaded:
        """A model still loading is unloaded once its load ends (404 if the load fails)."""
        with self._changed:
            self._changed.wait_for(lambda: name not in self._loading)
            entry = self._models.pop(name, None)
        if entry is None:
            raise ModelNotFound(f"model {name!r} is not loaded")
        return entry

    def page(self, size: int, token: str | None) -> tuple[list[Loaded], str | None]:
        """Models in name order, size at a time; token: the last name of the previous page."""
        with self._changed:
            names = sorted(n for n in self._models if token is None or n > token)
            chosen = [self._models[n] for n in names[:size]]
        more = len(names) > size
        return chosen, (chosen[-1].name if more and chosen else None)
