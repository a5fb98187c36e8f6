"""Fine-tune a torchvision CNN on a folder data set, on SageMaker's training contract.

    python -m train.train --data-dir demo_data --output-root /tmp/run --weights none --epochs 3
    torchrun --nproc_per_node 2 -m train.train ...        (DistributedDataParallel)

In the training image, `train` runs this through train/launcher.py with SageMaker's channels and
hyperparameters.json. Every failure ends in output/failure (reason, then traceback) and a
non-zero exit. Read it top to bottom: train_one_epoch, evaluate, fit (the epoch loop), load_data,
setup, resume, then run and main.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import numpy as np

from artifact.manifest import INT8_FILE, Manifest, Preprocessing, write_manifest
from debugger import hook as debug_hook
from debugger import profiler, report, rules
from debugger.record import Recorder
from debugger.watch import RuleWatch
from train import checkpoint, distributed, quantize, tracking
from train.config import (NOT_TRAINING, ConfigError, TrainConfig, from_hyperparameters,
                          hyperparameter_help, pairs_to_dict)
from train.data import CachedImages, DecodeCache, ShardedSampler, Split, load_splits, prepare
from train.environment import DataError, Paths, require_channels, resolve_paths, write_failure
from train.evaluate import loss_and_correct, plot_history, predict, test_report
from train.export import export_int8, write_artifact
from train.metrics import format_metrics
from train.model import (
    WeightsUnavailable,
    create_model,
    freeze_batchnorm_stats,
    make_optimizer,
    make_scheduler,
    set_trainable,
)
from train.transforms import Normalizer, eval_transform, train_transform

log = logging.getLogger("train")
EXIT_STOPPED = 143  # 128 + SIGTERM, as a shell reports a process stopped by it
# Errors whose message alone tells the user what to fix.
USER_ERRORS = (ConfigError, DataError, WeightsUnavailable, tracking.TrackingUnavailable)


@dataclass(frozen=True)
class Precision:
    """Mixed precision on CUDA: bfloat16 where the GPU computes it natively (compute capability
    8.0+: A10G, L4, A100, H100), else float16 with loss scaling (T4, the default ml.g4dn; V100).
    torch.cuda.is_bf16_supported() says yes on a T4 too, where bfloat16 is slowly emulated."""
    dtype: torch.dtype | None = None  # None: float32 throughout
    device_type: str = "cuda"
    initial_loss_scale: float = 2.0 ** 16  # GradScaler's own default

    @classmethod
    def choose(cls, device: torch.device, amp: bool) -> "Precision":
        if device.type != "cuda" or not amp:
            return cls(None)
        major, _ = torch.cuda.get_device_capability(device)
        return cls(torch.bfloat16 if major >= 8 else torch.float16)

    @property
    def loss_scaling(self) -> bool:
        """float16 gradients underflow without GradScaler; bfloat16 has float32's range."""
        return self.dtype == torch.float16

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """GradScaler, which does nothing unless the loss is scaled."""
        return torch.amp.GradScaler(self.device_type, init_scale=self.initial_loss_scale,
                                    enabled=self.loss_scaling)


@dataclass
class TrainingState:
    """Where the run stands: what a checkpoint saves and restores."""
    epoch: int = 0  # epochs completed
    steps: int = 0  # training steps completed (the record's global step)
    consumed: int = 0  # images this rank has trained on in the current epoch (shards are equal)
    partial: list[float] | None = None  # rank 0's [loss sum, correct, count] of that epoch so far
    history: list[dict] = field(default_factory=list)  # one record per completed epoch
    best_acc: float = -1.0
    best_epoch: int = 0
    best_model: dict | None = None  # the best epoch's state_dict, on the CPU: what is exported


@dataclass
class Data:
    splits: dict[str, Split]
    report: dict  # what prepare() skipped and why
    train: torch.utils.data.DataLoader
    valid: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader | None  # rank 0's whole test split
    evaluation: Callable[[str, int | None], torch.utils.data.DataLoader]  # a whole split, unshuffled


