"""The training's record, in TensorBoard's format: what TensorBoard shows of a run, and what the
rules (debugger/rules.py) read back with TensorBoard's own event reader.

Rank 0 writes it with torch.utils.tensorboard into output/tensorboard (on SageMaker
/opt/ml/output/tensorboard, the LocalPath of the job's TensorBoardOutputConfig, which SageMaker
uploads while the job runs: its managed TensorBoard shows the job live). By global training step:

  every step                  loss/train (the training criterion, label smoothing included), lr
  every step                  classes/labels, classes/mispredicted: histograms over class indices
  every step under fp16 loss scaling (GradScaler: a T4, the default ml.g4dn):
    amp/loss_scale            the scale the step's gradients were computed at
    amp/overflow              at a step the scaler skipped (its gradients held inf or NaN), the
                              scale that overflowed; the weights did not move, so the step's
                              tensor statistics below are left out
  every `interval` steps, and each of the first FIRST_STEPS (but a step the scaler skipped):
    gradient/<param>/mean_abs, gradient/<param>/max_abs    each trained parameter
    weight/<param>/norm, weight/<param>/max_abs
    update_ratio/<param>      |W after - W before| / |W before| across that optimizer step
                              (weights only: a bias starts at 0)
    relu_input/<module>/variance, relu_input/<module>/spread (5th to 95th percentile)
    relu_activity/<module>    histogram: the share of inputs (%) on which each unit is positive
    saturation_input/{tanh,sigmoid}/<module>  histogram of |input| of each tanh and sigmoid
  every epoch, at its last step:
    loss/valid_pass           the training criterion over the validation set (overfit compares
                              it with loss/train)
    epoch/{train_loss, train_acc, valid_loss, valid_acc}
  by the profiler             step/{wait_s, compute_s, epoch} per step; system/<metric> at the
                              step in progress when the sample was taken (seconds apart: some
                              steps have several, some none); torch.profiler's trace
                              (*.pt.trace.json, which TensorBoard's PyTorch profiler plugin reads)

Every tag is on the one axis of global training steps, so that a restart can take back what it
will write again: a job resumed from the checkpoint of step S (a spot restart, after SIGTERM or
SIGKILL) opens its writer with purge_step S + 1, which writes a SessionLog.START that makes
TensorBoard's reader drop every event of step S + 1 and later from the files before it. Each
step is then recorded once, as the reader sees it.

A module called twice in one forward pass (torchvision's blocks reuse their ReLU) is recorded
as <module> and <module>#2. NaN and infinity are recorded as they are: exploding_tensor
looks for them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)
FIRST_STEPS = 10  # poor_weight_initialization judges the first steps: record each of them
ACTIVITY_EDGES = np.arange(0.0, 101.0)  # % of inputs a unit is active on, 1-point buckets
SATURATION_EDGES = np.append(np.arange(0.0, 50.0, 0.5), 1e9)  # |input|, half-unit buckets
SPREAD_SAMPLE = 100_000  # values a percentile is taken over (a strided sample of larger tensors)
EVENT_FILE_PATTERN = "events.out.tfevents.*"


def class_edges(num_classes: int) -> np.ndarray:
    """Histogram edges with one bucket per class index (bucket i ends at i + 0.5)."""
    return np.arange(num_classes + 1) - 0.5


class Recorder:
    """Writes the record. Disabled (another rank, or nowhere to write), every call does nothing."""

    def __init__(self, logdir: Path | None, model: nn.Module, num_classes: int,
                 interval: int = 10):
        self.logdir, self.model, self.interval = logdir, model, interval
        self.num_classes = num_classes
        self.enabled = logdir is not None
        self.writer = None
        self._tensor_step = False
        self._calls: dict[str, int] = {}
        self._before: list[torch.Tensor] | None = None
        self._pending: list[tuple[str, torch.Tensor]] = []  # statistics held for after_update
        self._handles = []

    def start(self, resumed_at: int | None = None) -> "Recorder":
        """resumed_at: the global step of the checkpoint a resumed job continues from; its
        record is appended to, and what the interrupted run wrote after that step is purged.
        None: a new run, whose folder must not hold an earlier run's record."""
        if not self.enabled:
            return self
        from torch.utils.tensorboard import SummaryWriter

        logging.getLogger("tensorboard").setLevel(logging.WARNING)  # a line per read otherwise

        if resumed_at is None and self.logdir.exists():
            stale = list(self.logdir.glob(EVENT_FILE_PATTERN)) + list(
                self.logdir.glob("*.pt.trace.json"))
            if stale:
                log.info("record: removing an earlier run's %d files from %s", len(stale),
                         self.logdir)
                for path in stale:
                    path.unlink()
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.logdir), flush_secs=30,
                                    purge_step=None if resumed_at is None else resumed_at + 1)
        for name, module in self.model.named_modules():
            if isinstance(module, (nn.ReLU, nn.Tanh, nn.Sigmoid)):
                self._handles.append(module.register_forward_pre_hook(self._activation(name)))
        return self

    def _trained(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def records_tensors(self, step: int) -> bool:
        return self.enabled and (step <= FIRST_STEPS or step % self.interval == 0)

    def start_step(self, step: int) -> None:
        """Before the forward pass of global step `step` (1-based)."""
        self._tensor_step = self.records_tensors(step)
        self._calls.clear()
        self._step = step

    def _activation(self, name: str):
        def hook(module, inputs):
            if not self._tensor_step or not module.training:
                return
            calls = self._calls[name] = self._calls.get(name, 0) + 1
            tag = name if calls == 1 else f"{name}#{calls}"
            with torch.no_grad():  # before an in-place ReLU overwrites its input
                x = inputs[0].detach().float()
                if isinstance(module, nn.ReLU):
                    sample = x.reshape(-1)[::max(1, x.numel() // SPREAD_SAMPLE)]
                    low, high = torch.quantile(sample, torch.tensor([0.05, 0.95],
                                                                    device=x.device)).tolist()
                    dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 1 else [0]
                    activity = ((x > 0).float().mean(dim=dims) * 100).cpu().numpy()
                    self.writer.add_scalar(f"relu_input/{tag}/variance", x.var().item(),
                                           self._step)
                    self.writer.add_scalar(f"relu_input/{tag}/spread", high - low, self._step)
                    self.writer.add_histogram(f"relu_activity/{tag}", activity, self._step,
                                              bins=ACTIVITY_EDGES)
                else:
                    kind = "tanh" if isinstance(module, nn.Tanh) else "sigmoid"
                    self.writer.add_histogram(f"saturation_input/{kind}/{tag}",
                                              x.abs().reshape(-1).cpu().numpy(), self._step,
                                              bins=SATURATION_EDGES)
        return hook

    def loss(self, step: int, loss: float, predicted: torch.Tensor, labels: torch.Tensor) -> None:
        """After the forward pass: the loss, and which classes the batch held and missed
        (predicted: the batch's top-1 class indices)."""
        if not self.enabled:
            return
        self.writer.add_scalar("loss/train", loss, step)
        edges = class_edges(self.num_classes)
        truth = labels.detach().cpu().numpy()
        wrong = truth[predicted.detach().cpu().numpy() != truth]
        if truth.size:
            self.writer.add_histogram("classes/labels", truth, step, bins=edges)
        if wrong.size:  # no histogram of nothing: a missing step means none was missed
            self.writer.add_histogram("classes/mispredicted", wrong, step, bins=edges)

    def before_update(self, step: int) -> None:
        """After backward (with loss scaling, after the gradients were unscaled), before the
        optimizer step: gradient and weight statistics, written by after_update once it is known
        that the optimizer took the step."""
        if not self._tensor_step:
            return
        named = [(n, p) for n, p in self._trained() if p.grad is not None]
        if not named:
            return
        names = [n for n, _ in named]
        grads = [p.grad.detach().float() for _, p in named]
        weights = [p.detach().float() for _, p in named]
        sizes = torch.tensor([g.numel() for g in grads], dtype=torch.float64)
        with torch.no_grad():
            figures = torch.stack([
                torch.stack(torch._foreach_norm(grads, 1)), torch.stack(torch._foreach_norm(
                    grads, float("inf"))), torch.stack(torch._foreach_norm(weights, 2)),
                torch.stack(torch._foreach_norm(weights, float("inf")))]).double().cpu()
        for i, name in enumerate(names):
            self._pending += [(f"gradient/{name}/mean_abs", figures[0, i] / sizes[i]),
                              (f"gradient/{name}/max_abs", figures[1, i]),
                              (f"weight/{name}/norm", figures[2, i]),
                              (f"weight/{name}/max_abs", figures[3, i])]
        # Update ratios of weights, not biases: a bias starts at 0, so any update is "infinite".
        moved = [(n, p) for n, p in named if not n.endswith("bias")]
        self._before = [p.detach().clone() for _, p in moved]
        self._before_names = [n for n, _ in moved]

    def after_update(self, step: int, lr: float, loss_scale: float | None = None,
                     skipped: bool = False) -> None:
        """After the optimizer step: the learning rate, and how far the step moved each weight.
        loss_scale: the scale of fp16 loss scaling; skipped: the scaler found inf or NaN in the
        gradients and skipped the step (it halves the scale and tries again, which is how it
        searches for the largest scale that fits): nothing moved, so the step is recorded as an
        overflow and its tensor statistics are left out."""
        if not self.enabled:
            return
        self.writer.add_scalar("lr", lr, step)
        if loss_scale is not None:
            self.writer.add_scalar("amp/loss_scale", loss_scale, step)
        pending, self._pending = self._pending, []
        if skipped:
            self.writer.add_scalar("amp/overflow", loss_scale, step)
            self._before = None
            return
        for tag, value in pending:
            self.writer.add_scalar(tag, value.item(), step)
        if self._before is None:
            return
        now = dict(self._trained())
        with torch.no_grad():
            moved = torch._foreach_sub([now[n].detach() for n in self._before_names], self._before)
            ratios = (torch.stack(torch._foreach_norm(moved, 2)).double().cpu()
                      / (torch.stack(torch._foreach_norm(self._before, 2)).double().cpu() + 1e-12))
        for name, ratio in zip(self._before_names, ratios.tolist()):
            self.writer.add_scalar(f"update_ratio/{name}", ratio, step)
        self._before = None

    def epoch(self, step: int, record: dict, valid_criterion_loss: float) -> None:
        """After an epoch's validation: the validation loss and its figures, at its last step."""
        if not self.enabled:
            return
        self.writer.add_scalar("loss/valid_pass", valid_criterion_loss, step)
        for key in ("train_loss", "train_acc", "valid_loss", "valid_acc"):
            self.writer.add_scalar(f"epoch/{key}", record[key], step)

    def profile(self, steps: list[dict], system: list[dict]) -> None:
        """The profiler's new step timings and system samples (each at its "step")."""
        if not self.enabled:
            return
        for s in steps:
            for key in ("wait_s", "compute_s", "epoch"):
                self.writer.add_scalar(f"step/{key}", s[key], s["step"])
        for s in system:
            for key, value in s.items():
                if key not in ("t", "step"):
                    self.writer.add_scalar(f"system/{key}", value, s["step"])

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def has_record(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob(EVENT_FILE_PATTERN))
