"""Where training reads and writes: SageMaker's /opt/ml layout, or folders given on the command line.

On SageMaker (and in `docker run IMAGE train`) everything comes from the SM_* variables that the
sagemaker-training toolkit sets, falling back to the fixed /opt/ml paths. For development without
Docker, --data-dir (holding train/ valid/ test/) and --output-root replace them.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path

OPT_ML = Path("/opt/ml")
VALID_CHANNELS = ("valid", "validation")


class DataError(ValueError):
    """The data set cannot be trained on as given. The message says what to change."""


@dataclass
class Paths:
    data_dir: str  # where channels were looked for, for messages
    train: Path | None
    valid: Path | None
    test: Path | None
    model_dir: Path  # the artifact; SageMaker uploads it as model.tar.gz
    output_data_dir: Path  # metrics, evaluation report, plots
    failure_file: Path  # SageMaker shows its text as the job's FailureReason
    checkpoint_dir: Path  # synced with checkpoint_s3_uri for spot training
    tensors_dir: Path  # the debugger hook's trial, when not configured by SageMaker
    tensorboard_dir: Path  # the record: TensorBoardOutputConfig's LocalPath, uploaded live
    cache_dir: Path  # decoded, resized images (not under /opt/ml: it is reserved)


def _channel(name: str, data_dir: Path | None) -> Path | None:
    """A channel's folder if it exists: SM_CHANNEL_<NAME>, <data_dir>/<name> or /opt/ml's."""
    candidates = []
    if data_dir is not None:
        candidates.append(data_dir / name)
    else:
        if f"SM_CHANNEL_{name.upper()}" in os.environ:
            candidates.append(Path(os.environ[f"SM_CHANNEL_{name.upper()}"]))
        candidates.append(OPT_ML / "input" / "data" / name)
    return next((p for p in candidates if p.is_dir()), None)


def resolve_paths(
    data_dir: str | None = None,
    output_root: str | None = None,
    checkpoint_dir: str | None = None,
    cache_dir: str | None = None,
) -> Paths:
    """output_root plays /opt/ml's role locally: model/, output/data/, output/failure, checkpoints/."""
    data = Path(data_dir) if data_dir else None
    if output_root:
        root = Path(output_root)
        model_dir, output_dir, checkpoints = root / "model", root / "output", root / "checkpoints"
        output_data = output_dir / "data"
    else:
        model_dir = Path(os.environ.get("SM_MODEL_DIR", OPT_ML / "model"))
        output_dir = Path(os.environ.get("SM_OUTPUT_DIR", OPT_ML / "output"))
        output_data = Path(os.environ.get("SM_OUTPUT_DATA_DIR", output_dir / "data"))
        checkpoints = OPT_ML / "checkpoints"
    return Paths(
        data_dir=str(data) if data else "/opt/ml/input/data",
        train=_channel("train", data),
        valid=next((p for p in (_channel(n, data) for n in VALID_CHANNELS) if p), None),
        test=_channel("test", data),
        model_dir=model_dir,
        output_data_dir=output_data,
        failure_file=output_dir / "failure",
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else checkpoints,
        tensors_dir=output_dir / "tensors",  # where SageMaker's hook config points too
        tensorboard_dir=output_dir / "tensorboard",
        cache_dir=Path(cache_dir or os.environ.get("BYOC_CACHE_DIR", "/tmp/byoc-image-cache")),
    )


def require_channels(paths: Paths) -> None:
    where = paths.data_dir
    if paths.train is None:
        raise DataError(
            f"no 'train' channel: expected a folder of class folders at {where}/train. "
            "On SageMaker pass it as estimator.fit({'train': 's3://bucket/data/train', "
            "'valid': 's3://bucket/data/valid'})."
        )
    if paths.valid is None:
        raise DataError(
            f"no validation channel: expected {where}/valid (or {where}/validation) holding the "
            "same class folders as train. Pass it as the 'valid' channel."
        )


def write_failure(failure_file: Path, reason: str, exc: BaseException | None = None) -> None:
    """SageMaker's failure file: a one-paragraph reason first, then the traceback."""
    text = reason.strip() + "\n"
    if exc is not None:
        text += "\n" + "".join(traceback.format_exception(exc))
    failure_file.parent.mkdir(parents=True, exist_ok=True)
    failure_file.write_text(text)
