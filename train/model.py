"""The model to fine-tune: pretrained weights, which parts train, and their learning rates
(parameter groups, optimizer and schedule, shared with tune/features.py's head-only trials)."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torchvision
from torch import nn

from artifact.network import build_network
from train.config import ConfigError, TrainConfig

log = logging.getLogger(__name__)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for and cannot be had. Training must not start without them."""


def resolve_weights(config: TrainConfig):
    """(torchvision weights enum or None, backbone state_dict from a file or None)."""
    if not config.pretrained:
        return None, None
    path = Path(config.weights)
    if path.suffix in (".pth", ".pt", ".safetensors") or path.is_file():
        if not path.is_file():
            raise WeightsUnavailable(f"weights file {path} does not exist")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return None, load_file(path)
        return None, torch.load(path, map_location="cpu", weights_only=True)
    try:
        enum = torchvision.models.get_model_weights(config.architecture)
    except ValueError:
        raise ConfigError(
            f"unknown architecture {config.architecture!r}; choose a torchvision classification "
            f"model such as: {', '.join(sorted(torchvision.models.list_models(torchvision.models))[:40])}"
        ) from None
    try:
        return enum[config.weights] if config.weights != "DEFAULT" else enum.DEFAULT, None
    except KeyError:
        names = ", ".join(["DEFAULT", "none", *enum.__members__])
        raise ConfigError(f"weights={config.weights!r} is not one of: {names}, or a file path") from None


def create_model(config: TrainConfig, num_classes: int) -> tuple[nn.Module, str]:
    """The network with its new head, pretrained weights loaded; (model, head name)."""
    weights, state_dict = resolve_weights(config)
    try:
        model, head_name = build_network(
            config.architecture, num_classes, config.hidden_units, config.dropout,
            weights=weights, backbone_state_dict=state_dict,
        )
    except ValueError as e:
        raise ConfigError(f"architecture {config.architecture!r}: {e}") from None
    except (OSError, RuntimeError) as e:
        if weights is None:
            raise
        raise WeightsUnavailable(
            f"cannot get the pretrained weights {weights} for {config.architecture} "
            f"from {weights.url} ({type(e).__name__}: {e}). Without internet access, put the file "
            "in $TORCH_HOME/hub/checkpoints, or pass it as weights=/path/to/file (for example a "
            "'weights' channel), or train from scratch with weights=none."
        ) from e
    log.info("model %s, weights %s, head %s", config.architecture, config.weights, head_name)
    return model, head_name


def backbone_blocks(model: nn.Module) -> list[str]:
    """The backbone's blocks from input to output: the units that finetune_blocks counts."""
    if hasattr(model, "layer4"):  # ResNet, ResNeXt, Wide ResNet
        return [f"layer{i}" for i in range(1, 5)]
    if hasattr(model, "encoder") and hasattr(model.encoder, "layers"):  # ViT
        return [f"encoder.layers.{name}" for name, _ in model.encoder.layers.named_children()]
    if hasattr(model, "features"):  # EfficientNet, ConvNeXt, AlexNet, VGG, MobileNet, DenseNet
        return [f"features.{name}" for name, _ in model.features.named_children()]
    raise ConfigError(
        f"finetune_blocks > 0 is not supported for {type(model).__name__}: use 0 (head only) "
        "or -1 (the whole network)"
    )


def set_trainable(model: nn.Module, head_name: str, finetune_blocks: int) -> None:
    """Freeze all but the head, the last finetune_blocks blocks and what follows them."""
    params = list(model.named_parameters())
    if finetune_blocks == -1:
        first = 0
    elif finetune_blocks == 0:
        first = next(i for i, (n, _) in enumerate(params) if n.startswith(head_name + "."))
    else:
        blocks = backbone_blocks(model)
        if finetune_blocks > len(blocks):
            log.warning("finetune_blocks=%d > %d blocks: training them all", finetune_blocks, len(blocks))
        start = blocks[-min(finetune_blocks, len(blocks))] + "."
        first = next(i for i, (n, _) in enumerate(params) if n.startswith(start))
    for i, (_, p) in enumerate(params):
        p.requires_grad_(i >= first)
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    total = sum(p.numel() for _, p in params)
    log.info("trainable parameters: %d of %d (%.1f%%)", trainable, total, 100 * trainable / total)


def freeze_batchnorm_stats(model: nn.Module) -> None:
    """Keep frozen BatchNorm layers in eval mode so their running statistics stay pretrained."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()


def param_groups(model: nn.Module, head_name: str | None, config: TrainConfig) -> list[dict]:
    """Head at lr, backbone at lr * backbone_lr_scale; no weight decay on biases and norms.
    head_name None: the whole module is the head."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_head = head_name is None or name.startswith(head_name + ".")
            groups.setdefault((is_head, p.ndim > 1), []).append(p)
    return [
        {
            "params": params,
            "lr": config.lr * (1.0 if is_head else config.backbone_lr_scale),
            "weight_decay": config.weight_decay if decay else 0.0,
        }
        for (is_head, decay), params in sorted(groups.items())
    ]


def make_optimizer(model: nn.Module, head_name: str | None,
                   config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, head_name, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups)


def lr_lambda(warmup_steps: int, total_steps: int):
    """Linear warmup to the peak learning rate, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped after every batch: warmup_epochs of warmup, then cosine decay over the rest."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch))