@dataclass
class Training:
    """Everything one run holds; train_one_epoch, evaluate and fit take it whole."""
    config: TrainConfig
    paths: Paths
    ctx: distributed.Context
    data: Data
    model: nn.Module  # the network itself: its state is saved and exported
    net: nn.Module  # what the steps run through: model, or its DistributedDataParallel wrapper
    normalizer: Normalizer
    criterion: nn.Module  # the training loss (label smoothing included)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    precision: Precision
    hook: object  # the smdebug hook, or None
    recorder: Recorder  # the TensorBoard record (rank 0's; disabled on the others)
    watch: RuleWatch | None  # the rules over the record (rank 0 only)
    profiler: profiler.Profiler
    tracker: tracking.Tracker  # the MLflow run (rank 0's, when there is a tracking server)
    stop: checkpoint.StopRequested
    checkpoints: checkpoint.JobCheckpoints
    progress: TrainingState = field(default_factory=TrainingState)
    stopped_by: rules.Verdict | None = None  # the rule whose action stopped training early

    @property
    def classes(self) -> list[str]:
        return self.data.splits["train"].classes


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Each (epoch, rank) gets its own stream: a resumed epoch sees the same augmentations."""
    torch.manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)


def train_one_epoch(training: Training) -> list[float]:
    """One pass over this rank's shard, from where the epoch stands; returns [loss sum, correct,
    count] summed over ranks. When any rank is asked to stop (SIGTERM), every rank stops after
    the same step, and rank 0 saves the checkpoint before they exit."""
    t, ctx, progress = training, training.ctx, training.progress
    t.net.train()
    freeze_batchnorm_stats(t.model)
    # Partial sums of a resumed epoch are rank 0's own (only rank 0 saves checkpoints).
    sums = (progress.partial if ctx.is_main else None) or [0.0, 0.0, 0.0]
    epoch, steps = progress.epoch + 1, len(t.data.train)
    for step, (images, labels) in enumerate(t.profiler.timed(t.data.train, epoch), start=1):
        global_step = progress.steps + 1
        t.recorder.start_step(global_step)
        labels = labels.to(ctx.device, non_blocking=True)
        with t.precision.autocast():
            logits = t.net(t.normalizer(images))
            loss = t.criterion(logits, labels)
        loss_value = loss.item()
        predicted = logits.argmax(1)
        t.recorder.loss(global_step, loss_value, predicted, labels)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"the training loss became {loss_value} at epoch {epoch} "
                                     f"step {step}: lower lr (now {t.config.lr}) or check the data")
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        optimizer_step(t, global_step)
        progress.steps = global_step
        t.profiler.end_step(global_step, loss_value)
        n = len(labels)
        sums = [sums[0] + loss_value * n, sums[1] + (predicted == labels).sum().item(),
                sums[2] + n]
        progress.consumed += n
        if ctx.is_main and step % t.config.log_every_steps == 0:
            log.info("epoch %d step %d/%d batch_loss=%.4f lr=%.3g", epoch, step, steps,
                     loss_value, t.scheduler.get_last_lr()[-1])
        # Ranks see SIGTERM at different steps; one that stopped alone would leave the others
        # waiting in DDP's all-reduce until torchrun kills them all, unsaved.
        if ctx.any_rank(t.stop.requested):
            progress.partial = sums
            save_checkpoint(t)
            ctx.barrier()  # torchrun stops every worker as soon as one exits: after the save
            raise checkpoint.TrainingStopped(
                f"training was stopped by SIGTERM during epoch {epoch}; a checkpoint was saved. "
                "Run the same job again (a spot restart does) to resume.")
    return ctx.all_sum(sums)


def optimizer_step(training: Training, global_step: int) -> None:
    """The optimizer's step through the scaler, recorded around it. Under fp16 loss scaling the
    scaler skips a step whose gradients overflowed and halves its scale (the first steps of a
    run often do, from 65536): the learning-rate schedule then waits for the next step taken,
    and the record leaves the step's tensor statistics out, since nothing moved, and notes the
    overflow (debugger/record.py)."""
    t = training
    scale = t.scaler.get_scale() if t.precision.loss_scaling else None
    if scale is not None and t.recorder.records_tensors(global_step):
        t.scaler.unscale_(t.optimizer)  # the record's gradients as the optimizer sees them
    t.recorder.before_update(global_step)
    lr = t.scheduler.get_last_lr()[-1]
    t.scaler.step(t.optimizer)
    t.scaler.update()
    skipped = scale is not None and t.scaler.get_scale() < scale  # the scaler backed off
    if not skipped:
        t.scheduler.step()
    t.recorder.after_update(global_step, lr, loss_scale=scale, skipped=skipped)


def evaluate(training: Training, loader) -> tuple[float, float, float]:
    """Validation loss (plain cross-entropy) and accuracy over every rank's shard, and this
    rank's mean batch loss under the training criterion (what the overfit rules compare with
    the training loss; the debugger hook saves each batch's)."""
    t = training
    debug_hook.set_mode(t.hook, "eval")
    batch_losses = []
    logits, labels = predict(t.model, loader, t.normalizer, t.precision.autocast,
                             loss_fn=lambda out, y: batch_losses.append(t.criterion(out, y).item()))
    loss, correct, count = t.ctx.all_sum(loss_and_correct(logits, labels, nn.CrossEntropyLoss()))
    return loss / count, correct / count, float(np.mean(batch_losses)) if batch_losses else 0.0


