import dataclasses

import pytest
import torch
from torch import nn

from mola_ts.training import (
    EarlyStopping,
    NonFiniteLossError,
    TrainConfig,
    seed_everything,
    train,
)


def _regression(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


def _mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def test_training_reduces_loss_and_is_deterministic():
    data = _regression()
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        res = train(model, data, _mse,
                    TrainConfig(epochs=20, lr=0.05, batch_size=16, random_state=3),
                    val_data=_regression(32, 1))
        results.append((res, model.weight.detach().clone()))
    (first, w1), (_, w2) = results
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"] / 5
    torch.testing.assert_close(w1, w2, rtol=0, atol=0)


def test_early_stopping_restores_the_best_weights():
    model = nn.Linear(3, 1)
    seen = {}

    def record(epoch, metrics, m):
        seen[epoch + 1] = {k: v.clone() for k, v in m.state_dict().items()}

    # A validation set that the model can only get worse on after the first few epochs:
    # targets of opposite sign to the training targets.
    x, y = _regression()
    res = train(model, (x, y), _mse, TrainConfig(epochs=30, lr=0.05, patience=2, batch_size=16),
                val_data=(x, -y), callbacks=[record])
    assert res.stopped_early
    assert res.best_epoch is not None and res.best_epoch < res.epochs_run
    val_losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == 1 + min(range(len(val_losses)), key=val_losses.__getitem__)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, seen[res.best_epoch][key])
    assert res.epochs_run == res.best_epoch + 2


def test_nan_loss_raises_a_clear_error():
    x, y = _regression()
    y[5] = float("nan")
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 1"):
        train(nn.Linear(3, 1), (x, y), _mse, TrainConfig(epochs=2, batch_size=64, shuffle=False))


def test_early_stopping_counts_patience():
    stopper = EarlyStopping(patience=2)
    model = nn.Linear(1, 1)
    assert not stopper.update(0, {"loss": 1.0}, model)
    assert not stopper.update(1, {"loss": 1.5}, model)
    assert stopper.update(2, {"loss": 1.2}, model)
    assert stopper.best_epoch == 0


def test_scheduler_halves_the_learning_rate_and_seed_generator():
    x, y = _regression()
    res = train(nn.Linear(3, 1), (x, y), _mse, TrainConfig(epochs=3, lr=0.1, scheduler="halve"))
    assert [h["lr"] for h in res.history] == pytest.approx([0.1, 0.05, 0.025])
    a = torch.randperm(10, generator=seed_everything(5))
    b = torch.randperm(10, generator=seed_everything(5))
    assert torch.equal(a, b)


def test_a_mapping_config_trains_like_the_same_train_config():
    x, y = _regression()
    runs = []
    for config in (TrainConfig(epochs=3, lr=0.05, batch_size=16),
                   {"epochs": 3, "lr": 0.05, "batch_size": 16}):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        runs.append((train(model, (x, y), _mse, config).history, model.weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_train_rejects_an_unknown_config_field_by_name():
    x, y = _regression()
    with pytest.raises(TypeError, match=r"unknown TrainConfig field\(s\) 'epoch'.*epochs"):
        train(nn.Linear(3, 1), (x, y), _mse, {"epoch": 3})
    with pytest.raises(TypeError, match="'epoch'"):
        TrainConfig(epoch=3)
    with pytest.raises(TypeError, match="'lr_rate'"):
        dataclasses.replace(TrainConfig(), lr_rate=0.1)
    with pytest.raises(TypeError, match="config must be a TrainConfig, a mapping.*got int"):
        train(nn.Linear(3, 1), (x, y), _mse, 3)
    with pytest.raises(TypeError, match="'epochs'"):  # the settings are no keywords of train
        train(nn.Linear(3, 1), (x, y), _mse, epochs=3)


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", 2.5), ("epochs", True), ("batch_size", 0),
    ("eval_batch_size", -1), ("patience", 0), ("lr", -1e-3), ("lr", float("nan")),
    ("weight_decay", -0.1), ("grad_clip", 0.0), ("grad_clip", float("inf")), ("verbose", -1),
    ("optimizer", "lbfgs"), ("scheduler", "cosine"), ("device", "gpu0"),
])
def test_train_config_validates_its_numbers_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be .*got"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("shuffle", "yes"), ("drop_last", 1), ("distributed", "auto"), ("random_state", 1.5),
    ("random_state", True), ("device", 0), ("checkpoint_path", 3),
])
def test_train_config_checks_the_types_of_its_flags_and_choices(field, value):
    with pytest.raises(TypeError, match=rf"TrainConfig\.{field} must be .*got"):
        TrainConfig(**{field: value})


def test_train_config_is_frozen_and_accepts_its_documented_values():
    config = TrainConfig(patience=None, grad_clip=1.0, optimizer="AdamW", scheduler="halve",
                         device="auto", random_state=None, distributed=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    assert dataclasses.replace(config, epochs=3).epochs == 3
    optimizer = config.make_optimizer([nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.AdamW)
