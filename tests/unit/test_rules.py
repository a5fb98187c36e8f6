"""Each built-in rule on evidence built for it: small networks trained a few steps through the
job's own recorder (debugger/record.py), read back with TensorBoard's reader, judged by the rule;
and the same rule quiet on a network that has none of the trouble."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from debugger.record import Recorder
from debugger.rules import ISSUES, NO_ISSUES, TensorBoardRecord, evaluate


def judge(folder, rule: str, params=None):
    [verdict] = evaluate(TensorBoardRecord(folder), params, only=[rule])
    return verdict


def train(folder, model, *, steps=6, lrs=None, classes=3, inputs=None, labels=None,
          predicted=None):
    """SGD steps recorded as train/train.py records them (every step's tensors). lrs: each step's
    learning rate; predicted: a function of the labels standing in for the network's top-1."""
    torch.manual_seed(0)
    lrs = lrs or [0.05] * steps
    inputs = torch.randn(64, 8) if inputs is None else inputs
    labels = torch.arange(len(inputs)) % classes if labels is None else labels
    recorder = Recorder(folder, model, classes, interval=1).start()
    optimizer = torch.optim.SGD(model.parameters(), lr=lrs[0])
    model.train()
    for step, lr in enumerate(lrs, start=1):
        for group in optimizer.param_groups:
            group["lr"] = lr
        recorder.start_step(step)
        logits = model(inputs)
        loss = F.cross_entropy(logits, labels)
        top1 = logits.argmax(1) if predicted is None else predicted(labels)
        recorder.loss(step, loss.item(), top1, labels)
        optimizer.zero_grad()
        loss.backward()
        recorder.before_update(step)
        optimizer.step()
        recorder.after_update(step, lr)
    recorder.close()
    return folder


def mlp(*layers: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*layers)


def test_dead_relu_fires_on_a_layer_whose_inputs_are_all_negative(tmp_path):
    dead = mlp(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        dead[0].bias.fill_(-100.0)  # every unit below zero on every input: never active
    verdict = judge(train(tmp_path / "dead", dead), "dead_relu")
    assert verdict.status == ISSUES and "100% of 1's units" in verdict.why
    alive = mlp(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    assert judge(train(tmp_path / "alive", alive), "dead_relu").status == NO_ISSUES


def test_saturated_activation_fires_on_a_tanh_fed_large_inputs(tmp_path):
    saturated = mlp(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        saturated[0].weight.mul_(200.0)  # inputs far past tanh's +-9.5: flat, no gradient
    verdict = judge(train(tmp_path / "saturated", saturated), "saturated_activation")
    assert verdict.status == ISSUES and "of tanh/1's inputs beyond +-9.4999" in verdict.why
    for name, activation in (("tanh", nn.Tanh()), ("sigmoid", nn.Sigmoid())):
        calm = mlp(nn.Linear(8, 16), activation, nn.Linear(16, 3))
        assert judge(train(tmp_path / name, calm), "saturated_activation").status == NO_ISSUES


def he_initialised(*layers: nn.Module) -> nn.Sequential:
    """He initialisation keeps a ReLU network's activation variance from layer to layer."""
    model = mlp(*layers)
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return model


def test_poor_weight_initialization_fires_when_one_layer_is_scaled_far_off(tmp_path):
    poor = he_initialised(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 3))
    with torch.no_grad():
        poor[2].weight.mul_(100.0)  # the second ReLU's inputs 10,000 times the first's variance
    verdict = judge(train(tmp_path / "poor", poor), "poor_weight_initialization")
    assert verdict.status == ISSUES and "activation variance differs" in verdict.why
    good = he_initialised(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 3))
    assert judge(train(tmp_path / "good", good), "poor_weight_initialization").status == NO_ISSUES


def test_class_imbalance_fires_on_a_rare_class_and_on_a_class_always_missed(tmp_path):
    model = mlp(nn.Linear(8, 3))
    skewed = torch.tensor([0] * 60 + [1] * 4)  # class 0 fifteen times class 1 (limit 10x)
    verdict = judge(train(tmp_path / "skewed", model, inputs=torch.randn(64, 8), labels=skewed),
                    "class_imbalance")
    assert verdict.status == ISSUES and "15x the images" in verdict.why

    def always_misses_class_2(labels):
        return torch.where(labels == 2, torch.zeros_like(labels), labels)

    verdict = judge(train(tmp_path / "missed", mlp(nn.Linear(8, 3)),
                          predicted=always_misses_class_2), "class_imbalance")
    assert verdict.status == ISSUES and "class 2 is mispredicted in 100%" in verdict.why
    verdict = judge(train(tmp_path / "balanced", mlp(nn.Linear(8, 3)), predicted=lambda y: y),
                    "class_imbalance")
    assert verdict.status == NO_ISSUES


def passes(folder, train_losses: list[float], valid_losses: list[float]):
    """A record of validation passes, one per epoch of 4 steps: the training loss of each step
    of the epoch, then the validation loss at its last step."""
    recorder = Recorder(folder, nn.Linear(1, 1), 2).start()
    labels = torch.tensor([0, 1])
    for epoch, (train_loss, valid_loss) in enumerate(zip(train_losses, valid_losses)):
        for step in range(4 * epoch + 1, 4 * epoch + 5):
            recorder.loss(step, train_loss, labels, labels)
        recorder.epoch(4 * epoch + 4, {"epoch": epoch + 1, "train_loss": train_loss,
                                       "train_acc": 1.0, "valid_loss": valid_loss,
                                       "valid_acc": 1.0}, valid_loss)
    recorder.close()
    return folder


def test_overtraining_fires_when_validation_stalls_while_training_improves(tmp_path):
    falling = [1.0 - 0.05 * i for i in range(14)]
    stalled = passes(tmp_path / "stalled", falling, [0.9] * 14)  # 13 passes without a gain
    verdict = judge(stalled, "overtraining")
    assert verdict.status == ISSUES and "has not improved by 0.01 for 10" in verdict.why
    improving = passes(tmp_path / "improving", falling, [0.95 - 0.05 * i for i in range(14)])
    assert judge(improving, "overtraining").status == NO_ISSUES


def test_weight_update_ratio_reads_a_step_against_the_learning_rate_it_was_given(tmp_path):
    """At a schedule's tail a weight moves by less than float32 resolves (ratio 0): not judged
    small there. The same tiny updates at the run's own peak learning rate are."""
    def network():
        return mlp(nn.Linear(8, 3))

    tail = [0.05] * 5 + [1e-12]  # decayed to a millionth of a millionth at its last step
    verdict = judge(train(tmp_path / "tail", network(), lrs=tail), "weight_update_ratio")
    assert verdict.status == NO_ISSUES and "1 smaller at steps whose learning rate" in verdict.why
    for name, lrs in (("stalled", [1e-12] * 6), ("zero", [0.0] * 6)):
        verdict = judge(train(tmp_path / name, network(), lrs=lrs), "weight_update_ratio")
        assert verdict.status == ISSUES and "is too small" in verdict.why, name


@pytest.mark.parametrize("scale, status", [(65536.0, NO_ISSUES), (0.5, ISSUES)])
def test_exploding_tensor_reads_a_loss_scalers_overflow_by_its_scale(tmp_path, scale, status):
    """fp16 loss scaling skips a step whose gradients overflowed: above a scale of 1 that is the
    scaler's search for its scale, at 1 or below the gradients overflow float16 unscaled."""
    model = mlp(nn.Linear(8, 3))
    recorder = Recorder(tmp_path, model, 3, interval=1).start()
    for step in (1, 2):
        recorder.start_step(step)
        loss = F.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0]))
        labels = torch.zeros(4, dtype=torch.long)
        recorder.loss(step, loss.item(), labels, labels)
        loss.backward()
        recorder.before_update(step)
        recorder.after_update(step, 0.1, loss_scale=scale, skipped=step == 1)
    recorder.close()
    events = TensorBoardRecord(tmp_path)
    assert [s for s, _ in events.overflows()] == [1]
    # the skipped step's tensors are left out of the record
    assert [s for s, _ in events.gradient_means()["0.weight"]] == [2]
    verdict = judge(tmp_path, "exploding_tensor")
    assert verdict.status == status, verdict
    assert "1 steps skipped by fp16 loss scaling" in verdict.why
