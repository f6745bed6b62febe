"""The settings of one training run: :class:`TrainConfig`.

Owns the plain, reusable settings of :func:`~mola_ts.training.train` (epochs, batch sizes,
optimizer and schedule, early-stopping patience, device, seed, scale-out), their validation
(a ``ValueError``/``TypeError`` naming the field) and the optimizer and scheduler they build.
Per-call objects (data, loss, stopper, callbacks) are arguments of ``train``, not settings.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["TrainConfig", "as_config"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("halve",)


def _check_int(name: str, value, low: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        none = "None or " if optional else ""
        raise ValueError(f"TrainConfig.{name} must be {none}an integer >= {low}, got {value!r}")


def _check_real(name: str, value, *, positive: bool, optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        none = "None or " if optional else ""
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"TrainConfig.{name} must be {none}a finite number {bound}, "
                         f"got {value!r}")


def _check_flag(name: str, value, *, optional: bool = False) -> None:
    if not (isinstance(value, (bool, np.bool_)) or (optional and value is None)):
        allowed = "None, True or False" if optional else "True or False"
        raise TypeError(f"TrainConfig.{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`~mola_ts.training.train`; validated on construction.

    Frozen: derive a variant with ``dataclasses.replace(config, epochs=5)``.

    Parameters
    ----------
    epochs : int
        Most epochs to train (>= 1).
    batch_size : int
        The training batch; under torchrun the *global* batch: each of the W ranks takes
        ``ceil(batch_size / W)``.
    lr : float
        Learning rate of the named optimizers.
    weight_decay : float
        Weight decay of the named optimizers.
    optimizer : {"adam", "adamw", "sgd"} or callable(params) -> optimizer
        ``"sgd"`` uses momentum 0.9. A callable receives the trainable parameters.
    scheduler : None, "halve" or callable(optimizer) -> scheduler
        Stepped once per epoch; ``"halve"`` multiplies the learning rate by 0.5 every epoch.
    patience : int or None
        Patience of the default :class:`~mola_ts.training.EarlyStopping` when validation data
        is given (None: train all epochs, no restore). A ``stopper`` passed to ``train``
        replaces it.
    grad_clip : float or None
        Clip the gradients' global norm to this value.
    shuffle : bool
        Reshuffle the training items every epoch.
    drop_last : bool
        Drop the last, incomplete training batch of every epoch.
    device : str, torch.device or None
        ``"auto"``/None: CUDA when available, else CPU.
    random_state : int, numpy RandomState or None
        Seeds Python, NumPy and torch at the start (see
        :func:`~mola_ts.training.seed_everything`); None draws a fresh seed.
    verbose : int
        > 0 shows a tqdm bar when stderr is a terminal (and ``MOLA_TS_NO_PROGRESS`` is unset).
    checkpoint_path : path or None
        Where to save the best weights (``torch.save`` of the state dict) on every
        improvement; written by rank 0 only.
    eval_batch_size : int
        Validation batch (per rank under torchrun).
    distributed : bool or None
        None: train with DDP when launched by torchrun with ``WORLD_SIZE > 1`` (or inside an
        existing process group of several ranks). False: train in this process alone even
        then. True: require a launch or a group, even of one process.

    Examples
    --------
    >>> from mola_ts.training import TrainConfig
    >>> TrainConfig(epochs=5, lr=1e-2).batch_size
    32
    >>> TrainConfig(epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: TrainConfig.epochs must be an integer >= 1, got 0
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str | Callable[[Sequence[nn.Parameter]], torch.optim.Optimizer] = "adam"
    scheduler: str | Callable[[torch.optim.Optimizer], Any] | None = None
    patience: int | None = 3
    grad_clip: float | None = None
    shuffle: bool = True
    drop_last: bool = False
    device: str | torch.device | None = "cpu"
    random_state: int | np.random.RandomState | None = 0
    verbose: int = 0
    checkpoint_path: str | os.PathLike | None = None
    eval_batch_size: int = 256
    distributed: bool | None = None

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        _check_int("patience", self.patience, 1, optional=True)
        _check_real("lr", self.lr, positive=False)
        _check_real("weight_decay", self.weight_decay, positive=False)
        _check_real("grad_clip", self.grad_clip, positive=True, optional=True)
        if not isinstance(self.verbose, bool):
            _check_int("verbose", self.verbose, 0)
        _check_flag("shuffle", self.shuffle)
        _check_flag("drop_last", self.drop_last)
        _check_flag("distributed", self.distributed, optional=True)
        self._check_choices()

    def _check_choices(self) -> None:
        opt = self.optimizer
        if not (callable(opt) or opt is None or
                (isinstance(opt, str) and opt.lower() in OPTIMIZERS)):
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS} or a callable, "
                             f"got {opt!r}")
        sched = self.scheduler
        if not (sched is None or callable(sched) or sched in SCHEDULERS):
            raise ValueError(f"TrainConfig.scheduler must be None, 'halve' or a callable, got "
                             f"{sched!r}")
        seed = self.random_state
        if not (seed is None or isinstance(seed, np.random.RandomState) or
                (isinstance(seed, numbers.Integral) and not isinstance(seed, bool))):
            raise TypeError(f"TrainConfig.random_state must be None, an integer or a numpy "
                            f"RandomState, got {seed!r}")
        if not (self.device is None or isinstance(self.device, (str, torch.device))):
            raise TypeError(f"TrainConfig.device must be 'auto', None, a device name or a "
                            f"torch.device, got {self.device!r}")
        if isinstance(self.device, str) and self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as exc:
                raise ValueError(f"TrainConfig.device must be 'auto', None or a torch device "
                                 f"name such as 'cpu' or 'cuda:0', got {self.device!r}") from exc
        path = self.checkpoint_path
        if not (path is None or isinstance(path, (str, os.PathLike))):
            raise TypeError(f"TrainConfig.checkpoint_path must be None or a path, got {path!r}")

    def make_optimizer(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer of ``params`` that :attr:`optimizer` names (or builds)."""
        if callable(self.optimizer) and not isinstance(self.optimizer, str):
            return self.optimizer(params)
        name = (self.optimizer or "adam").lower()
        if name == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if name == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)

    def make_scheduler(self, optimizer: torch.optim.Optimizer):
        """The per-epoch learning-rate scheduler of ``optimizer`` (None without one)."""
        if self.scheduler is None:
            return None
        if self.scheduler == "halve":  # the Time-Series-Library "type1" schedule: lr * 0.5**epoch
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return self.scheduler(optimizer)


def as_config(config: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
    """``config`` as a :class:`TrainConfig`: None gives the defaults, a mapping its fields.

    Raises
    ------
    TypeError
        When a mapping names a field :class:`TrainConfig` does not have, or ``config`` is
        neither a TrainConfig, a mapping nor None.
    """
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, Mapping):
        fields = [f.name for f in dataclasses.fields(TrainConfig)]
        unknown = sorted(str(k) for k in config if k not in fields)
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s) {', '.join(map(repr, unknown))}; the "
                            f"fields are {', '.join(fields)}")
        return TrainConfig(**config)
    raise TypeError(f"config must be a TrainConfig, a mapping of its fields or None, got "
                    f"{type(config).__name__}")