def fit(training: Training) -> None:
    """Train to config.epochs (or early stopping) from where progress stands; keep the best epoch."""
    t, config, progress = training, training.config, training.progress
    while progress.epoch < config.epochs:
        epoch = progress.epoch
        if not progress.consumed:
            seed_epoch(config.seed, epoch, t.ctx.rank)
        t.data.train.sampler.set_epoch(epoch, start=progress.consumed)
        debug_hook.set_mode(t.hook, "train")
        resumed_at, started = progress.consumed, time.perf_counter()
        loss_sum, correct, count = train_one_epoch(t)
        train_seconds = time.perf_counter() - started
        valid_loss, valid_acc, valid_criterion_loss = evaluate(t, t.data.valid)
        if valid_acc > progress.best_acc:
            progress.best_acc, progress.best_epoch = valid_acc, epoch + 1
            progress.best_model = {k: v.detach().cpu().clone()
                                   for k, v in t.model.state_dict().items()}
        record = {
            "epoch": epoch + 1, "train_loss": loss_sum / count, "train_acc": correct / count,
            "valid_loss": valid_loss, "valid_acc": valid_acc,
            "valid_best_acc": progress.best_acc,  # the objective: the exported model's accuracy
            "epoch_time": time.perf_counter() - started,
            "images_per_sec": (progress.consumed - resumed_at) * t.ctx.world_size / train_seconds,
        }
        progress.epoch, progress.consumed, progress.partial = epoch + 1, 0, None
        progress.history.append(record)
        if t.ctx.is_main:
            log.info(format_metrics(**record))
        t.recorder.epoch(progress.steps, record, valid_criterion_loss)
        verdicts = judge_rules(t)
        stop_rule = t.watch.stop_rule(verdicts) if t.watch else None
        save_checkpoint(t)
        # after the checkpoint: a restart logs again only what it will train again
        t.tracker.epochs(progress.history, {v.rule: v.issues for v in verdicts})
        if t.ctx.any_rank(stop_rule is not None):  # rank 0 judges; every rank stops
            if stop_rule is not None:
                t.stopped_by = stop_rule
                log.warning("rule_actions: %s fired, so training stops after epoch %d (%s)",
                            stop_rule.rule, progress.epoch, stop_rule.why)
            break
        patience = config.early_stopping_patience
        if patience and progress.epoch - progress.best_epoch >= patience:
            log.info("early stopping: valid accuracy has not improved for %d epochs", patience)
            break


