"""Fine-tune a torchvision CNN on a folder data set, on SageMaker's training contract.

    python -m train.train --data-dir demo_data --output-root /tmp/run --weights none --epochs 3
    torchrun --nproc_per_node 2 -m train.train ...        (DistributedDataParallel)

In the training image, `train` runs this through train/launcher.py with SageMaker's channels and
hyperparameters. Every failure ends in output/failure (reason, then traceback) and a non-zero exit.
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
from pathlib import Path

import torch
from torch import nn

from artifact.manifest import Manifest, Preprocessing
from debugger import hook as debug_hook
from debugger import profiler, report, rules
from train import checkpoint, distributed
from train.config import ConfigError, TrainConfig, describe, from_hyperparameters, pairs_to_dict
from train.data import CachedImages, DecodeCache, ShardedSampler, load_splits, prepare
from train.environment import DataError, Paths, require_channels, resolve_paths, write_failure
from train.evaluate import loss_and_correct, plot_history, predict, test_report
from train.export import write_artifact
from train.metrics import format_metrics
from train.model import (
    WeightsUnavailable,
    create_model,
    freeze_batchnorm_stats,
    param_groups,
    set_trainable,
)
from train.transforms import Normalizer, eval_transform, train_transform

log = logging.getLogger("train")
EXIT_STOPPED = 143  # 128 + SIGTERM, as a shell reports a process stopped by it
# Errors whose message alone tells the user what to fix.
USER_ERRORS = (ConfigError, DataError, WeightsUnavailable)


def lr_lambda(warmup_steps: int, total_steps: int):
    """Linear warmup to the peak learning rate, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Each (epoch, rank) gets its own stream: a resumed epoch sees the same augmentations."""
    torch.manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)


def make_autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext


def train_one_epoch(model, loader, normalizer, criterion, optimizer, scheduler, scaler, autocast,
                    state: dict, stop: checkpoint.StopRequested, save_state, ctx, config,
                    monitor: profiler.Monitor) -> dict:
    """One pass over this rank's shard; returns [loss sum, correct, count] summed over ranks.
    state["partial"] carries the sums of an epoch resumed mid-way."""
    model.train()
    freeze_batchnorm_stats(model)
    # Partial sums of a resumed epoch are rank 0's own (only rank 0 saves checkpoints).
    sums = (state["partial"] if ctx.is_main else None) or [0.0, 0.0, 0.0]
    steps = len(loader)
    for step, (images, labels) in enumerate(monitor.timed(loader, state["epoch"] + 1), start=1):
        labels = labels.to(ctx.device, non_blocking=True)
        with autocast():
            logits = model(normalizer(images))
            loss = criterion(logits, labels)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"the training loss became {loss_value} at epoch {state['epoch'] + 1} step "
                f"{step}: lower lr (now {config.lr}) or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        monitor.end_step(loss_value)
        n = len(labels)
        sums = [sums[0] + loss_value * n, sums[1] + (logits.argmax(1) == labels).sum().item(),
                sums[2] + n]
        state["consumed"] += n  # this rank's images so far in the epoch (shards are equal)
        if ctx.is_main and step % config.log_every_steps == 0:
            log.info("epoch %d step %d/%d batch_loss=%.4f lr=%.3g", state["epoch"] + 1, step,
                     steps, loss_value, scheduler.get_last_lr()[-1])
        if stop.requested:
            state["partial"] = sums
            save_state()
            raise checkpoint.TrainingStopped(
                f"training was stopped by SIGTERM during epoch {state['epoch'] + 1}; a checkpoint "
                "was saved. Run the job again with the same checkpoint location to resume."
            )
    return ctx.all_sum(sums)


def run(config: TrainConfig, paths: Paths, ctx: distributed.Context) -> dict:
    require_channels(paths)
    splits = load_splits(paths.train, paths.valid, paths.test)
    classes = splits["train"].classes
    model, head_name = create_model(config, len(classes))  # fails fast when weights are missing
    set_trainable(model, head_name, config.finetune_blocks)

    cpus = max(1, (os.cpu_count() or 1) // ctx.local_world_size)
    workers = config.num_workers if config.num_workers >= 0 else min(8, max(1, cpus - 1))
    cache = DecodeCache(paths.cache_dir, config.resize_size, config.interpolation)
    if ctx.local_rank == 0:  # one decoding pass per host; the other ranks then hit the cache
        data_report = prepare(splits, cache, workers=cpus)
    ctx.barrier()
    if ctx.local_rank != 0:
        data_report = prepare(splits, cache, workers=1)

    def loader(split, transform, *, shuffle, rank=0, world=1):
        # Training shards must be equal (DDP steps in lockstep); evaluation keeps every image.
        equal_shards = shuffle
        dataset = CachedImages(splits[split], cache, transform)
        sampler = ShardedSampler(len(dataset), rank, world, shuffle, config.seed, equal_shards)
        drop_last = shuffle and len(sampler) > config.batch_size  # no 1-image BatchNorm batches
        return torch.utils.data.DataLoader(
            dataset, batch_size=config.batch_size, sampler=sampler, num_workers=workers,
            pin_memory=ctx.device.type == "cuda", drop_last=drop_last,
            persistent_workers=workers > 0,
        )

    train_loader = loader("train", train_transform(config.image_size), shuffle=True,
                          rank=ctx.rank, world=ctx.world_size)
    valid_loader = loader("valid", eval_transform(config.image_size), shuffle=False,
                          rank=ctx.rank, world=ctx.world_size)

    preprocessing = Preprocessing(image_size=config.image_size, resize_size=config.resize_size,
                                  interpolation=config.interpolation)
    use_cuda_layout = ctx.device.type == "cuda" and config.channels_last
    normalizer = Normalizer(preprocessing.mean, preprocessing.std, ctx.device, use_cuda_layout)
    model.to(ctx.device, memory_format=torch.channels_last if use_cuda_layout else torch.preserve_format)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()
    autocast = make_autocast(ctx.device, config.amp)
    bfloat16 = ctx.device.type == "cuda" and config.amp and torch.cuda.is_bf16_supported()
    hook = debug_hook.create(config.debugger, model, criterion, paths.tensors_dir,
                             save_interval=config.debugger_save_interval, bfloat16=bfloat16,
                             is_main=ctx.is_main)
    net = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    groups = param_groups(model, head_name, config)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, momentum=config.momentum, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_lambda(round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch),
    )
    scaler = torch.amp.GradScaler(
        "cuda", enabled=ctx.device.type == "cuda" and config.amp and not bfloat16
    )

    state = {"epoch": 0, "consumed": 0, "partial": None, "history": [], "best_acc": -1.0,
             "best_epoch": 0, "best_model": None}
    saved = checkpoint.load(paths.checkpoint_dir)
    if saved is not None:
        restore(saved, paths.checkpoint_dir, classes, config, state,
                model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)

    def save_state():
        if ctx.is_main:
            checkpoint.save(paths.checkpoint_dir, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "state": state, "rng": checkpoint.rng_state(), "classes": classes,
                "architecture": config.architecture, "config": vars(config),
            })

    stop = checkpoint.StopRequested().install()
    monitor = profiler.Monitor(
        config.profiler and ctx.is_main,
        interval=profiler.sagemaker_interval() or config.profiler_interval,
        gpus=[ctx.device.index or 0] if ctx.device.type == "cuda" else [],
        trace_dir=paths.output_data_dir / "profiler-trace", trace_steps=config.profiler_trace_steps,
    ).start()
    try:
        while state["epoch"] < config.epochs:
            epoch = state["epoch"]
            if not state["consumed"]:
                seed_epoch(config.seed, epoch, ctx.rank)
            train_loader.sampler.set_epoch(epoch, start=state["consumed"])
            debug_hook.set_mode(hook, "train")
            resumed_at = state["consumed"]
            started = time.perf_counter()
            loss_sum, correct, count = train_one_epoch(
                net, train_loader, normalizer, criterion, optimizer, scheduler, scaler, autocast,
                state, stop, save_state, ctx, config, monitor,
            )
            train_seconds = time.perf_counter() - started
            debug_hook.set_mode(hook, "eval")
            logits, labels = predict(model, valid_loader, normalizer, autocast,
                                     loss_fn=criterion if hook else None)
            v_loss, v_correct, v_count = ctx.all_sum(loss_and_correct(logits, labels, eval_criterion))
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / count, "train_acc": correct / count,
                "valid_loss": v_loss / v_count, "valid_acc": v_correct / v_count,
                "epoch_time": time.perf_counter() - started,
                "images_per_sec": (state["consumed"] - resumed_at) * ctx.world_size / train_seconds,
            }
            state.update(epoch=epoch + 1, consumed=0, partial=None)
            state["history"].append(record)
            if record["valid_acc"] > state["best_acc"]:
                state["best_acc"], state["best_epoch"] = record["valid_acc"], epoch + 1
                state["best_model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if ctx.is_main:
                log.info(format_metrics(**record))
            save_state()
            patience = config.early_stopping_patience
            if patience and epoch + 1 - state["best_epoch"] >= patience:
                log.info("early stopping: valid accuracy has not improved for %d epochs", patience)
                break
    except BaseException as e:
        report_run(config, paths, state, ctx, monitor, hook, (model, criterion), failure=e)
        raise
    report_run(config, paths, state, ctx, monitor, hook, (model, criterion))

    if not ctx.is_main:
        return {}
    model.load_state_dict(state["best_model"])
    log.info("best valid accuracy %.4f at epoch %d", state["best_acc"], state["best_epoch"])
    test_loader = None
    if "test" in splits:
        test_loader = loader("test", eval_transform(config.image_size), shuffle=False)
    metrics = write_outputs(model, state, splits, data_report, test_loader or valid_loader,
                            "test" in splits, normalizer, autocast, preprocessing, paths, config)
    return metrics


def report_run(config, paths: Paths, state: dict, ctx, monitor: profiler.Monitor, hook,
               hooked: tuple, failure: BaseException | None = None) -> None:
    """Close the debugger hook, run the rules over its trial, and write rule_report.json and
    training_report.html to output/data: after a failed run too, which is when they matter."""
    trial = debug_hook.close(hook, *hooked)
    profile = monitor.stop()
    if not ctx.is_main:
        return
    out = paths.output_data_dir
    try:
        debugger_verdicts = None
        if trial is not None and (trial / "index").is_dir():
            started = time.perf_counter()
            debugger_verdicts = rules.evaluate(trial, config.rule_parameters)
            log.info("debugger rules over %s (%.1f s):\n%s", trial,
                     time.perf_counter() - started, rules.summary(debugger_verdicts))
        profiler_verdicts = profiler.evaluate(profile, config.rule_parameters)
        out.mkdir(parents=True, exist_ok=True)
        verdicts = (debugger_verdicts or []) + profiler_verdicts
        (out / "rule_report.json").write_text(
            json.dumps([v.to_dict() for v in verdicts], indent=2) + "\n")
        (out / "profile.json").write_text(json.dumps(profile) + "\n")
        facts = {"job": os.environ.get("TRAINING_JOB_NAME", "local run"),
                 "architecture": config.architecture, "epochs run": len(state["history"]),
                 "best valid accuracy": f"{state['best_acc']:.4f} (epoch {state['best_epoch']})",
                 "outcome": f"failed: {failure}" if failure else "completed"}
        path = report.write(out / "training_report.html", title="Training report", facts=facts,
                            history=state["history"], profile=profile,
                            debugger_verdicts=debugger_verdicts,
                            profiler_verdicts=profiler_verdicts)
        log.info("training report: %s", path)
    except Exception:  # the report must never hide the run's own outcome
        log.exception("could not write the training report")


def restore(saved: dict, where: Path, classes: list[str], config: TrainConfig, state: dict,
            **stateful) -> None:
    """Load a checkpoint into the training state and each stateful object (model, optimizer...)."""
    if saved["classes"] != classes or saved["architecture"] != config.architecture:
        raise ConfigError(
            f"the checkpoint in {where} belongs to another model ({saved['architecture']}, "
            f"{len(saved['classes'])} classes); delete it or use another checkpoint location"
        )
    for name, obj in stateful.items():
        obj.load_state_dict(saved[name])
    state.update(saved["state"])
    if state["consumed"]:  # mid-epoch: continue the random streams where they stopped
        checkpoint.set_rng_state(saved["rng"])
    log.info("resumed from %s at epoch %d (+%d images)", where, state["epoch"] + 1,
             state["consumed"])


def write_outputs(model, state, splits, data_report, eval_loader, has_test, normalizer, autocast,
                  preprocessing: Preprocessing, paths: Paths, config: TrainConfig) -> dict:
    """Reports and plots in output/data, the test evaluation, and the model artifact."""
    out = paths.output_data_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_report.json").write_text(json.dumps(data_report, indent=2, default=str))
    (out / "history.json").write_text(json.dumps(state["history"], indent=2))
    plot_history(state["history"], out / "training_curves.png")
    classes = splits["train"].classes
    metrics = {"best_valid_acc": state["best_acc"], "best_epoch": state["best_epoch"],
               "epochs_run": len(state["history"])}
    if has_test:
        logits, labels = predict(model, eval_loader, normalizer, autocast)
        files = [str(p) for p, _ in splits["test"].samples]
        report = test_report(logits, labels, files, classes, nn.CrossEntropyLoss(), out)
        log.info(format_metrics(test_loss=report["test_loss"], test_top1=report["test_top1"],
                                test_top5=report["test_top5"]))
        metrics.update({k: report[k] for k in ("test_loss", "test_top1", "test_top5")})
    sample = None
    if config.export_onnx:  # real eval images to check the ONNX export on
        images, _ = next(iter(eval_loader))
        cpu = Normalizer(preprocessing.mean, preprocessing.std, torch.device("cpu"), False)
        sample = cpu(images[:4])
    manifest = Manifest(
        architecture=config.architecture, classes=classes, hidden_units=config.hidden_units,
        dropout=config.dropout, preprocessing=preprocessing, name=config.model_name,
        version=os.environ.get("TRAINING_JOB_NAME", time.strftime("%Y%m%d-%H%M%S")),
        metrics=metrics,
    )
    write_artifact(model, manifest, paths.model_dir, sample)
    log.info("model artifact written to %s", paths.model_dir)
    return metrics


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Hyperparameters (--name value):\n" + describe(),
    )
    parser.add_argument("--data-dir", help="folder with train/ valid/ [test/] (default: channels)")
    parser.add_argument("--output-root", help="plays /opt/ml: model/ output/ checkpoints/")
    parser.add_argument("--checkpoint-dir", help="default /opt/ml/checkpoints")
    parser.add_argument("--cache-dir", help="decoded image cache (default /tmp/byoc-image-cache)")
    parser.add_argument("--hyperparameters", help="a hyperparameters.json (values as SageMaker sends them)")
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
    try:
        config = from_hyperparameters(values)
        log.info("hyperparameters: %s", json.dumps(vars(config)))
        run(config, paths, ctx)
        return 0
    except checkpoint.TrainingStopped as e:
        log.warning("%s", e)
        if ctx.local_rank == 0:
            write_failure(paths.failure_file, str(e))
        return EXIT_STOPPED
    except Exception as e:
        reason = str(e) if isinstance(e, USER_ERRORS) else f"training failed: {type(e).__name__}: {e}"
        log.error("%s", reason, exc_info=not isinstance(e, USER_ERRORS))
        if ctx.local_rank == 0:
            write_failure(paths.failure_file, reason, e)
        return 1
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
