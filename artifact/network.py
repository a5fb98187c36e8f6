"""The network: a torchvision backbone whose last Linear layer is replaced by our classifier head.

Training builds it (with pretrained weights) and serving's PyTorch backend rebuilds it from the
manifest, then loads model.safetensors; both go through build_network so the keys always match.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from artifact.manifest import WEIGHTS_FILE, Manifest


def make_head(in_features: int, hidden_units: list[int], dropout: float, num_classes: int):
    """Linear -> ReLU -> Dropout for each hidden layer, then the class layer."""
    layers: list[nn.Module] = []
    for units in hidden_units:
        layers += [nn.Linear(in_features, units), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = units
    if not hidden_units and dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear classifier layer to replace")
    return linears[-1]


def build_network(
    architecture: str,
    num_classes: int,
    hidden_units: list[int],
    dropout: float,
    weights: torchvision.models.WeightsEnum | None = None,
    backbone_state_dict: Mapping[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, str]:
    """Returns (model, dotted name of the head). weights: torchvision's pretrained weights
    (downloaded or taken from TORCH_HOME); backbone_state_dict: the same read from a file."""
    model = torchvision.models.get_model(architecture, weights=weights)
    if backbone_state_dict is not None:
        model.load_state_dict(backbone_state_dict)
    head_name, last = last_linear(model)
    head = make_head(last.in_features, hidden_units, dropout, num_classes)
    parent_name, _, child = head_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, head)
    return model, head_name


def load_trained(model_dir: str | Path, manifest: Manifest) -> nn.Module:
    """The trained network of a model folder, in eval mode on the CPU."""
    from safetensors.torch import load_file

    model, _ = build_network(
        manifest.architecture, manifest.num_classes, manifest.hidden_units, manifest.dropout
    )
    model.load_state_dict(load_file(Path(model_dir) / WEIGHTS_FILE))
    return model.eval()


class ClassifierWithFeatures:
    """A trained network answering (probabilities, the features its last Linear layer takes) for
    a batch: what artifact/baseline.py describes images with."""

    def __init__(self, model: nn.Module, device="cpu"):
        self.torch, self.device = torch, torch.device(device)
        self.model = model.to(self.device).eval()
        self._features = []
        last_linear(self.model)[1].register_forward_pre_hook(
            lambda _, inputs: self._features.append(inputs[0].detach().float().cpu()))

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._features.clear()
        with self.torch.no_grad():
            logits = self.model(self.torch.from_numpy(batch).to(self.device)).float()
        return logits.softmax(1).cpu().numpy(), self._features[-1].numpy()