def judge_rules(training: Training) -> list[rules.Verdict]:
    """On rank 0: every rule over the record so far, the rules that found issues for the first
    time logged, and every rule's issue count as a #metrics line; empty on the other ranks."""
    t = training
    if t.watch is None:
        return []
    t.recorder.profile(*t.profiler.drain())
    t.recorder.flush()
    verdicts = t.watch.judge()
    t.watch.log_new_issues(verdicts)
    log.info(format_metrics(**{f"issues_{v.rule}": v.issues for v in verdicts}))
    return verdicts


def load_data(config: TrainConfig, ctx: distributed.Context, splits: dict[str, Split],
              cache_dir: Path) -> Data:
    """Decode every image once into the cache (one pass per host), then the loaders."""
    cpus = max(1, (os.cpu_count() or 1) // ctx.local_world_size)
    workers = config.num_workers if config.num_workers >= 0 else min(8, max(1, cpus - 1))
    cache = DecodeCache(cache_dir, config.resize_size, config.interpolation)
    if ctx.local_rank == 0:  # the other ranks then find every image in the cache
        data_report = prepare(splits, cache, workers=cpus)
    ctx.barrier()
    if ctx.local_rank != 0:
        data_report = prepare(splits, cache, workers=1)

    def loader(split, transform, *, shuffle, rank=0, world=1, first=None):
        # Training shards must be equal (DDP steps in lockstep); evaluation keeps every image.
        dataset = CachedImages(splits[split], cache, transform)
        if first is not None:  # the split's first images, in file order
            dataset = torch.utils.data.Subset(dataset, range(min(first, len(dataset))))
        sampler = ShardedSampler(len(dataset), rank, world, shuffle, config.seed,
                                 equal_shards=shuffle)
        drop_last = shuffle and len(sampler) > config.batch_size  # no 1-image BatchNorm batches
        # Each iterator draws its workers' base seed from this generator, not from the global
        # stream the augmentations and dropout draw from: a job resumed mid-epoch makes a new
        # iterator, and would otherwise draw once more than the job left alone.
        return torch.utils.data.DataLoader(
            dataset, batch_size=config.batch_size, sampler=sampler, num_workers=workers,
            pin_memory=ctx.device.type == "cuda", drop_last=drop_last,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(config.seed * 1_000_033 + rank),
        )

    evaluation = eval_transform(config.image_size)
    return Data(
        splits=splits, report=data_report,
        train=loader("train", train_transform(config.image_size), shuffle=True, rank=ctx.rank,
                     world=ctx.world_size),
        valid=loader("valid", evaluation, shuffle=False, rank=ctx.rank, world=ctx.world_size),
        test=loader("test", evaluation, shuffle=False) if "test" in splits and ctx.is_main
        else None,
        evaluation=lambda split, first=None: loader(split, evaluation, shuffle=False, first=first),
    )


def preprocessing(config: TrainConfig) -> Preprocessing:
    return Preprocessing(image_size=config.image_size, resize_size=config.resize_size,
                         interpolation=config.interpolation)


def setup(config: TrainConfig, paths: Paths, ctx: distributed.Context, data: Data,
          model: nn.Module, head_name: str, tracker: tracking.Tracker) -> Training:
    """The model on its device, the loss, optimizer, schedule, precision, hook, record, rules
    and profiler."""
    set_trainable(model, head_name, config.finetune_blocks)
    cuda_layout = ctx.device.type == "cuda" and config.channels_last
    steps = preprocessing(config)
    normalizer = Normalizer(steps.mean, steps.std, ctx.device, cuda_layout)
    model.to(ctx.device, memory_format=torch.channels_last if cuda_layout else torch.preserve_format)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    precision = Precision.choose(ctx.device, config.amp)
    # The hook first: smdebug's protobuf runtime must be chosen before TensorBoard's writer
    # imports protobuf.
    hook = debug_hook.create(config.debugger, model, criterion, paths.tensors_dir,
                             save_interval=config.debugger_save_interval,
                             bfloat16=precision.dtype == torch.bfloat16, is_main=ctx.is_main)
    num_classes = len(data.splits["train"].classes)
    net = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    optimizer = make_optimizer(model, head_name, config)
    return Training(
        config=config, paths=paths, ctx=ctx, data=data, model=model, net=net,
        normalizer=normalizer, criterion=criterion, optimizer=optimizer,
        scheduler=make_scheduler(optimizer, config, len(data.train)),
        scaler=precision.scaler(),
        precision=precision, hook=hook,
        recorder=Recorder(paths.tensorboard_dir if ctx.is_main else None, model, num_classes,
                          config.record_interval),
        watch=RuleWatch(paths.tensorboard_dir, config.rule_parameters, config.rule_actions)
        if ctx.is_main else None,
        profiler=profiler.Profiler(
            config.profiler and ctx.is_main,
            interval=profiler.sagemaker_interval() or config.profiler_interval,
            gpus=[ctx.device.index or 0] if ctx.device.type == "cuda" else [],
            trace_dir=paths.tensorboard_dir, trace_steps=config.profiler_trace_steps),
        tracker=tracker,
        stop=checkpoint.StopRequested().install(),
        checkpoints=checkpoint.JobCheckpoints(paths.checkpoint_dir, checkpoint.job_name()),
    )


def save_checkpoint(training: Training) -> None:
    """The checkpoint, and beside it the record as written up to its step (a spot restart
    gets nothing else back)."""
    t = training
    if t.ctx.is_main:
        t.checkpoints.save({
            "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(), "scaler": t.scaler.state_dict(),
            "state": vars(t.progress), "rng": checkpoint.rng_state(), "classes": t.classes,
            "architecture": t.config.architecture, "config": vars(t.config),
        })
        t.recorder.profile(*t.profiler.drain())  # the steps since the epoch began, on SIGTERM
        t.recorder.flush()
        t.checkpoints.keep_record(t.paths.tensorboard_dir)


def refuse_other_settings(where: checkpoint.JobCheckpoints, saved: dict, config: TrainConfig,
                          classes: list[str] | None = None) -> None:
    """ConfigError when the job's checkpoint was saved with other training hyperparameters
    (or, given classes, other classes) than this run's: resuming it would not train what was
    asked."""
    changed = {k: (saved["config"].get(k), v) for k, v in vars(config).items()
               if k not in NOT_TRAINING and saved["config"].get(k) != v}
    other_classes = classes is not None and saved["classes"] != classes
    if changed or other_classes:
        what = (", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
                or f"classes {len(saved['classes'])} -> {len(classes)}")
        raise ConfigError(
            f"{where.path} is a checkpoint of job {saved.get('job')!r} with other settings "
            f"({what}): resuming it would not train what was asked. Delete it, or give this run "
            "another job name (TRAINING_JOB_NAME) or checkpoint location")


def resume(training: Training) -> bool:
    """Continue this job from its own checkpoint, if it has one. Other jobs' checkpoints (a
    shared checkpoint prefix brings them here) are never read, resumed or overwritten."""
    t, where = training, training.checkpoints
    others = where.other_jobs()
    if others:
        log.info("%s also holds other jobs' checkpoints, left alone: %s", where.root,
                 ", ".join(others))
    saved = where.load()
    if saved is None:
        return False
    refuse_other_settings(where, saved, t.config, t.classes)
    for name in ("model", "optimizer", "scheduler", "scaler"):
        getattr(t, name).load_state_dict(saved[name])
    t.progress = TrainingState(**saved["state"])
    if t.progress.consumed:  # mid-epoch: continue the random streams where they stopped
        checkpoint.set_rng_state(saved["rng"])
    log.info("resumed from %s at epoch %d (+%d images)", where.directory, t.progress.epoch + 1,
             t.progress.consumed)
    if t.ctx.is_main:
        restored = where.restore_record(t.paths.tensorboard_dir)
        if restored:
            log.info("record: the steps before the checkpoint restored into %s (%s)",
                     t.paths.tensorboard_dir, ", ".join(restored))
    return True


def run(config: TrainConfig, paths: Paths, ctx: distributed.Context,
        tracker: tracking.Tracker) -> dict:
    require_channels(paths)
    splits = load_splits(paths.train, paths.valid, paths.test)
    # Before the decoding pass, so that missing weights fail in seconds. Seeded: the new head's
    # initial weights (all of them with weights=none) are the same on every run of a config.
    torch.manual_seed(config.seed)
    model, head_name = create_model(config, len(splits["train"].classes))
    data = load_data(config, ctx, splits, paths.cache_dir)
    training = setup(config, paths, ctx, data, model, head_name, tracker)
    resumed = resume(training)
    training.recorder.start(resumed_at=training.progress.steps if resumed else None)
    training.profiler.start(first_step=training.progress.steps + 1)
    try:
        fit(training)
    except BaseException as e:
        report_run(training, failure=e)
        raise
    report_run(training)
    if not ctx.is_main:
        return {}
    model.load_state_dict(training.progress.best_model)
    log.info("best valid accuracy %.4f at epoch %d", training.progress.best_acc,
             training.progress.best_epoch)
    metrics = write_outputs(training)
    tracker.finish(metrics, paths.output_data_dir, paths.model_dir, model_location(paths))
    training.checkpoints.mark_finished()
    return metrics


def model_location(paths: Paths) -> str:
    """Where the model goes: the job's model.tar.gz in S3 (the launch scripts give the job's S3
    output path as BYOC_OUTPUT_PATH), else the model folder."""
    output = os.environ.get("BYOC_OUTPUT_PATH", "").rstrip("/")
    job = os.environ.get("TRAINING_JOB_NAME", "")
    if output and job:
        return f"{output}/{job}/output/model.tar.gz"
    return str(paths.model_dir)


def report_run(training: Training, failure: BaseException | None = None) -> None:
    """Close the debugger hook and the record, run the rules over the whole record once more,
    and write rule_report.json, profile.json and training_report.html to output/data: after a
    failed run too, which is when they matter."""
    t, config, progress = training, training.config, training.progress
    debug_hook.close(t.hook, t.model, t.criterion)
    profile = t.profiler.stop()
    if not t.ctx.is_main:
        return
    out = t.paths.output_data_dir
    try:
        started = time.perf_counter()
        verdicts = judge_rules(t)
        t.recorder.close()
        log.info("rules over %s (%.1f s):\n%s", t.paths.tensorboard_dir,
                 time.perf_counter() - started, rules.summary(verdicts))
        out.mkdir(parents=True, exist_ok=True)
        (out / "rule_report.json").write_text(json.dumps(
            [{**v.to_dict(), "stopped_training": t.stopped_by is not None
              and v.rule == t.stopped_by.rule} for v in verdicts], indent=2) + "\n")
        (out / "profile.json").write_text(json.dumps(profile) + "\n")
        if failure:
            outcome = f"failed: {failure}"
        elif t.stopped_by:
            outcome = (f"stopped early by rule {t.stopped_by.rule} (rule_actions), after epoch "
                       f"{len(progress.history)}: {t.stopped_by.why}")
        else:
            outcome = "completed"
        facts = {"job": os.environ.get("TRAINING_JOB_NAME", "local run"),
                 "architecture": config.architecture, "epochs run": len(progress.history),
                 "best valid accuracy": f"{progress.best_acc:.4f} (epoch {progress.best_epoch})",
                 "outcome": outcome}
        path = report.write(out / "training_report.html", title="Training report", facts=facts,
                            history=progress.history, profile=profile,
                            debugger_verdicts=[v for v in verdicts if v.rule in rules.RULE_FUNCTIONS],
                            profiler_verdicts=[v for v in verdicts
                                               if v.rule in profiler.RULE_FUNCTIONS])
        log.info("training report: %s", path)
    except Exception:  # the report must never hide the run's own outcome
        log.exception("could not write the training report")
        t.recorder.close()


def write_outputs(training: Training) -> dict:
    """Reports and plots in output/data, the test evaluation, and the model artifact."""
    t, config, progress, data = training, training.config, training.progress, training.data
    out = t.paths.output_data_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_report.json").write_text(json.dumps(data.report, indent=2, default=str))
    (out / "history.json").write_text(json.dumps(progress.history, indent=2))
    plot_history(progress.history, out / "training_curves.png")
    metrics = {"best_valid_acc": progress.best_acc, "best_epoch": progress.best_epoch,
               "epochs_run": len(progress.history)}
    if data.test is not None:
        logits, labels = predict(t.model, data.test, t.normalizer, t.precision.autocast)
        files = [str(p) for p, _ in data.splits["test"].samples]
        result = test_report(logits, labels, files, t.classes, nn.CrossEntropyLoss(), out)
        log.info(format_metrics(test_loss=result["test_loss"], test_top1=result["test_top1"],
                                test_top5=result["test_top5"]))
        metrics.update({k: result[k] for k in ("test_loss", "test_top1", "test_top5")})
    steps = preprocessing(config)
    sample = None
    if config.export_onnx:  # real eval images to check the ONNX export on
        images, _ = next(iter(data.test if data.test is not None else data.valid))
        sample = Normalizer(steps.mean, steps.std, torch.device("cpu"), False)(images[:4])
    manifest = Manifest(
        architecture=config.architecture, classes=t.classes, hidden_units=config.hidden_units,
        dropout=config.dropout, preprocessing=steps, name=config.model_name,
        version=os.environ.get("TRAINING_JOB_NAME", time.strftime("%Y%m%d-%H%M%S")),
        metrics=metrics,
    )
    write_artifact(t.model, manifest, t.paths.model_dir, sample)
    if config.export_onnx and config.export_int8:
        add_int8(training, manifest)
    if config.drift_baseline:
        add_baseline(training, manifest)
    log.info("model artifact written to %s", t.paths.model_dir)
    return metrics


def add_int8(training: Training, manifest: Manifest) -> None:
    """The int8 copy of model.onnx for CPU endpoints, calibrated on the first training images,
    and its agreement with fp32 on the validation and test images, in the manifest."""
    t, started = training, time.perf_counter()
    cpu = Normalizer(manifest.preprocessing.mean, manifest.preprocessing.std, torch.device("cpu"),
                     False)

    def batches(split: str, first: int | None = None):
        for images, labels in t.data.evaluation(split, first):
            yield cpu(images).numpy(), labels.numpy()

    calibration = [x for x, _ in batches("train", quantize.CALIBRATION_IMAGES)]
    checked = [b for split in ("valid", "test") if split in t.data.splits for b in batches(split)]
    try:
        manifest.precisions["int8"] = export_int8(
            t.paths.model_dir, calibration, [x for x, _ in checked],
            np.concatenate([y for _, y in checked]))
    except Exception as e:  # a degenerate network (diverged weights) cannot be calibrated
        (t.paths.model_dir / INT8_FILE).unlink(missing_ok=True)
        log.warning("int8 copy not made (%s: %s): the model is served in fp32. Diverged "
                    "weights do this: see the rules' verdicts (exploding_tensor, "
                    "weight_update_ratio)", type(e).__name__, e)
        return
    write_manifest(t.paths.model_dir, manifest)
    result = manifest.precisions["int8"]
    log.info("int8 copy: top-1 agreement with fp32 %.2f%% over %d images, accuracy %.4f "
             "(fp32 %.4f): %s; %.1f s", 100 * result["agreement"], result["images"],
             result["accuracy"], result["fp32_accuracy"],
             "served by default" if result["passed"] else "not served by default (the gate "
             f"needs {100 * quantize.MIN_AGREEMENT:.1f}% and at most "
             f"{100 * quantize.MAX_ACCURACY_DROP:.1f} points lost)", time.perf_counter() - started)


def add_baseline(training: Training, manifest: Manifest) -> None:
    """baseline.json: what the validation images look like to the model, for the drift monitor
    (monitor/) to compare captured traffic with."""
    from artifact.baseline import describe_images, make_baseline
    from artifact.manifest import BASELINE_FILE
    from artifact.network import ClassifierWithFeatures

    t, started = training, time.perf_counter()
    files = [str(path) for path, _ in t.data.splits["valid"].samples]
    described = describe_images(((f, None) for f in files), manifest,
                                ClassifierWithFeatures(t.model, t.ctx.device))
    baseline = make_baseline(described, manifest)
    (t.paths.model_dir / BASELINE_FILE).write_text(json.dumps(baseline) + "\n")
    (t.paths.model_dir / BASELINE_FILE).chmod(0o644)
    log.info("drift baseline of %d validation images written (%.1f s)", described.images,
             time.perf_counter() - started)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Hyperparameters (--name value):\n" + hyperparameter_help(),
    )
    parser.add_argument("--data-dir", help="folder with train/ valid/ [test/] (default: channels)")
    parser.add_argument("--output-root", help="plays /opt/ml: model/ output/ checkpoints/")
    parser.add_argument("--checkpoint-dir", help="default /opt/ml/checkpoints")
    parser.add_argument("--cache-dir", help="decoded image cache (default /tmp/byoc-image-cache)")
    parser.add_argument("--hyperparameters",
                        help="a hyperparameters.json (values as SageMaker writes them)")
    args, rest = parser.parse_known_args(argv)
    values = json.loads(Path(args.hyperparameters).read_text()) if args.hyperparameters else {}
    values.update(pairs_to_dict(rest))
    return args, values


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "matplotlib"):  # the ONNX exporter logs every pass
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args, values = parse_args(sys.argv[1:] if argv is None else argv)
    paths = resolve_paths(args.data_dir, args.output_root, args.checkpoint_dir, args.cache_dir)
    ctx = distributed.init()
    if ctx.local_rank == 0:  # a rerun in the same folder must not report an old failure
        paths.failure_file.unlink(missing_ok=True)
    tracker = tracking.Tracker(tracking.tracking_uri() if ctx.is_main else None,
                               checkpoint.job_name())
    try:
        config = from_hyperparameters(values)
        log.info("hyperparameters: %s", json.dumps(vars(config)))
        checkpoints = checkpoint.JobCheckpoints(paths.checkpoint_dir, checkpoint.job_name())
        if ctx.is_main and checkpoints.finished():
            log.info("%s holds the checkpoint of a job %s that finished: this one trains afresh, "
                     "in a run of its own", checkpoints.directory, checkpoints.job)
            checkpoints.start_afresh()
        ctx.barrier()  # the other ranks resume nothing of it either
        saved = checkpoints.load(tensors=False)
        if saved is not None:  # before its MLflow run is reopened, which a refusal would fail
            refuse_other_settings(checkpoints, saved, config)
        tracker.start(vars(config), checkpoints.tracking_run(), config.mlflow_required,
                      on_run=checkpoints.keep_tracking_run)
        run(config, paths, ctx, tracker)
        return 0
    except checkpoint.TrainingStopped as e:
        log.warning("%s", e)
        tracker.fail(str(e), "KILLED")  # a restart continues the run
        if ctx.local_rank == 0:
            write_failure(paths.failure_file, str(e))
        return EXIT_STOPPED
    except Exception as e:
        reason = str(e) if isinstance(e, USER_ERRORS) else f"training failed: {type(e).__name__}: {e}"
        log.error("%s", reason, exc_info=not isinstance(e, USER_ERRORS))
        tracker.fail(reason)
        if ctx.local_rank == 0:
            write_failure(paths.failure_file, reason, e)
        return 1
    finally:
        tracker.close()
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
