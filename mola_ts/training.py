"""The one training loop every torch model of the toolkit uses.

``train(model, train_data, loss_fn=...)`` runs seeded mini-batch training with an optimizer and
an optional per-epoch learning-rate schedule, evaluates a validation set after every epoch,
stops early with patience and restores the best weights, shows a tqdm bar only when asked and
attached to a terminal, and stops with :class:`NonFiniteLossError` on a NaN/inf loss.

Data: a ``torch.utils.data.Dataset`` (a ``get_batch(indices)`` method, when present, fetches a
whole batch in one gather) or a tuple of tensors with the same first dimension. ``loss_fn(model,
batch)`` receives the batch as a tuple of tensors already on the device and returns a scalar.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

__all__ = [
    "NonFiniteLossError",
    "seed_everything",
    "resolve_device",
    "EarlyStopping",
    "Stopper",
    "TrainResult",
    "iterate_batches",
    "evaluate",
    "train",
]

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
MetricsFn = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def seed_everything(random_state: int | None) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator for data shuffling.

    ``None`` draws a fresh seed (non-reproducible), like scikit-learn's ``random_state=None``.
    """
    if random_state is None:
        random_state = int(np.random.SeedSequence().entropy % (2**31))
    if isinstance(random_state, np.random.RandomState):
        random_state = int(random_state.randint(0, 2**31 - 1))
    seed = int(random_state)
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds legacy global users too
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; otherwise the device asked for."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available")
    return device


class Stopper(Protocol):
    """What the loop needs from an early-stopping rule (see :class:`EarlyStopping`)."""

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> bool: ...

    def restore(self, model: nn.Module) -> None: ...


class EarlyStopping:
    """Stop after ``patience`` epochs without improvement of ``monitor``; keep the best weights.

    An epoch improves when ``metrics[monitor] < best - min_delta``. ``restore`` loads the
    weights of the best epoch back into the model.
    """

    def __init__(self, patience: int = 3, min_delta: float = 0.0, monitor: str = "loss",
                 restore_best: bool = True):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.min_delta = min_delta
        self.monitor = monitor
        self.restore_best = restore_best
        self.best_score = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> bool:
        score = metrics[self.monitor]
        if score < self.best_score - self.min_delta:
            self.best_score = score
            self.best_epoch = epoch
            self.bad_epochs = 0
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.restore_best and self.best_state is not None:
            model.load_state_dict(self.best_state)


@dataclass
class TrainResult:
    """What happened in :func:`train`: per-epoch history and the early-stopping outcome."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based, like history's "epoch"
    best_score: float | None = None
    stopped_early: bool = False
    epochs_run: int = 0
    seconds: float = 0.0


def _n_items(data) -> int:
    if isinstance(data, (tuple, list)):
        return len(data[0])
    return len(data)


def _fetch(data, indices: torch.Tensor) -> Batch:
    if isinstance(data, (tuple, list)):
        return tuple(t[indices] for t in data)
    if hasattr(data, "get_batch"):
        batch = data.get_batch(indices)
        return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    items = [data[int(i)] for i in indices]
    if isinstance(items[0], torch.Tensor):
        return (torch.stack(items),)
    return tuple(torch.stack(parts) for parts in zip(*items, strict=True))


def iterate_batches(data, batch_size: int, *, shuffle: bool = False,
                    generator: torch.Generator | None = None, drop_last: bool = False,
                    indices: torch.Tensor | None = None, device: torch.device | None = None
                    ) -> Iterator[Batch]:
    """Yield batches (tuples of tensors, moved to ``device``) of a dataset or tensor tuple."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if indices is None:
        n = _n_items(data)
        indices = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    n = len(indices)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        batch = _fetch(data, indices[start : start + batch_size])
        if device is not None:
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
        yield batch


