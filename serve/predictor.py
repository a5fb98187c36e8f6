"""From image bytes to top-k predictions, on ONNX Runtime (CPU image) or PyTorch (GPU image).

Everything a prediction needs comes from the model folder (artifact/): the manifest's classes and
preprocessing, and model.onnx or model.safetensors. Nothing here imports train/.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from artifact.manifest import (ONNX_FILE, ONNX_INPUT, WEIGHTS_FILE, ArtifactError, Manifest,
                               read_manifest)
from artifact.preprocess import IMAGE_FORMATS, ImageTooLarge, eval_input
from serve.cores import CORES, Turn

# train/quantize.py's gate, restated in the log and errors (serve/ does not import train/)
INT8_GATE = "top-1 agreement with fp32 of at least 99.5% and at most 0.5 points of accuracy lost"

log = logging.getLogger(__name__)


class BadImage(ValueError):
    """A request's image cannot be classified; the message says why (the caller's fault)."""


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_backend(model_dir: Path, requested: str) -> str:
    """'onnx' or 'torch' for this model folder and image, or ArtifactError saying what to change."""
    has_onnx = (model_dir / ONNX_FILE).is_file()
    has_weights = (model_dir / WEIGHTS_FILE).is_file()
    if requested == "auto":
        requested = "onnx" if has_onnx and installed("onnxruntime") else "torch"
    if requested == "onnx":
        if not installed("onnxruntime"):
            raise ArtifactError("BYOC_BACKEND=onnx, but this image has no ONNX Runtime: "
                                "use the CPU serving image (byoc-serve)")
        if not has_onnx:
            raise ArtifactError(f"{model_dir} has no {ONNX_FILE}: retrain with the current "
                                "train/ (it exports ONNX), or serve it with the GPU serving "
                                "image (byoc-serve-gpu), which runs PyTorch")
    else:
        if not installed("torch"):
            raise ArtifactError(
                f"{model_dir} needs the PyTorch backend ("
                + ("BYOC_BACKEND=torch" if has_onnx else f"it has no {ONNX_FILE}")
                + "), and this image has no PyTorch: use the GPU serving image (byoc-serve-gpu)")
        if not has_weights:
            raise ArtifactError(f"{model_dir} has no {WEIGHTS_FILE} for the PyTorch backend")
    return requested


def choose_precision(model_dir: Path, manifest: Manifest, backend: str,
                     requested: str) -> tuple[str, str]:
    """("int8" or "fp32", why). auto takes the int8 copy train/ wrote when it passed its gate on
    the job's validation and test images; ArtifactError when what was asked cannot be had."""
    int8 = manifest.precisions.get("int8")
    has_int8 = int8 is not None and (model_dir / int8.get("file", "")).is_file()
    if backend != "onnx":
        if requested == "int8":
            raise ArtifactError("BYOC_PRECISION=int8 runs on ONNX Runtime: use the CPU serving "
                                "image (byoc-serve)")
        return "fp32", "PyTorch serves the fp32 weights"
    if requested == "fp32":
        return "fp32", "BYOC_PRECISION=fp32"
    if not has_int8:
        if requested == "int8":
            raise ArtifactError(f"BYOC_PRECISION=int8, but {model_dir} has no int8 copy: retrain "
                                "with export_int8=true (the default), or serve fp32")
        return "fp32", "the model folder has no int8 copy"
    figures = (f"top-1 agreement with fp32 {100 * int8['agreement']:.2f}% over {int8['images']} "
               f"validation and test images, accuracy {int8['accuracy']:.4f} against "
               f"{int8['fp32_accuracy']:.4f}")
    if requested == "int8":
        return "int8", f"BYOC_PRECISION=int8 ({figures})"
    if int8["passed"]:
        return "int8", figures
    return "fp32", f"the int8 copy failed its gate ({INT8_GATE}): {figures}"


@dataclass(frozen=True)
class Plan:
    """What load_predictor serves from a model folder, decided before anything loads."""
    manifest: Manifest
    backend: str  # onnx or torch
    precision: str  # fp32 or int8
    why: str  # the precision's reason, for the log
    file: Path  # the weights it loads

    def sessions(self, threads: int) -> int:
        """Copies of the network in memory: ONNX Runtime keeps one on every core and a
        single-threaded one (OnnxBackend)."""
        return 2 if self.backend == "onnx" and threads > 1 else 1


def plan(model_dir: Path, backend: str = "auto", precision: str = "auto") -> Plan:
    """ArtifactError, saying what to change, when the folder cannot be served so."""
    manifest = read_manifest(model_dir)
    chosen = choose_backend(model_dir, backend)
    numbers, why = choose_precision(model_dir, manifest, chosen, precision)
    if chosen == "torch":
        file = WEIGHTS_FILE
    else:
        file = manifest.precisions["int8"]["file"] if numbers == "int8" else ONNX_FILE
    return Plan(manifest, chosen, numbers, why, model_dir / file)


