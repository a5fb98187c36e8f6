"""tune/space.py: the one search space, and the errors a wrong entry gets."""
from __future__ import annotations

import json

import pytest

from train.config import from_hyperparameters
from tune import space


def write(tmp_path, document) -> str:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_the_shipped_space_covers_the_issue_and_fits_train():
    parameters = {p.name: p for p in space.load()}
    assert {"lr", "batch_size", "weight_decay", "dropout", "finetune_blocks",
            "label_smoothing"} <= set(parameters)
    assert parameters["lr"].log and parameters["batch_size"].type == "categorical"
    # Every bound is a value training accepts.
    for p in parameters.values():
        for value in (p.values or (p.min, p.max)):
            from_hyperparameters({p.name: str(value)})


@pytest.mark.parametrize("entry, message", [
    ({"learning_rate": {"type": "continuous", "min": 0.1, "max": 1}}, "'learning_rate' is not a training hyperparameter"),
    ({"lr": {"type": "continuous", "min": 0.1}}, "lr: a continuous range needs 'max'"),
    ({"lr": {"type": "continuous", "min": 0.1, "max": 0.01}}, "needs min < max"),
    ({"lr": {"type": "continuous", "min": 0, "max": 1, "scaling": "log"}}, "min > 0 on a log scale"),
    ({"lr": {"type": "continuous", "min": 0.1, "max": 1, "scaling": "cubic"}}, "scaling must be linear or log"),
    ({"epochs": {"type": "integer", "min": 1.5, "max": 3}}, "epochs: expected an integer"),
    ({"batch_size": {"type": "categorical", "values": [16]}}, "at least two values"),
    ({"batch_size": {"type": "categorical", "values": [16, "big"]}}, "batch_size: expected an integer"),
    ({"dropout": {"type": "uniform", "min": 0, "max": 1}}, "type must be continuous, integer or categorical"),
])
def test_a_wrong_entry_is_named_with_the_reason(tmp_path, entry, message):
    with pytest.raises(space.SpaceError, match=message.replace("(", "\\(")):
        space.load(write(tmp_path, entry))


def test_an_unreadable_file_says_so(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(space.SpaceError, match="cannot read the search space"):
        space.load(tmp_path / "bad.json")
