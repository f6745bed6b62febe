"""Early stopping: when the epoch loop stops and which weights it keeps.

Owns the :class:`Stopper` protocol (what :func:`~mola_ts.training.train` asks of a rule) and
:class:`EarlyStopping`, the default rule: patience on one validation metric, best weights
restored. Custom rules (such as the per-segment stopping of
:class:`~mola_ts.forecast.MoLAForecaster`) implement the protocol.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn

__all__ = ["Stopper", "EarlyStopping"]


class Stopper(Protocol):
    """What the loop needs from an early-stopping rule (see :class:`EarlyStopping`).

    The loop also reads ``best_epoch`` (0-based, -1 before any improvement) and ``best_score``
    when the rule has them: a change of ``best_epoch`` is an improvement (a checkpoint is
    written), and both end up in the :class:`~mola_ts.training.TrainResult`.
    """

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> bool:
        """Record ``epoch``'s validation ``metrics``; True to stop training."""
        ...

    def restore(self, model: nn.Module) -> None:
        """Load the weights to keep into ``model`` (called once, after the last epoch)."""
        ...


class EarlyStopping:
    """Stop after ``patience`` epochs without improvement of ``monitor``; keep the best weights.

    An epoch improves when ``metrics[monitor] < best - min_delta``. ``restore`` loads the
    weights of the best epoch back into the model.

    Parameters
    ----------
    patience : int
        Epochs without improvement before stopping (>= 1).
    min_delta : float
        The least decrease that counts as an improvement.
    monitor : str
        The validation metric watched (lower is better).
    restore_best : bool
        Keep a copy of the best weights and load it back in :meth:`restore`.

    Examples
    --------
    >>> from torch import nn
    >>> from mola_ts.training import EarlyStopping
    >>> stopper, model = EarlyStopping(patience=1), nn.Linear(1, 1)
    >>> stopper.update(0, {"loss": 1.0}, model), stopper.update(1, {"loss": 2.0}, model)
    (False, True)
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
        """Record ``epoch``'s ``metrics`` (copying the weights on improvement); True to stop."""
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
        """Load the best epoch's weights into ``model`` (nothing without ``restore_best``)."""
        if self.restore_best and self.best_state is not None:
            model.load_state_dict(self.best_state)