class OnnxBackend:
    """ONNX Runtime on the CPU, with two sessions of one model: one on every core, for a request
    alone on the machine (the lowest latency), and a single-threaded one, which runs each call on
    its request's thread, for requests beside others (each on a core of its own: serve/cores.py)."""
    name = "onnx"
    cpu = True

    def __init__(self, model_dir: Path, threads: int, file: str = ONNX_FILE):
        import onnxruntime as ort

        def session(count: int):
            options = ort.SessionOptions()
            options.intra_op_num_threads = count
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return ort.InferenceSession(str(model_dir / file), options,
                                        providers=["CPUExecutionProvider"])

        self.alone = session(threads)
        self.beside = session(1) if threads > 1 else self.alone
        self.device = "cpu"

    def logits(self, batch: np.ndarray, all_cores: bool = False) -> np.ndarray:
        model = self.alone if all_cores else self.beside
        return model.run(None, {ONNX_INPUT: batch})[0]


class TorchBackend:
    """PyTorch, on the GPU when there is one; its own thread pool on the CPU."""
    name = "torch"

    def __init__(self, model_dir: Path, manifest: Manifest, threads: int):
        import torch

        from artifact.network import load_trained

        torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.cpu = self.device.type == "cpu"
        self.model = load_trained(model_dir, manifest).to(self.device)
        if self.device.type == "cuda":  # fixed input size: let cuDNN pick its fastest kernels
            torch.backends.cudnn.benchmark = True
            self.model = self.model.to(memory_format=torch.channels_last)

    def logits(self, batch: np.ndarray, all_cores: bool = False) -> np.ndarray:
        with self.torch.inference_mode():
            inputs = self.torch.from_numpy(batch).to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=self.torch.channels_last)
            return self.model(inputs).float().cpu().numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Predictor:
    """Decodes images exactly as evaluation did, runs the backend, answers top-k labels."""

    def __init__(self, manifest: Manifest, backend, max_pixels: int | None = None,
                 precision: str = "fp32", batch_images: int = 1, batch_wait_s: float = 0.0):
        """batch_images > 1: concurrent calls share network runs (serve/batching.py)."""
        self.manifest = manifest
        self.backend = backend
        self.max_pixels = max_pixels
        self.precision = precision
        self.metrics = None  # serve/metrics.py once the app serves it (its decoded, inferred)
        self.batcher = None
        if batch_images > 1:
            from serve.batching import Batcher

            self.batcher = Batcher(self._run, batch_images, batch_wait_s)
        # The network runs within the request's turn on the cores (serve/cores.py) when it runs
        # on them and on the request's own thread; on a GPU, or in the batcher's thread, after.
        self.network_in_turn = backend.cpu and self.batcher is None

    def model_info(self) -> dict:
        return {"name": self.manifest.name, "version": self.manifest.version,
                "architecture": self.manifest.architecture, "backend": self.backend.name,
                "precision": self.precision}

    def decode(self, image: bytes) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self._decode(image)
        finally:
            if self.metrics:
                self.metrics.decoded(time.perf_counter() - started)

    def _decode(self, image: bytes) -> np.ndarray:
        if not image:
            raise BadImage("the image is empty (0 bytes)")
        try:
            return eval_input(image, self.manifest.preprocessing, self.max_pixels)
        except ImageTooLarge as e:
            raise BadImage(f"{e}: send a smaller image (BYOC_MAX_PIXELS sets the limit)") from None
        except UnidentifiedImageError:
            raise BadImage(f"the data is not an image in a supported format "
                           f"({', '.join(IMAGE_FORMATS)})") from None
        except MemoryError:
            raise
        except Exception as e:  # corrupt or crafted data: Pillow raises OSError, SyntaxError,
            # ValueError, but also struct.error, TypeError, IndexError... (tests/unit/test_serve_fuzz)
            raise BadImage(f"the image could not be decoded ({type(e).__name__}: {e}): is it a "
                           "complete, valid image file?") from None

    def probabilities(self, batch: np.ndarray, turn: Turn | None = None) -> np.ndarray:
        """turn: the request's hold on the cores, to run on all of them when it is alone."""
        if self.batcher is not None:
            return softmax(self.batcher(batch))
        if turn is not None and turn.take_all():
            try:
                return softmax(self._run(batch, all_cores=True))
            finally:
                turn.give_back()
        return softmax(self._run(batch))

    def _run(self, batch: np.ndarray, all_cores: bool = False) -> np.ndarray:
        """One network run (with batching, over several requests' images)."""
        started = time.perf_counter()
        logits = self.backend.logits(batch, all_cores)
        if self.metrics:
            self.metrics.inferred(time.perf_counter() - started, len(batch), self.precision)
        return logits

    def top_k(self, probabilities: np.ndarray, k: int) -> list[dict]:
        k = min(k, len(probabilities))
        best = np.argsort(-probabilities, kind="stable")[:k]
        return [{"label": self.manifest.classes[i], "index": int(i),
                 "probability": round(float(probabilities[i]), 6)} for i in best]

    def predict(self, images: list[bytes], k: int) -> list[list[dict]]:
        """Top-k of each image; BadImage, naming the failing image's index in a batch, stops it
        before the network runs."""
        return self.classify(images, k, strict=True)

    def classify(self, images: list[bytes], k: int,
                 strict: bool = False) -> list[list[dict] | BadImage]:
        """Top-k of each image, or the BadImage that says why it has none (strict: raised)."""
        if not images:  # (a batch of records that were all unreadable): no turn to wait for
            return []
        answers: list = []
        # with batching, a batch being gathered waits for this request while it decodes
        decoding = self.batcher.decoding() if self.batcher else contextlib.nullcontext()
        with decoding, CORES.turn() as turn:
            for index, image in enumerate(images):
                try:
                    answers.append(self.decode(image))
                except BadImage as e:
                    if strict:
                        raise BadImage(f"images[{index}]: {e}" if len(images) > 1
                                       else str(e)) from None
                    answers.append(e)
            good = [i for i, a in enumerate(answers) if not isinstance(a, BadImage)]
            if not good:
                return answers
            batch = np.stack([answers[i] for i in good])
            if self.network_in_turn:
                probabilities = self.probabilities(batch, turn)
        if not self.network_in_turn:
            probabilities = self.probabilities(batch)
        for i, p in zip(good, probabilities):
            answers[i] = self.top_k(p, k)
        return answers


