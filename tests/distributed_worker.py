"""Scenarios that tests/test_training_distributed.py runs under ``torchrun`` (and in one process).

Run by the test as ``python -m torch.distributed.run --nproc-per-node 2 tests/distributed_worker.py
OUT scenario...``; every rank writes what it saw to ``OUT/<scenario>_rank<r>.pt`` (the test's own
record, not a checkpoint). Each ``build_*`` function returns the model, data, loss and
``TrainConfig`` so that the test can run the same training in a single process.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mola_ts.data import WindowDataset
from mola_ts.forecast import MoLAForecaster
from mola_ts.monitor import MOLAMonitor
from mola_ts.training import (
    NonFiniteLossError,
    TrainConfig,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    train,
    unwrap_model,
)


class RoutedRegressor(nn.Module):
    """A frozen base plus two experts picked per sample, and one parameter no step ever uses.

    Expert ``a`` only sees samples with ``x[:, 0] > 1`` (rare), so in many per-rank batches it
    gets no gradient at all: the frozen-base adapter situation DDP must handle.
    """

    def __init__(self, d_in: int = 4):
        super().__init__()
        self.base = nn.Linear(d_in, 1)
        self.base.requires_grad_(False)
        self.a = nn.Linear(d_in, 1)
        self.b = nn.Linear(d_in, 1)
        self.never_used = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x) + self.b(x)
        mask = x[:, 0] > 1.0
        if bool(mask.any()):
            out = out.index_add(0, mask.nonzero().squeeze(1), self.a(x[mask]))
        return out

    def predict_step(self, x: torch.Tensor) -> torch.Tensor:
        """The forward under another name: a loss calling it bypasses DDP's hooks."""
        return self.forward(x)


def regression_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


def mse_forward(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def mse_method(model, batch):
    """A loss that bypasses the wrapper: the loop must average the gradients itself."""
    x, y = batch
    return nn.functional.mse_loss(unwrap_model(model).predict_step(x), y)


def build_exact(loss_fn=mse_forward):
    """Unshuffled: each global batch of 16 is exactly two rank batches of 8."""
    torch.manual_seed(0)
    model = RoutedRegressor()
    config = TrainConfig(epochs=4, batch_size=16, lr=0.02, shuffle=False, patience=None,
                         random_state=0)
    return model, regression_data(64, 0), loss_fn, config, regression_data(40, 1)


def build_method():
    return build_exact(mse_method)


def window_data(n_rows: int, seed: int) -> WindowDataset:
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows)
    values = np.stack([np.sin(t / 5.0), np.cos(t / 7.0)], axis=1)
    return WindowDataset(values + 0.05 * rng.normal(size=values.shape), lookback=12, horizon=3)


class WindowMLP(nn.Module):
    def __init__(self, lookback: int = 12, horizon: int = 3, channels: int = 2):
        super().__init__()
        self.horizon, self.channels = horizon, channels
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(lookback * channels, 32), nn.GELU(),
                                 nn.Linear(32, horizon * channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(len(x), self.horizon, self.channels)


def build_shuffled():
    """Shuffled windows (a Dataset with get_batch), global batch 32, trained to convergence."""
    torch.manual_seed(0)
    config = TrainConfig(epochs=12, batch_size=32, lr=3e-3, shuffle=True, patience=None,
                         random_state=0)
    return WindowMLP(), window_data(400, 0), mse_forward, config, window_data(150, 1)


class NormedRegressor(nn.Module):
    """BatchNorm buffers see each rank's own batches: the loop must end with rank 0's."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh())
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build_stopping():
    """Validation targets of opposite sign: validation worsens early, so training stops."""
    torch.manual_seed(0)
    x, y = regression_data(96, 0)
    config = TrainConfig(epochs=30, batch_size=16, lr=0.05, patience=2, shuffle=True,
                         random_state=None)
    return NormedRegressor(), (x, y), mse_forward, config, (x[:40], -y[:40])


def _run_exact(out: Path, rank: int, build) -> dict:
    model, data, loss_fn, config, val_data = build()
    seen: list[torch.Tensor] = []

    def recording_loss(net, batch):
        if net.training:
            seen.append(batch[0][:, 0].clone())
        return loss_fn(net, batch)

    result = train(model, data, recording_loss, config, val_data=val_data)
    return {"state": model.state_dict(), "history": result.history, "seen": seen}


class RecordingWindows(WindowDataset):
    """Windows that remember which indices each batch gathered."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetched: list[torch.Tensor] = []

    def get_batch(self, indices):
        self.fetched.append(torch.as_tensor(indices).clone())
        return super().get_batch(indices)


def _run_shuffled(out: Path, rank: int) -> dict:
    model, data, loss_fn, config, val_data = build_shuffled()
    data = RecordingWindows(data.series.numpy(), data.lookback, data.horizon)
    result = train(model, data, loss_fn, config, val_data=val_data)
    return {"state": model.state_dict(), "history": result.history, "fetched": data.fetched}


def _run_stopping(out: Path, rank: int) -> dict:
    model, data, loss_fn, config, val_data = build_stopping()
    seen_main = []
    config = dataclasses.replace(config, checkpoint_path=out / f"stopping_ckpt_rank{rank}.pt")
    result = train(model, data, loss_fn, config, val_data=val_data,
                   callbacks=[lambda epoch, record, m: seen_main.append(is_main_process())])
    first = {k: v.clone() for k, v in model.state_dict().items()}
    # a second call in the same process (foundation, then adaptation of the head alone)
    model.body.requires_grad_(False)
    second = train(model, data, mse_forward,
                   TrainConfig(epochs=2, batch_size=16, lr=0.01, patience=None, random_state=1))
    second_state = {k: v.clone() for k, v in model.state_dict().items()}
    # after training, a plain local backward: no DDP hook may linger on the parameters
    x, y = regression_data(8, 10 + rank)
    model.zero_grad()
    model.train()
    mse_forward(model, (x, y)).backward()
    return {"state": first, "history": result.history, "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "seen_main": seen_main,
            "second_state": second_state, "second_history": second.history,
            "local_grad": model.head.weight.grad.clone()}


def _run_nonfinite(out: Path, rank: int) -> dict:
    x, y = regression_data(32, 0)
    bad_y = y.clone()
    bad_y[1] = float("nan")  # unshuffled, item 1 is in rank 1's first batch
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    error = None
    try:
        train(model, (x, bad_y), mse_forward, TrainConfig(epochs=2, batch_size=8, shuffle=False))
    except NonFiniteLossError as exc:
        error = str(exc)
    # the failed call stopped between DDP's forward and backward: a local backward must stay
    # local, and a retry on clean data must train normally
    model.zero_grad()
    mse_forward(model, regression_data(8, 10 + rank)).backward()
    local_grad = model.weight.grad.clone()
    train(model, (x, y), mse_forward, TrainConfig(epochs=2, batch_size=8, patience=None))
    return {"error": error, "local_grad": local_grad, "state": model.state_dict()}


def forecast_frame(n: int = 400) -> pd.DataFrame:
    t = np.arange(n)
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": np.sin(t / 3.0) + 0.1 * rng.normal(size=n),
                         "b": np.cos(t / 5.0) + 0.1 * rng.normal(size=n)},
                        index=pd.date_range("2024-01-01", periods=n, freq="h"))


