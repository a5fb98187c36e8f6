"""Evaluation: loss/accuracy for validation, and the full test report with its plots.

Also a model's evaluation on its own, as the pipeline's evaluation step runs it (a processing
job on the training image; scripts/sagemaker_pipeline.py):

    python -m train.evaluate --model MODEL_DIR_OR_TAR --test TEST_DIR --out OUT_DIR

The same preprocessing as training's evaluation (artifact.preprocess) and the same report
(test_report): evaluation.json, confusion_matrix.png, misclassified.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, loader, normalizer, autocast,
            loss_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 logits, labels) for every sample of the loader, in loader order, on the CPU.
    loss_fn, when given, is called on each batch: the debugger hook saves what it computes."""
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        with autocast():
            logits = model(normalizer(images))
        if loss_fn is not None:
            loss_fn(logits.float(), labels.to(logits.device))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels)
    if not all_logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)


def loss_and_correct(logits: torch.Tensor, labels: torch.Tensor, criterion) -> list[float]:
    """[summed loss, correct, count]: sums, so that ranks can add theirs up."""
    if len(labels) == 0:
        return [0.0, 0.0, 0.0]
    loss = criterion(logits, labels).item() * len(labels)
    correct = (logits.argmax(1) == labels).sum().item()
    return [loss, float(correct), float(len(labels))]