def _probe_image(size: int) -> bytes:
    """A small PNG, so the warm-up goes through decoding as well as the network."""
    gradient = np.linspace(0, 255, size * size * 3, dtype=np.float32).reshape(size, size, 3)
    buffer = io.BytesIO()
    Image.fromarray(gradient.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def load_predictor(model_dir: Path, backend: str = "auto", threads: int = 1,
                   max_pixels: int | None = None, *, precision: str = "auto",
                   batch_images: int | None = None, batch_wait_s: float = 0.005) -> Predictor:
    """Load the model folder and prove it works with a warm-up prediction; raise if it does not.
    batch_images: the most images one network run may gather from concurrent requests (None: 8
    for PyTorch on a GPU, else 1, no batching)."""
    started, model_dir = time.perf_counter(), Path(model_dir)
    chosen = plan(model_dir, backend, precision)
    manifest, numbers = chosen.manifest, chosen.precision
    try:
        if chosen.backend == "onnx":
            engine = OnnxBackend(model_dir, threads, chosen.file.name)
        else:
            engine = TorchBackend(model_dir, manifest, threads)
    except PermissionError as e:
        raise ArtifactError(f"cannot read the model ({e}): make its files world-readable, or set "
                            "BYOC_SERVER_USER=root") from None
    except Exception as e:  # a damaged file: say which backend and folder, and what to do
        raise ArtifactError(f"cannot load the {chosen.backend} model in {model_dir} ({e}): is "
                            "the model.tar.gz complete? Re-upload it or retrain") from None
    if batch_images is None:
        batch_images = 8 if str(engine.device) != "cpu" else 1
    predictor = Predictor(manifest, engine, max_pixels, numbers, batch_images, batch_wait_s)
    probe = _probe_image(max(manifest.preprocessing.resize_size, 32))
    warm_up = predictor.decode(probe)[None]
    probabilities = predictor.probabilities(warm_up)  # as a request beside others
    if chosen.sessions(threads) > 1:  # and ONNX Runtime's all-cores session, as a lone request
        probabilities = np.concatenate([probabilities,
                                        softmax(engine.logits(warm_up, all_cores=True))])
    if probabilities.shape[1:] != (manifest.num_classes,) or not np.isfinite(probabilities).all():
        raise ArtifactError(
            f"warm-up prediction gave {probabilities.shape[1]} class scores (finite: "
            f"{bool(np.isfinite(probabilities).all())}); the manifest lists "
            f"{manifest.num_classes} classes: the model files do not match the manifest")
    log.info("model %s %s (%s, %d classes) on %s/%s in %s (%s), %d thread(s), %s: ready in "
             "%.2f s", manifest.name, manifest.version, manifest.architecture,
             manifest.num_classes, engine.name, engine.device, numbers, chosen.why, threads,
             f"batches of up to {batch_images} images within {1000 * batch_wait_s:g} ms"
             if batch_images > 1 else "no batching", time.perf_counter() - started)
    return predictor
