"""The server's settings, all from environment variables (how SageMaker configures a container).

SAGEMAKER_* are SageMaker's own names; BYOC_* are this project's. Set them with the SDK's
`Model(env={...})` or `docker run -e`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("auto", "fp32", "int8")


class SettingsError(ValueError):
    """An environment variable has a value the server cannot use."""


def available_cpus() -> int:
    return len(os.sched_getaffinity(0))


def memory_limit_bytes() -> int:
    """The container's memory limit (cgroup v2 or v1), else the machine's memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """NVIDIA GPUs this container may use: CUDA_VISIBLE_DEVICES, else the /dev/nvidiaN devices
    (looked up without initialising CUDA, which a forking server must not do)."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",")]
        return [] if not ids or ids[0] in ("", "-1", "none", "NoDevFiles") else ids
    devices = Path("/dev").glob("nvidia[0-9]*")
    return sorted((d.name.removeprefix("nvidia") for d in devices), key=int)


@dataclass(frozen=True)
class Settings:
    model_dir: Path = Path("/opt/ml/model")  # BYOC_MODEL_DIR; SageMaker unpacks model.tar.gz here
    port: int = 8080  # SAGEMAKER_BIND_TO_PORT
    workers: int = 1  # SAGEMAKER_MODEL_SERVER_WORKERS; default: one, or one per GPU (torch)
    intra_op_threads: int = 1  # BYOC_THREADS_PER_WORKER: threads of a lone request's network
    parallel_requests: int = 1  # BYOC_PARALLEL_REQUESTS: requests a worker computes at once
    request_threads: int = 32  # BYOC_REQUEST_THREADS: requests a worker holds at once
    timeout_s: int = 60  # SAGEMAKER_MODEL_SERVER_TIMEOUT; SageMaker's own limit is 60 s
    backend: str = "auto"  # BYOC_BACKEND: auto (ONNX Runtime when possible), onnx, torch
    precision: str = "auto"  # BYOC_PRECISION: auto (int8 when it passed its gate), fp32, int8
    max_payload_bytes: int = 6 * 1024 * 1024  # BYOC_MAX_PAYLOAD_MB; SageMaker real-time: 6 MB
    max_pixels: int = 50_000_000  # BYOC_MAX_PIXELS; decoded per image; see from_environment
    max_batch_images: int = 16  # BYOC_MAX_BATCH_IMAGES; per application/json request
    # BYOC_DYNAMIC_BATCH: the most images one network run gathers from concurrent requests;
    # 0: 8 for PyTorch on a GPU, else no batching. BYOC_DYNAMIC_BATCH_WAIT_MS: the longest the
    # first waits for others, while another request is decoding (serve/batching.py).
    dynamic_batch: int = 0
    dynamic_batch_wait_s: float = 0.005
    default_top_k: int = 3  # BYOC_DEFAULT_TOP_K; a request may ask for another with top_k=N
    user: str = "model-server"  # BYOC_SERVER_USER: workers drop root to it; "root" keeps root
    multi_model: bool = False  # SAGEMAKER_MULTI_MODEL: models loaded by name (serve/models.py)
    model_memory_bytes: int = 0  # BYOC_MODEL_MEMORY_MB: multi-model budget; 60% of the memory
    models_root: Path = Path("/opt/ml/models")  # BYOC_MODELS_ROOT: where loads may come from

    @property
    def concurrency(self) -> int:
        """What batch transform may send in parallel: a request computing on each core the
        server uses, and one more ready to start there, read and parsed."""
        return self.workers * 2 * self.parallel_requests

    def layout(self) -> str:
        """How the server spreads requests over the machine, in words (logs, benches)."""
        return (f"{self.workers} worker(s) x {self.request_threads} request threads, "
                f"{self.parallel_requests} computing at once (one per core), a lone request's "
                f"network on {self.intra_op_threads} thread(s)")

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None, gpus: int = 0) -> "Settings":
        """One worker process by default, whose request threads share one model (ONNX Runtime
        and PyTorch release the GIL, and so does Pillow's decoding): a lone request runs on
        every core, and concurrent ones take a core each, in arrival order (serve/cores.py), in
        one copy of the model's memory. gpus: GPUs the PyTorch backend will use; then one worker
        per GPU (each holds a CUDA context and its own copy of the model)."""
        env = os.environ if env is None else env

        def number(name: str, default: float, minimum: float, kind=int):
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                raise SettingsError(f"{name}={raw!r} is not {what}") from None
            if value < minimum:
                raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
            return value

        cpus = available_cpus()
        multi_model = env.get("SAGEMAKER_MULTI_MODEL", "false").strip().lower()
        if multi_model not in ("true", "false", ""):
            raise SettingsError(f"SAGEMAKER_MULTI_MODEL={multi_model!r}: true or false")
        multi_model = multi_model == "true"
        # Multi-model: one worker always, so that every request sees the same loaded models.
        workers = 1 if multi_model else number("SAGEMAKER_MODEL_SERVER_WORKERS", gpus or 1, 1)
        cores = max(1, cpus // workers)
        # Batch transform tells the container its MaxPayloadInMB; BYOC_MAX_PAYLOAD_MB wins.
        payload_mb = number("SAGEMAKER_MAX_PAYLOAD_IN_MB", cls.max_payload_bytes / 2**20, 0.001,
                            float)
        max_payload_bytes = int(number("BYOC_MAX_PAYLOAD_MB", payload_mb, 0.001, float) * 2**20)
        backend = env.get("BYOC_BACKEND", "auto").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise SettingsError(f"BYOC_BACKEND={backend!r}: choose one of {', '.join(BACKENDS)}")
        precision = env.get("BYOC_PRECISION", "auto").strip().lower() or "auto"
        if precision not in PRECISIONS:
            raise SettingsError(f"BYOC_PRECISION={precision!r}: choose one of "
                                f"{', '.join(PRECISIONS)}")
        return cls(
            model_dir=Path(env.get("BYOC_MODEL_DIR") or cls.model_dir),
            port=number("SAGEMAKER_BIND_TO_PORT", cls.port, 1),
            workers=workers,
            # A request alone on the machine runs its network on every core; under load, each
            # core computes one request at a time (serve/cores.py). Many more request threads
            # than cores, so that requests wait for a core in arrival order, and a /ping never
            # waits behind them (a thread waiting holds little more than its request's body).
            intra_op_threads=number("BYOC_THREADS_PER_WORKER", cpus, 1),
            parallel_requests=number("BYOC_PARALLEL_REQUESTS", cores, 1),
            request_threads=number("BYOC_REQUEST_THREADS", max(32, 8 * cores), 1),
            timeout_s=number("SAGEMAKER_MODEL_SERVER_TIMEOUT", cls.timeout_s, 1),
            backend=backend,
            precision=precision,
            max_payload_bytes=max_payload_bytes,
            # Pixels decoded (a JPEG decodes at up to 1/8 scale: a 200-megapixel photo counts
            # about 3). At least one per byte of payload: a lossless photo takes more than a byte
            # a pixel, so every image the payload limit admits (asynchronous: 100 MB) fits.
            max_pixels=number("BYOC_MAX_PIXELS", max(cls.max_pixels, max_payload_bytes), 1),
            max_batch_images=number("BYOC_MAX_BATCH_IMAGES", cls.max_batch_images, 1),
            dynamic_batch=number("BYOC_DYNAMIC_BATCH", cls.dynamic_batch, 0),
            dynamic_batch_wait_s=number("BYOC_DYNAMIC_BATCH_WAIT_MS",
                                        cls.dynamic_batch_wait_s * 1000, 0, float) / 1000,
            default_top_k=number("BYOC_DEFAULT_TOP_K", cls.default_top_k, 1),
            user=env.get("BYOC_SERVER_USER", cls.user).strip() or "root",
            multi_model=multi_model,
            models_root=Path(env.get("BYOC_MODELS_ROOT") or cls.models_root),
            model_memory_bytes=int(number("BYOC_MODEL_MEMORY_MB",
                                          0.6 * memory_limit_bytes() / 2**20, 1, float) * 2**20),
        )
