"""The one training loop every torch model of the toolkit uses: :func:`train`.

Owns the epoch loop: seeded mini-batch steps with the configured optimizer and per-epoch
schedule, validation after every epoch, early stopping with restored best weights,
checkpoints, callbacks, the progress bar, and :class:`NonFiniteLossError` on a NaN/inf loss.
What it reads (:mod:`~mola_ts.training.batches`), how it is configured
(:mod:`~mola_ts.training.config`), when it stops (:mod:`~mola_ts.training.stopping`) and how it
runs distributed (:mod:`~mola_ts.training.distributed`) live next door.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .batches import Batch, LossFn, MetricsFn, evaluate, iterate_batches, n_items
from .config import TrainConfig, as_config
from .distributed import Replicas, start_replicas
from .progress import epoch_bar
from .seeding import resolve_device, seed_everything
from .stopping import EarlyStopping, Stopper

__all__ = ["NonFiniteLossError", "TrainResult", "Callback", "train"]

Callback = Callable[[int, dict[str, float], nn.Module], bool | None]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainResult:
    """What happened in :func:`train`: per-epoch history and the early-stopping outcome.

    Attributes
    ----------
    history : list of dict
        One record per epoch: ``epoch`` (1-based), ``train_loss``, ``lr`` and the scalar
        validation metrics as ``val_<name>``.
    best_epoch : int or None
        1-based, like history's ``epoch``; None without validation or early stopping.
    best_score : float or None
        The stopper's best validation score.
    stopped_early : bool
        Training stopped before ``epochs``.
    epochs_run : int
        Epochs trained.
    seconds : float
        Wall-clock time of the call.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    stopped_early: bool = False
    epochs_run: int = 0
    seconds: float = 0.0