def test_report(
    logits: torch.Tensor,
    labels: torch.Tensor,
    files: list[str],
    classes: list[str],
    criterion,
    out_dir: Path,
    about: dict | None = None,
) -> dict:
    """Top-1/top-5, per-class accuracy, confusion matrix PNG and misclassified files; about:
    more fields for evaluation.json (which model was scored)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    num_classes = len(classes)
    k = min(5, num_classes)
    topk = logits.topk(k, dim=1).indices
    predicted = topk[:, 0]
    top1 = (predicted == labels).float().mean().item()
    top5 = (topk == labels[:, None]).any(1).float().mean().item()
    loss = criterion(logits, labels).item()

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels.numpy(), predicted.numpy()), 1)
    per_class = {
        name: {
            "images": int(confusion[i].sum()),
            "accuracy": float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None,
        }
        for i, name in enumerate(classes)
    }
    probabilities = logits.softmax(1)
    with open(out_dir / "misclassified.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "true_label", "predicted_label", "predicted_probability"])
        for i in (predicted != labels).nonzero().flatten().tolist():
            writer.writerow(
                [files[i], classes[labels[i]], classes[predicted[i]],
                 f"{probabilities[i, predicted[i]].item():.4f}"]
            )
    plot_confusion(confusion, classes, out_dir / "confusion_matrix.png")
    report = {
        "test_loss": loss,
        "test_top1": top1,
        "test_top5": top5,
        "top5_k": k,
        "images": len(labels),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        # What SageMaker's model registry shows as the model's quality (its Model Quality schema).
        "multiclass_classification_metrics": model_quality(confusion, classes),
        **(about or {}),
    }
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def model_quality(confusion: np.ndarray, classes: list[str]) -> dict:
    """Accuracy and class-weighted F1 in SageMaker Model Quality's multiclass format
    ({"value", "standard_deviation"} per metric; the confusion matrix by class name)."""
    n = confusion.sum()
    accuracy = float(np.trace(confusion) / n) if n else 0.0
    support, predicted = confusion.sum(1), confusion.sum(0)
    diagonal = np.diag(confusion).astype(float)
    precision = np.divide(diagonal, predicted, out=np.zeros_like(diagonal), where=predicted > 0)
    recall = np.divide(diagonal, support, out=np.zeros_like(diagonal), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(diagonal),
                   where=precision + recall > 0)
    return {
        "accuracy": {"value": accuracy,
                     "standard_deviation": float(np.sqrt(accuracy * (1 - accuracy) / max(n, 1)))},
        "weighted_f1": {"value": float((f1 * support).sum() / max(n, 1))},
        "confusion_matrix": {true: {pred: int(confusion[i, j]) for j, pred in enumerate(classes)}
                             for i, true in enumerate(classes)},
    }


def plot_confusion(confusion: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    size = min(4 + 0.18 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = confusion.sum(1, keepdims=True)
    ax.imshow(confusion / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(j, i, confusion[i, j], ha="center", va="center", fontsize=7,
                            color="white" if confusion[i, j] > rows[i, 0] / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test, row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_history(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train vs valid (the seed's result.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "valid"):
        left.plot(epochs, [h[f"{split}_loss"] for h in history], marker="o", label=split)
        right.plot(epochs, [h[f"{split}_acc"] for h in history], marker="o", label=split)
    left.set(title="loss", xlabel="epoch")
    right.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PROCESSING_FAILURE = Path("/opt/ml/output/message")  # a processing job's failure reason
log = logging.getLogger("train.evaluate")


class EvaluationError(ValueError):
    """What the user must fix, in one message."""


def evaluate_model(model: str | Path, test_dir: str | Path, out_dir: str | Path,
                   batch_size: int = 32) -> dict:
    """Score a trained model on a test folder (one sub-folder per class): test_report's figures."""
    from artifact.manifest import ArtifactError, read_manifest, unpacked
    from artifact.network import load_trained
    from artifact.preprocess import eval_input
    from train.data import scan_split

    with tempfile.TemporaryDirectory() as work:
        try:
            folder = unpacked(model, work)
            manifest = read_manifest(folder)
        except ArtifactError as e:
            raise EvaluationError(str(e)) from None
        if not Path(test_dir).is_dir():
            raise EvaluationError(f"the test folder {test_dir} does not exist")
        split = scan_split("test", Path(test_dir))
        if split.classes != manifest.classes:
            raise EvaluationError(
                f"the model {manifest.name} version {manifest.version} knows "
                f"{len(manifest.classes)} classes ({_few(manifest.classes)}), but the test folder "
                f"{test_dir} has {len(split.classes)} ({_few(split.classes)}): evaluate it on "
                "the data set it was trained on")
        network = load_trained(folder, manifest)
        logits, labels, files, batch, batch_labels = [], [], [], [], []

        def run():
            with torch.no_grad():
                logits.append(network(torch.from_numpy(np.stack(batch))).float())
            labels.extend(batch_labels)
            batch.clear()
            batch_labels.clear()

        for path, label in split.samples:
            try:
                batch.append(eval_input(path, manifest.preprocessing))
            except (OSError, ValueError) as e:
                log.warning("skipping %s: not a readable image (%s)", path, type(e).__name__)
                continue
            batch_labels.append(label)
            files.append(str(path))
            if len(batch) == batch_size:
                run()
        if batch:
            run()
        if not files:
            raise EvaluationError(f"no readable image in the test folder {test_dir}")
    return test_report(torch.cat(logits), torch.tensor(labels), files, manifest.classes,
                       nn.CrossEntropyLoss(), Path(out_dir),
                       about={"model": {"name": manifest.name, "version": manifest.version}})


def _few(classes: list[str]) -> str:
    return ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="Score a trained model on a test folder.")
    parser.add_argument("--model", default="/opt/ml/processing/model",
                        help="model folder, model.tar.gz, or a folder holding one")
    parser.add_argument("--test", default="/opt/ml/processing/test")
    parser.add_argument("--out", default="/opt/ml/processing/evaluation")
    args = parser.parse_args(argv)
    try:
        report = evaluate_model(args.model, args.test, args.out)
    except EvaluationError as e:
        log.error("%s", e)
        if Path("/opt/ml/processing").is_dir():  # in a processing job: its FailureReason
            PROCESSING_FAILURE.parent.mkdir(parents=True, exist_ok=True)
            PROCESSING_FAILURE.write_text(str(e))
        return 1
    log.info("test top-1 %.4f, top-5 %.4f over %d images; %s", report["test_top1"],
             report["test_top5"], report["images"], Path(args.out) / "evaluation.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
