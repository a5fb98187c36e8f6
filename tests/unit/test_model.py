"""train.model and artifact.network: heads, fine-tuning depth, weights."""
import pytest
import torch
import torchvision

from artifact.network import build_network
from train.config import ConfigError, TrainConfig
from train.model import WeightsUnavailable, create_model, param_groups, set_trainable


@pytest.mark.parametrize("arch,head", [
    ("resnet18", "fc"), ("efficientnet_b0", "classifier.1"), ("convnext_tiny", "classifier.2"),
    ("alexnet", "classifier.6"), ("vit_b_16", "heads.head"),
])
def test_head_replaces_the_last_linear_layer(arch, head):
    model, head_name = build_network(arch, 133, [750, 500, 250], 0.5)
    assert head_name == head
    size = 224 if arch == "vit_b_16" else 64
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, size, size)).shape == (1, 133)


def trainable_prefixes(model):
    return {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}


def test_finetune_depths():
    config = TrainConfig(architecture="resnet18", weights="none")
    model, head = create_model(config, 5)
    set_trainable(model, head, 0)
    assert trainable_prefixes(model) == {"fc"}
    set_trainable(model, head, 1)
    assert trainable_prefixes(model) == {"layer4", "fc"}
    set_trainable(model, head, 2)
    assert trainable_prefixes(model) == {"layer3", "layer4", "fc"}
    set_trainable(model, head, -1)
    assert all(p.requires_grad for p in model.parameters())


def test_backbone_gets_the_scaled_learning_rate():
    config = TrainConfig(architecture="resnet18", weights="none", lr=0.01, backbone_lr_scale=0.1)
    model, head = create_model(config, 5)
    set_trainable(model, head, 1)
    lrs = {round(g["lr"], 6) for g in param_groups(model, head, config)}
    assert lrs == {0.01, 0.001}
    decays = {g["weight_decay"] for g in param_groups(model, head, config)}
    assert decays == {0.0, config.weight_decay}


def test_missing_pretrained_weights_fail_at_once_with_advice():
    # This machine has no internet: the download of the DEFAULT weights must fail clearly.
    with pytest.raises(WeightsUnavailable, match="weights=none"):
        create_model(TrainConfig(architecture="resnet18", weights="DEFAULT"), 5)


def test_weights_from_a_local_file(tmp_path):
    backbone = torchvision.models.resnet18()  # stands in for downloaded pretrained weights
    torch.save(backbone.state_dict(), tmp_path / "resnet18.pth")
    model, _ = create_model(TrainConfig(architecture="resnet18", weights=str(tmp_path / "resnet18.pth")), 5)
    assert torch.equal(model.conv1.weight, backbone.conv1.weight)
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        create_model(TrainConfig(architecture="resnet18", weights=str(tmp_path / "missing.pth")), 5)


def test_unknown_architecture_and_weights_name():
    with pytest.raises(ConfigError, match="unknown architecture 'resnet19'"):
        create_model(TrainConfig(architecture="resnet19"), 5)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        create_model(TrainConfig(architecture="resnet18", weights="IMAGENET9K"), 5)