def train(model: nn.Module, train_data, loss_fn: LossFn,
          config: TrainConfig | Mapping[str, Any] | None = None, *, val_data=None,
          val_fn: MetricsFn | None = None, stopper: Stopper | None = None,
          callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train ``model`` in place and return a :class:`TrainResult`.

    Under torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``... set) the same call trains with
    DistributedDataParallel, one process per device: see ``docs/scale_out.md``.

    Parameters
    ----------
    model : nn.Module
        Trained in place; moved to the configured device.
    train_data : Dataset or tuple of tensors
        The training items (see :func:`iterate_batches`).
    loss_fn : callable(model, batch) -> scalar tensor
        The training objective of one batch (a tuple of tensors already on the device). Under
        torchrun it receives the DistributedDataParallel wrapper: run the forward as
        ``model(...)`` so that gradients are synchronised, and reach the module's other
        attributes as ``unwrap_model(model).name``.
    config : TrainConfig, mapping of its fields, or None
        The settings (epochs, batch size, optimizer, patience, device, seed...); None: the
        defaults of :class:`TrainConfig`. A mapping naming an unknown field raises TypeError.
    val_data : Dataset or tuple of tensors, optional
        Validation set, scored after every epoch.
    val_fn : callable(model, batch) -> dict of str -> tensor, optional
        Validation metrics (default: ``{"loss": loss_fn(model, batch)}``). Early stopping
        watches ``"loss"``. Always called with the plain module.
    stopper : Stopper, optional
        A custom early-stopping rule (e.g. per-segment stopping); replaces the default
        :class:`EarlyStopping` with ``config.patience``.
    callbacks : sequence of callable(epoch, record, model) -> bool or None
        Called after every epoch (on every rank, with the plain module) with the epoch's
        history record; returning True stops training (under torchrun, rank 0's answer counts).

    Returns
    -------
    TrainResult
        Under torchrun the history holds global means and is the same on every rank, and so
        are the final weights.

    Raises
    ------
    NonFiniteLossError
        On a NaN or infinite training or validation loss.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from mola_ts.training import TrainConfig, train
    >>> x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    >>> y = x.sum(dim=1, keepdim=True)
    >>> def mse(model, batch):
    ...     return nn.functional.mse_loss(model(batch[0]), batch[1])
    >>> result = train(nn.Linear(3, 1), (x, y), mse, TrainConfig(epochs=3, lr=0.05))
    >>> [record["epoch"] for record in result.history]
    [1, 2, 3]
    """
    config = as_config(config)
    start_time = time.perf_counter()
    replicas = start_replicas(config.device, config.distributed)
    try:
        loop = _EpochLoop(model, config, replicas)
        if stopper is None and config.patience is not None and val_data is not None:
            stopper = EarlyStopping(patience=config.patience)
        if val_fn is None:
            def val_fn(m, b):
                return {"loss": loss_fn(m, b)}
        result = loop.run(train_data, loss_fn, _Validation(val_data, val_fn, stopper), callbacks)
        if stopper is not None and val_data is not None:
            stopper.restore(model)
            best = getattr(stopper, "best_epoch", None)
            result.best_epoch = best + 1 if isinstance(best, int) and best >= 0 else None
            result.best_score = getattr(stopper, "best_score", None)
        if replicas is not None:
            replicas.sync_module(model)
    finally:
        if replicas is not None:
            replicas.close()
    result.seconds = time.perf_counter() - start_time
    return result


@dataclass
class _Validation:
    """The validation side of one :func:`train` call (``data`` None: no validation)."""

    data: Any
    metrics_fn: MetricsFn
    stopper: Stopper | None


class _EpochLoop:
    """The state of one :func:`train` call's epochs: device, seeds, optimizer, DDP wrapper.

    ``net`` is what ``loss_fn`` receives: ``model`` itself, or its DDP wrapper when
    ``replicas`` is given; validation, stoppers, callbacks and checkpoints get ``model``.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, replicas: Replicas | None):
        self.model, self.config, self.replicas = model, config, replicas
        self.device = resolve_device(config.device) if replicas is None else replicas.device
        self.generator = seed_everything(config.random_state)
        self.seed = self.generator.initial_seed()
        if replicas is not None and config.random_state is None:
            self.seed = replicas.common_seed(self.seed)
            self.generator = seed_everything(self.seed)
        model.to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = config.make_optimizer(self.params)
        self.scheduler = config.make_scheduler(self.optimizer)
        main = replicas is None or replicas.rank == 0
        self.checkpoint_path = config.checkpoint_path if main else None
        self.verbose = config.verbose if main else 0
        self.net: nn.Module = model
        self.batch_size = config.batch_size
        if replicas is not None:
            self.net = replicas.wrap(model)
            self.batch_size = replicas.local_batch_size(config.batch_size)

    def run(self, train_data, loss_fn: LossFn, validation: _Validation,
            callbacks: Sequence[Callback]) -> TrainResult:
        """All epochs, until the last or a stop."""
        epochs = self.config.epochs
        result = TrainResult()
        bar = epoch_bar(epochs, self.verbose)
        try:
            for epoch in range(epochs):
                record: dict[str, Any] = {"epoch": epoch + 1,
                                          "train_loss": self._train_epoch(epoch, train_data,
                                                                          loss_fn),
                                          "lr": self.optimizer.param_groups[0]["lr"]}
                stop = self._validate(epoch, validation, record)
                result.history.append(record)
                result.epochs_run = epoch + 1
                for callback in callbacks:
                    stop = bool(callback(epoch, record, self.model)) or stop
                if self.replicas is not None:
                    stop = self.replicas.agree(stop)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
                    bar.update(1)
                if self.scheduler is not None:
                    self.scheduler.step()
                if stop:
                    result.stopped_early = epoch + 1 < epochs
                    break
        finally:
            if bar is not None:
                bar.close()
        return result

    def _train_epoch(self, epoch: int, train_data, loss_fn: LossFn) -> float:
        """One pass over the training data; the epoch's mean training loss."""
        config, replicas = self.config, self.replicas
        self.model.train()
        total, count = 0.0, 0
        indices = None
        if replicas is not None:
            indices = replicas.shard(n_items(train_data), epoch, shuffle=config.shuffle,
                                     seed=self.seed, drop_last=config.drop_last)
        batches = iterate_batches(train_data, self.batch_size, shuffle=config.shuffle,
                                  generator=self.generator, drop_last=config.drop_last,
                                  indices=indices, device=self.device)
        for step, batch in enumerate(batches):
            loss_sum, size = self._step(epoch, step, batch, loss_fn)
            total += loss_sum
            count += size
        return total / max(count, 1)

    def _step(self, epoch: int, step: int, batch: Batch, loss_fn: LossFn) -> tuple[float, int]:
        """One optimizer step; the (global) loss sum over the batch and the batch size."""
        replicas = self.replicas
        forwards = 0 if replicas is None else replicas.forward_calls
        loss = loss_fn(self.net, batch)
        if replicas is None:
            size, ddp_synced = len(batch[0]), True
            loss_value = float(loss.detach())
            loss_sum = loss_value * size
        else:  # global sums, so every rank sees the same (finite or not) loss
            loss_sum, size, ddp_synced = replicas.step_sums(loss, len(batch[0]), forwards)
            loss_value = loss_sum / size
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"the training loss became {loss_value} at epoch {epoch + 1}, batch {step + 1}; "
                "lower the learning rate or check the inputs for extreme values"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not ddp_synced:
            replicas.average_gradients(self.params)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        return loss_sum, size

    def _validate(self, epoch: int, validation: _Validation, record: dict[str, Any]) -> bool:
        """Score the validation data into ``record``, update the stopper; True to stop."""
        if validation.data is None:
            return False
        if self.replicas is None:
            metrics = evaluate(self.model, validation.data, validation.metrics_fn,
                               batch_size=self.config.eval_batch_size, device=self.device)
        else:
            metrics = self.replicas.evaluate(self.model, validation.data,
                                             validation.metrics_fn, self.config.eval_batch_size)
        scalar = {k: v for k, v in metrics.items() if isinstance(v, float)}
        if "loss" in scalar and not math.isfinite(scalar["loss"]):
            raise NonFiniteLossError(
                f"the validation loss became {scalar['loss']} at epoch {epoch + 1}"
            )
        record.update({f"val_{k}": v for k, v in scalar.items()})
        stopper = validation.stopper
        if stopper is None:
            return False
        # every rank updates its stopper (same metrics, same weights), so each holds the best
        # weights to restore; rank 0's decision is the one that counts
        before = getattr(stopper, "best_epoch", None)
        stop = bool(stopper.update(epoch, metrics, self.model))
        improved = getattr(stopper, "best_epoch", None) != before
        if self.checkpoint_path is not None and improved:
            torch.save(self.model.state_dict(), self.checkpoint_path)
        return stop