def build_mola(router: str = "segment"):
    """A tiny MoLAForecaster; with the segment router its first segment stops early."""
    return MoLAForecaster(lookback=24, horizon=8, segment_length=4, router=router,
                          backbone_params={"d_model": 8, "d_ff": 8, "n_heads": 2,
                                           "n_layers": 1},
                          n_experts=2, rank=2, epochs=4, foundation_epochs=3,
                          lr=0.05 if router == "segment" else 0.01,
                          foundation_lr=0.01, batch_size=32, patience=1, random_state=0)


def _run_mola(out: Path, rank: int) -> dict:
    record = {}
    for router in ("segment", "ldmole"):
        model = build_mola(router).fit(forecast_frame())
        model.save(out / f"mola_{router}_rank{rank}.pt")  # save() writes on rank 0 only
        record[router] = {
            "state": {k: v.clone() for k, v in model.model_.state_dict().items()},
            "foundation": {k: v.clone() for k, v in model.foundation_.model_.state_dict().items()},
            "prediction": model.predict().to_numpy(), "history": model.history_,
            "foundation_history": model.foundation_.history_,
            "stop_epochs": model.segment_stop_epochs_}
    return record


def process_frame(n: int, seed: int) -> pd.DataFrame:
    """Two correlated AR(1) pairs plus two noise columns, sampled every 3 minutes."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 6))
    noise = rng.normal(size=(n, 6))
    for t in range(1, n):
        x[t] = 0.6 * x[t - 1] + noise[t]
    x[:, 1] += 0.8 * x[:, 0]
    x[:, 4] -= 0.5 * x[:, 3]
    return pd.DataFrame(x, columns=list("uvwxyz"),
                        index=pd.date_range("2024-01-01", periods=n, freq="3min"))


def build_monitor() -> MOLAMonitor:
    return MOLAMonitor(blocks={"first": ["u", "v", "w"], "second": ["x", "y", "z"]}, window=5,
                       hidden_size=8, code_size=2, epochs=3, patience=2, random_state=0)


def _run_monitor(out: Path, rank: int) -> dict:
    monitor = build_monitor().fit(process_frame(300, 0))
    monitor.save(out / f"monitor_model_rank{rank}.pt")  # save() writes on rank 0 only
    return {"history": monitor.training_history_, "threshold": monitor.threshold_,
            "scores": monitor.score_samples(process_frame(80, 1))}


SCENARIOS = {
    "exact": lambda out, rank: _run_exact(out, rank, build_exact),
    "method": lambda out, rank: _run_exact(out, rank, build_method),
    "shuffled": _run_shuffled,
    "stopping": _run_stopping,
    "nonfinite": _run_nonfinite,
    "mola": _run_mola,
    "monitor": _run_monitor,
}


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    torch.set_num_threads(1)
    rank, world = get_rank(), get_world_size()
    for name in argv[1:]:
        record = SCENARIOS[name](out, rank)
        record.update(rank=get_rank(), world_size=get_world_size(),
                      distributed=is_distributed(), main=is_main_process(), launch=(rank, world))
        torch.save(record, out / f"{name}_rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
