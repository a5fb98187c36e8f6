import pytest

from train.config import ConfigError, TrainConfig, from_hyperparameters, pairs_to_dict


def test_sdk_v2_strings_are_parsed():
    config = from_hyperparameters({
        "lr": "0.01", "batch-size": "32", "amp": "True", "hidden_units": "[750, 500, 250]",
        "architecture": "alexnet", "weights": "none",
    })
    assert config.lr == 0.01 and config.batch_size == 32 and config.amp is True
    assert config.hidden_units == [750, 500, 250] and config.architecture == "alexnet"
    assert not config.pretrained


def test_sdk_v3_json_values_are_parsed():
    config = from_hyperparameters({
        "lr": "0.01", "amp": "false", "hidden_units": "[64,32]", "architecture": '"resnet18"',
    })
    assert config.amp is False and config.hidden_units == [64, 32]
    assert config.architecture == "resnet18"


def test_plain_values_and_comma_lists():
    config = from_hyperparameters({"hidden_units": "128,64", "epochs": 3, "dropout": 0})
    assert config.hidden_units == [128, 64] and config.epochs == 3 and config.dropout == 0.0
    assert from_hyperparameters({"hidden_units": "[]"}).hidden_units == []


def test_sagemaker_reserved_names_are_ignored():
    config = from_hyperparameters({
        "sagemaker_program": "x", "_tuning_objective_metric": "valid:accuracy", "epochs": "2",
    })
    assert config.epochs == 2


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        from_hyperparameters({"learning_rate": "0.1"})
    message = str(e.value)
    assert "unknown hyperparameter 'learning_rate'" in message
    assert "lr: float" in message and "hidden_units" in message


@pytest.mark.parametrize("name,value,expected", [
    ("epochs", "two", "expected an integer"),
    ("epochs", "2.5", "expected an integer"),
    ("lr", "fast", "expected a number"),
    ("amp", "maybe", "expected true or false"),
    ("hidden_units", "{}", "expected a list"),
])
def test_bad_values_say_what_was_expected(name, value, expected):
    with pytest.raises(ConfigError, match=expected):
        from_hyperparameters({name: value})


@pytest.mark.parametrize("values,expected", [
    ({"epochs": "0"}, "epochs must be >= 1"),
    ({"dropout": "1.0"}, r"dropout must be in \[0, 1\)"),
    ({"optimizer": "adam"}, "optimizer must be one of"),
    ({"image_size": "224", "resize_size": "200"}, "resize_size must be >= image_size"),
    ({"finetune_blocks": "-2"}, "finetune_blocks"),
])
def test_out_of_range_values_are_refused(values, expected):
    with pytest.raises(ConfigError, match=expected):
        from_hyperparameters(values)


def test_resize_size_defaults_to_the_imagenet_ratio():
    assert TrainConfig().resize_size == 256
    assert TrainConfig(image_size=64).resize_size == 73


def test_cli_pairs():
    assert pairs_to_dict(["--lr", "0.1", "--hidden-units=[1, 2]"]) == {"lr": "0.1", "hidden-units": "[1, 2]"}
    with pytest.raises(ConfigError, match="has no value"):
        pairs_to_dict(["--lr"])
