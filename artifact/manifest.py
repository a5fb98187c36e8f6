"""manifest.json: what a model folder holds and how to feed it. Written by train/, read by serve/."""
from __future__ import annotations

import dataclasses
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_VERSION = 1
# The files of a model folder (artifact/__init__.py says what each holds): their one home.
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
BASELINE_FILE = "baseline.json"
ARCHIVE_FILE = "model.tar.gz"  # the folder as SageMaker uploads it
ONNX_INPUT = "images"
ONNX_OUTPUT = "logits"


class ArtifactError(ValueError):
    """The model folder is missing something or contradicts itself."""


@dataclass
class Preprocessing:
    """Eval-time input pipeline: decode to RGB, resize the shorter side, centre-crop, normalise."""

    image_size: int = 224  # side of the square crop fed to the network
    resize_size: int = 256  # shorter side after resizing, before the crop
    interpolation: str = "bilinear"  # PIL resampling filter name
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class Manifest:
    architecture: str  # torchvision model name, e.g. "resnet50"
    classes: list[str]  # label of each output index
    hidden_units: list[int] = field(default_factory=list)  # classifier head layers
    dropout: float = 0.0
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    name: str = "image-classifier"
    version: str = "0"
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)  # library versions at training time
    onnx_max_abs_diff: float | None = None  # PyTorch vs ONNX Runtime logits on sample inputs
    # Reduced-precision copies of model.onnx: {"int8": {"file", "agreement", "accuracy",
    # "fp32_accuracy", "images", "passed", ...}} (train/quantize.py)
    precisions: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        if data.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"manifest format_version {data.get('format_version')!r} is not supported "
                f"(this code reads version {FORMAT_VERSION}); retrain or upgrade the server"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ArtifactError(f"manifest has unknown fields {unknown}")
        data = dict(data)
        data["preprocessing"] = Preprocessing(**data.get("preprocessing", {}))
        try:
            manifest = cls(**data)
        except TypeError as e:
            raise ArtifactError(f"manifest is incomplete: {e}") from None
        if len(manifest.classes) < 2:
            raise ArtifactError("manifest lists fewer than two classes")
        return manifest


def write_manifest(model_dir: str | os.PathLike, manifest: Manifest) -> Path:
    path = Path(model_dir) / MANIFEST_FILE
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path


def read_manifest(model_dir: str | os.PathLike) -> Manifest:
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(
            f"no {MANIFEST_FILE} in {model_dir}: is this a model folder written by train/ "
            "(on SageMaker: the model.tar.gz of a training job)?"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON: {e}") from None
    return Manifest.from_dict(data)


def unpacked(source: str | os.PathLike, work: str | os.PathLike) -> Path:
    """A model folder from a folder, a model.tar.gz, or a folder holding only a model.tar.gz (as
    a processing job receives a training job's artifact); tarballs are unpacked under work."""
    path = Path(source)
    if path.is_dir() and not (path / MANIFEST_FILE).is_file() and (path / ARCHIVE_FILE).is_file():
        path = path / ARCHIVE_FILE
    if path.is_dir():
        return path
    if not path.is_file():
        raise ArtifactError(f"{source} does not exist: give a model folder or its model.tar.gz")
    folder = Path(work) / "model"
    try:
        with tarfile.open(path) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(folder, filter="data")
            else:  # Python before 3.11.4 (Debian 12's): refuse what the data filter refuses
                for member in archive.getmembers():
                    if (member.name.startswith("/") or ".." in Path(member.name).parts
                            or not (member.isfile() or member.isdir())):
                        raise ArtifactError(f"{source}: {member.name} is not a plain file "
                                            "inside the archive")
                archive.extractall(folder)
    except tarfile.TarError as e:
        raise ArtifactError(f"{source} is not a model.tar.gz: {e}") from None
    return folder
