"""Neural forecasters trained with :func:`mola_ts.training.train`: the shared plumbing and the
direct multi-output baselines (:class:`DirectForecaster`, :class:`DLinearForecaster`).

Plumbing shared with :class:`~mola_ts.forecast.MoLAForecaster`: an optional StandardScaler fitted
on the training rows, the validation series (given, or carved from the end of ``y``), sliding
windows (:class:`mola_ts.data.WindowDataset`), batched inference and save/load of the torch
module's weights.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..data import WindowDataset
from ..persistence import SaveLoadMixin
from ..training import resolve_device, seed_everything, train
from .backbones import make_backbone
from .base import BaseForecaster

__all__ = ["NeuralForecaster", "DirectForecaster", "DLinearForecaster", "mse_loss",
           "window_metrics"]


def mse_loss(model: nn.Module, batch) -> torch.Tensor:
    """Training objective of a direct forecaster: MSE of the whole horizon."""
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def window_metrics(model: nn.Module, batch) -> dict[str, torch.Tensor]:
    """Validation metrics: ``loss`` (MSE) and ``mae`` of a batch of windows."""
    x, y = batch
    err = model(x) - y
    return {"loss": err.pow(2).mean(), "mae": err.abs().mean()}


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or \
            not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


class NeuralForecaster(SaveLoadMixin, BaseForecaster):
    """Base of the torch forecasters (not used directly).

    Subclasses implement ``_build_module()`` (the torch module for the current params and
    ``n_features_in_``) and ``_train_module(train_values, val_values)`` on scaled arrays.
    """

    _inference_batch = 1024

    def _context_length(self) -> int:
        return _check_int("lookback", self.lookback, 1)

    # -- parameter checks --------------------------------------------------------------------
    def _check_training_params(self) -> None:
        _check_int("lookback", self.lookback, 1)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_positive("lr", self.lr)
        if self.patience is not None:
            _check_int("patience", self.patience, 1)
        frac = self.validation_fraction
        if frac is not None and not (isinstance(frac, (int, float)) and 0 <= frac < 1):
            raise ValueError(f"validation_fraction must be None or in [0, 1), got {frac!r}")
        if self.lr_schedule not in (None, "halve"):
            raise ValueError(f"lr_schedule must be None or 'halve', got {self.lr_schedule!r}")
        sizes = getattr(self, "backbone_params", None)
        if sizes is not None and not isinstance(sizes, dict):
            raise TypeError(f"backbone_params must be a dict or None, got {type(sizes).__name__}")

    # -- data --------------------------------------------------------------------------------
    def _split_validation(self, values: np.ndarray, val_values: np.ndarray | None
                          ) -> tuple[np.ndarray, np.ndarray | None]:
        """Training rows and validation rows (with ``lookback`` rows of history)."""
        if val_values is not None:
            return values, val_values
        frac = self.validation_fraction
        if not frac:
            return values, None
        need = self.lookback + self._window_horizon()
        n_val = int(round(len(values) * frac))
        if len(values) - n_val < need or n_val + self.lookback < need:
            raise ValueError(
                f"y has {len(values)} rows: too few to keep validation_fraction={frac} for "
                f"early stopping with lookback {self.lookback} + horizon "
                f"{self._window_horizon()} (each part needs {need} rows); give y_val, a "
                "longer series, or validation_fraction=0"
            )
        cut = len(values) - n_val
        return values[:cut], values[cut - self.lookback:]

    def _window_horizon(self) -> int:
        return self.horizon

    def _fit_scaler(self, values: np.ndarray) -> None:
        self.scaler_ = StandardScaler().fit(values) if self.scale else None

    def _to_scaled(self, values: np.ndarray) -> np.ndarray:
        scaler = self.scaler_
        out = values if scaler is None else (values - scaler.mean_) / scaler.scale_
        return np.asarray(out, dtype=np.float32)

    def _from_scaled(self, values: np.ndarray) -> np.ndarray:
        scaler = self.scaler_
        values = values.astype(np.float64)
        return values if scaler is None else values * scaler.scale_ + scaler.mean_

    def _datasets(self, train_values, val_values, horizon: int):
        train_set = WindowDataset(self._to_scaled(train_values), self.lookback, horizon)
        val_set = None if val_values is None else WindowDataset(
            self._to_scaled(val_values), self.lookback, horizon)
        return train_set, val_set

    # -- training ----------------------------------------------------------------------------
    def _fit(self, values: np.ndarray, val_values: np.ndarray | None) -> None:
        self._check_training_params()
        train_values, val_values = self._split_validation(values, val_values)
        self._fit_scaler(train_values)
        self._train_module(train_values, val_values)

    def _run_train(self, module: nn.Module, train_set, val_set, *, loss_fn, val_fn, epochs: int,
                   lr: float, patience, stopper=None):
        return train(
            module, train_set, loss_fn=loss_fn, val_data=val_set, val_fn=val_fn, epochs=epochs,
            batch_size=self.batch_size, lr=lr, scheduler=self.lr_schedule,
            patience=patience, stopper=stopper, device=self.device,
            random_state=self.random_state, verbose=self.verbose,
        )

    # -- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def _module_forecast(self, module: nn.Module, scaled: np.ndarray) -> np.ndarray:
        device = resolve_device(self.device)
        module.to(device)
        was_training = module.training
        module.eval()
        outs = []
        try:
            for start in range(0, len(scaled), self._inference_batch):
                x = torch.from_numpy(scaled[start:start + self._inference_batch]).to(device)
                outs.append(module(x).cpu().numpy())
        finally:
            module.train(was_training)
        return np.concatenate(outs, axis=0)

    def _forecast(self, windows: np.ndarray) -> np.ndarray:
        scaled = self._to_scaled(windows)
        return self._from_scaled(self._module_forecast(self.model_, scaled))

    # -- persistence -------------------------------------------------------------------------
    def _state_to_save(self) -> dict:
        state = super()._state_to_save()
        state["model_"] = dict(self.model_.state_dict())
        scaler = state.pop("scaler_")
        state["scaler_"] = None if scaler is None else {
            "mean": scaler.mean_, "scale": scaler.scale_, "var": scaler.var_,
            "n": int(np.max(scaler.n_samples_seen_))}
        return state

    def _restore_state(self, state: dict) -> None:
        state = dict(state)
        weights = state.pop("model_")
        scaler = state.pop("scaler_")
        super()._restore_state(state)
        if scaler is None:
            self.scaler_ = None
        else:
            self.scaler_ = StandardScaler()
            self.scaler_.mean_ = np.asarray(scaler["mean"], dtype=np.float64)
            self.scaler_.scale_ = np.asarray(scaler["scale"], dtype=np.float64)
            self.scaler_.var_ = np.asarray(scaler["var"], dtype=np.float64)
            self.scaler_.n_samples_seen_ = scaler["n"]
            self.scaler_.n_features_in_ = len(self.scaler_.mean_)
        module = self._build_module()
        module.load_state_dict(weights)
        module.eval()
        module.requires_grad_(False)
        self.model_ = module


class DirectForecaster(NeuralForecaster):
    """Direct multi-output forecaster: one backbone, one head predicting all ``horizon`` steps.

    This is the baseline MoLA improves on (every step comes from one shared representation),
    and with ``horizon = segment_length`` it is the MoLA foundation model.

    Parameters
    ----------
    lookback : int
        Rows of history each forecast reads (96 in the long-term benchmark).
    horizon : int
        Steps forecast (H).
    backbone : {"itransformer", "patch", "dlinear"}
        Network (see :mod:`mola_ts.forecast.backbones`).
    backbone_params : dict, optional
        Sizes passed to the backbone, e.g. ``{"d_model": 256, "d_ff": 256}``.
    epochs, patience, lr, batch_size : training settings
        Adam, at most ``epochs`` epochs, early stopping on the validation MSE with
        ``patience`` (None: no early stopping).
    lr_schedule : {"halve", None}
        "halve": the learning rate is halved after every epoch (Time-Series-Library).
    scale : bool
        Standardise every variable with a scaler fitted on the training rows; forecasts are
        returned in the original units.
    validation_fraction : float or None
        When ``fit`` gets no ``y_val``, this share of the last rows of ``y`` is held out for
        early stopping (0 or None: none).
    device : str
        "cpu", "cuda" or "auto".
    random_state : int or None
        Seed of initialisation, shuffling and dropout.
    verbose : int
        Show a progress bar on a terminal when > 0.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained backbone (eval mode).
    history_ : list of dict
        Per-epoch training and validation losses.
    columns_ : list of str
        Variable names seen in fit.

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.forecast import DirectForecaster
    >>> y = np.sin(np.arange(300) / 5.0)[:, None].repeat(2, axis=1)
    >>> model = DirectForecaster(lookback=24, horizon=6, epochs=2, validation_fraction=0)
    >>> model.fit(y).predict().shape
    (6, 2)
    """

    def __init__(self, lookback: int = 96, horizon: int = 96, *, backbone: str = "itransformer",
                 backbone_params: dict | None = None, epochs: int = 10, patience: int | None = 3,
                 lr: float = 1e-4, batch_size: int = 32, lr_schedule: str | None = "halve",
                 scale: bool = True, validation_fraction: float | None = 0.1,
                 device: str = "cpu", random_state: int | None = 0, verbose: int = 0):
        self.lookback = lookback
        self.horizon = horizon
        self.backbone = backbone
        self.backbone_params = backbone_params
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.batch_size = batch_size
        self.lr_schedule = lr_schedule
        self.scale = scale
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _backbone_name(self) -> str:
        return self.backbone

    def _backbone_kwargs(self) -> dict:
        return dict(self.backbone_params or {})

    def _build_module(self) -> nn.Module:
        return make_backbone(self._backbone_name(), self.lookback, self.horizon,
                             **self._backbone_kwargs())

    def _train_module(self, train_values: np.ndarray, val_values: np.ndarray | None) -> None:
        seed_everything(self.random_state)
        module = self._build_module()
        train_set, val_set = self._datasets(train_values, val_values, self.horizon)
        result = self._run_train(module, train_set, val_set, loss_fn=mse_loss,
                                 val_fn=window_metrics, epochs=self.epochs, lr=self.lr,
                                 patience=self.patience)
        module.eval()
        module.requires_grad_(False)  # fitted: inference only (and a frozen MoLA foundation)
        self.model_ = module
        self.history_ = result.history
        self.train_seconds_ = result.seconds
        self.n_parameters_ = sum(p.numel() for p in module.parameters())
        self.n_trainable_parameters_ = self.n_parameters_


class DLinearForecaster(DirectForecaster):
    """DLinear (Zeng et al., 2023): trend/remainder decomposition and two linear maps L -> H.

    Same training settings as :class:`DirectForecaster`; ``kernel_size`` is the moving-average
    window of the decomposition (25 in the reference).

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.forecast import DLinearForecaster
    >>> y = np.sin(np.arange(300) / 5.0)[:, None]
    >>> DLinearForecaster(lookback=24, horizon=6, epochs=2).fit(y).predict().shape
    (6, 1)
    """

    def __init__(self, lookback: int = 96, horizon: int = 96, *, kernel_size: int = 25,
                 epochs: int = 10, patience: int | None = 3, lr: float = 1e-4,
                 batch_size: int = 32, lr_schedule: str | None = "halve", scale: bool = True,
                 validation_fraction: float | None = 0.1, device: str = "cpu",
                 random_state: int | None = 0, verbose: int = 0):
        self.lookback = lookback
        self.horizon = horizon
        self.kernel_size = kernel_size
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.batch_size = batch_size
        self.lr_schedule = lr_schedule
        self.scale = scale
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _backbone_name(self) -> str:
        return "dlinear"

    def _backbone_kwargs(self) -> dict:
        return {"kernel_size": self.kernel_size}