@torch.no_grad()
def evaluate(model: nn.Module, data, metrics_fn: MetricsFn, *, batch_size: int = 256,
             device: torch.device | None = None) -> dict[str, float]:
    """Batch-size-weighted means of ``metrics_fn`` over ``data``, in eval mode."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    try:
        for batch in iterate_batches(data, batch_size, device=device):
            size = len(batch[0])
            for key, value in metrics_fn(model, batch).items():
                value = value.detach()
                if value.ndim == 0:
                    totals[key] = totals.get(key, 0.0) + float(value) * size
                else:  # a vector metric (e.g. one loss per segment) is averaged element-wise
                    prev = totals.get(key, 0.0)
                    totals[key] = prev + value.double().cpu() * size
            count += size
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the evaluation data is empty")
    return {k: (v / count if isinstance(v, float) else (v / count)) for k, v in totals.items()}


def _make_optimizer(optimizer, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(params)
    name = (optimizer or "adam").lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd' or a callable, got {optimizer!r}")


def _make_scheduler(scheduler, optimizer: torch.optim.Optimizer):
    if scheduler is None:
        return None
    if scheduler == "halve":  # the Time-Series-Library "type1" schedule: lr * 0.5 ** epoch
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    if callable(scheduler):
        return scheduler(optimizer)
    raise ValueError(f"scheduler must be None, 'halve' or a callable, got {scheduler!r}")


def _show_progress(verbose: int) -> bool:
    return bool(verbose) and sys.stderr.isatty() and not os.environ.get("MOLA_TS_NO_PROGRESS")


def train(
    model: nn.Module,
    train_data,
    *,
    loss_fn: LossFn,
    val_data=None,
    val_fn: MetricsFn | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str | Callable[[Sequence[nn.Parameter]], torch.optim.Optimizer] = "adam",
    scheduler: str | Callable | None = None,
    patience: int | None = 3,
    stopper: Stopper | None = None,
    grad_clip: float | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    device: str | torch.device | None = "cpu",
    random_state: int | None = 0,
    verbose: int = 0,
    callbacks: Sequence[Callable[[int, dict[str, float], nn.Module], bool | None]] = (),
    checkpoint_path: str | os.PathLike | None = None,
    eval_batch_size: int = 256,
) -> TrainResult:
    """Train ``model`` in place and return a :class:`TrainResult`.

    Parameters
    ----------
    loss_fn : callable(model, batch) -> scalar tensor
        The training objective of one batch.
    val_data, val_fn : optional
        Validation set and its metrics ``val_fn(model, batch) -> {"loss": ..., ...}`` (default:
        ``{"loss": loss_fn(model, batch)}``). Early stopping watches ``"loss"``.
    patience : int or None
        Patience of the default :class:`EarlyStopping` (None: train all epochs, no restore).
    stopper : Stopper, optional
        A custom early-stopping rule (e.g. per-segment stopping); replaces ``patience``.
    scheduler : None, "halve" or callable(optimizer) -> scheduler
        Stepped once per epoch.
    callbacks : sequence of callable(epoch, metrics, model) -> bool | None
        Called after every epoch; returning True stops training.
    checkpoint_path : path, optional
        Where to save the best weights (``torch.save`` of the state dict) on every improvement.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    start_time = time.perf_counter()
    device = resolve_device(device)
    generator = seed_everything(random_state)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = _make_optimizer(optimizer, params, lr, weight_decay)
    sched = _make_scheduler(scheduler, opt)
    if stopper is None and patience is not None and val_data is not None:
        stopper = EarlyStopping(patience=patience)
    if val_fn is None:
        def val_fn(m, b):
            return {"loss": loss_fn(m, b)}

    result = TrainResult()
    show = _show_progress(verbose)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="training", unit="epoch", leave=False)
    try:
        for epoch in range(epochs):
            model.train()
            total, count = 0.0, 0
            for step, batch in enumerate(iterate_batches(
                    train_data, batch_size, shuffle=shuffle, generator=generator,
                    drop_last=drop_last, device=device)):
                loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"the training loss became {float(loss.detach())} at epoch "
                        f"{epoch + 1}, batch {step + 1}; lower the learning rate or check "
                        "the inputs for extreme values"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                total += float(loss.detach()) * len(batch[0])
                count += len(batch[0])
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(count, 1),
                                      "lr": opt.param_groups[0]["lr"]}
            stop = False
            if val_data is not None:
                metrics = evaluate(model, val_data, val_fn, batch_size=eval_batch_size,
                                   device=device)
                scalar = {k: v for k, v in metrics.items() if isinstance(v, float)}
                if "loss" in scalar and not math.isfinite(scalar["loss"]):
                    raise NonFiniteLossError(
                        f"the validation loss became {scalar['loss']} at epoch {epoch + 1}"
                    )
                record.update({f"val_{k}": v for k, v in scalar.items()})
                if stopper is not None:
                    before = getattr(stopper, "best_epoch", None)
                    stop = bool(stopper.update(epoch, metrics, model))
                    improved = getattr(stopper, "best_epoch", None) != before
                    if checkpoint_path is not None and improved:
                        torch.save(model.state_dict(), checkpoint_path)
            result.history.append(record)
            result.epochs_run = epoch + 1
            for callback in callbacks:
                stop = bool(callback(epoch, record, model)) or stop
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
                bar.update(1)
            if sched is not None:
                sched.step()
            if stop:
                result.stopped_early = epoch + 1 < epochs
                break
    finally:
        if bar is not None:
            bar.close()
    if stopper is not None and val_data is not None:
        stopper.restore(model)
        best = getattr(stopper, "best_epoch", None)
        result.best_epoch = best + 1 if isinstance(best, int) and best >= 0 else None
        result.best_score = getattr(stopper, "best_score", None)
    result.seconds = time.perf_counter() - start_time
    return result
