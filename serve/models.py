"""Models loaded by name, for SageMaker multi-model endpoints (SAGEMAKER_MULTI_MODEL=true).

SageMaker copies each model's artifact to /opt/ml/models/<name>/model and asks the container to
load it (POST /models), invoke it (POST /models/<name>/invoke) and unload it (DELETE). The store
keeps the loaded models within a memory budget: a load that would pass it first unloads the least
recently used ones; a model that alone exceeds it is refused (507). A load that fails leaves the
others serving. The server runs one worker process in this mode (threads for concurrency), so
that every request sees the same store.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from artifact.manifest import ONNX_FILE, WEIGHTS_FILE, ArtifactError

# Resident memory of a loaded model against the size of its weights file, measured on ResNet-18/50
# with ONNX Runtime (session, arena, warm-up): about 1.3-1.5x. Estimates err high.
MEMORY_PER_WEIGHT_BYTE = 1.6


class StoreError(Exception):
    status = 500


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


def estimated_memory(model_dir: Path) -> int:
    """Bytes a loaded model will hold, from its weights file (ONNX when there, else safetensors)."""
    for name in (ONNX_FILE, WEIGHTS_FILE):
        if (model_dir / name).is_file():
            return int((model_dir / name).stat().st_size * MEMORY_PER_WEIGHT_BYTE)
    return 0


class ModelStore:
    def __init__(self, budget_bytes: int, load: Callable[[Path], object]):
        self.budget_bytes = budget_bytes
        self._load = load
        self._models: OrderedDict[str, Loaded] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._loading: set[str] = set()

    def __len__(self) -> int:
        return len(self._models)

    @property
    def used_bytes(self) -> int:
        return sum(m.memory_bytes for m in self._models.values())

    def load(self, name: str, url: str) -> tuple[Loaded, list[str]]:
        """Load the model folder at url as name; returns it and the names unloaded to fit it."""
        model_dir = Path(url)
        with self._lock:
            if name in self._models or name in self._loading:
                raise ModelExists(f"model {name!r} is already loaded: DELETE /models/{name} "
                                  "first to load it again")
            if not model_dir.is_dir():
                raise ModelNotFound(f"no model folder at {url} for model {name!r}")
            need = estimated_memory(model_dir)
            if need > self.budget_bytes:
                raise InsufficientMemory(
                    f"model {name!r} needs about {need / 2**20:.0f} MiB, more than the whole "
                    f"budget of {self.budget_bytes / 2**20:.0f} MiB (BYOC_MODEL_MEMORY_MB)")
            evicted = []
            while self._models and self.used_bytes + need > self.budget_bytes:
                old, _ = self._models.popitem(last=False)
                evicted.append(old)
            self._loading.add(name)
        try:  # outside the lock: invocations of the other models go on while this one loads
            predictor = self._load(model_dir)
        except ArtifactError as e:
            raise LoadFailed(f"model {name!r} at {url} could not be loaded: {e}") from None
        except Exception as e:
            raise LoadFailed(f"model {name!r} at {url} could not be loaded "
                             f"({type(e).__name__}: {e})") from None
        finally:
            with self._lock:
                self._loading.discard(name)
        entry = Loaded(name, url, predictor, need, time.time())
        with self._lock:
            self._models[name] = entry
        return entry, evicted

    def get(self, name: str) -> Loaded:
        with self._lock:
            entry = self._models.get(name)
            if entry is None:
                raise ModelNotFound(f"model {name!r} is not loaded: POST /models to load it")
            self._models.move_to_end(name)  # now the most recently used
            return entry

    def unload(self, name: str) -> None:
        with self._lock:
            if self._models.pop(name, None) is None:
                raise ModelNotFound(f"model {name!r} is not loaded")

    def page(self, size: int, token: str | None) -> tuple[list[Loaded], str | None]:
        """Models in name order, size at a time; token: the last name of the previous page."""
        with self._lock:
            names = sorted(n for n in self._models if token is None or n > token)
            chosen = [self._models[n] for n in names[:size]]
        more = len(names) > size
        return chosen, (chosen[-1].name if more and chosen else None)
