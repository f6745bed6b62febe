"""The torch forecasters' estimator base and the direct multi-output forecasters.

This module owns the estimators: :class:`NeuralForecaster` (the base of every torch forecaster:
parameter checks, the fit from validation rows to trained members, point forecasts, save/load
of the networks), :class:`DirectForecaster` (one backbone, one head for the whole horizon; the
MoLA foundation) and :class:`DLinearForecaster`. The data handling and training objective they
use are in :mod:`mola_ts.forecast.fitting`, the networks in :mod:`mola_ts.forecast.backbones`,
the ensemble and last-layer Laplace behind ``predict_interval`` in
:mod:`mola_ts.forecast.predictive`.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from torch import nn

from ..data import WindowDataset, check_number
from ..persistence import SaveLoadMixin
from ..training import (
    TrainConfig,
    preserve_global_rng,
    resolve_device,
    resolve_seed,
    seed_everything,
    stage,
    train,
)
from ..uncertainty.conformal import ConformalCalibrator
from ..uncertainty.heads import laplace_state, restore_laplace
from .backbones import make_backbone
from .base import BaseForecaster
from .calibrated import CalibratedMixin
from .fitting import (
    batched_forecast,
    fit_scaler,
    freeze,
    from_scaled,
    mse_loss,
    restore_scaler,
    scaler_state,
    split_validation,
    to_scaled,
    window_metrics,
)
from .predictive import PredictiveMixin

__all__ = ["NeuralForecaster", "DirectForecaster", "DLinearForecaster"]


class NeuralForecaster(CalibratedMixin, PredictiveMixin, SaveLoadMixin, BaseForecaster):
    """Base of the torch forecasters (not used directly).

    Subclasses implement ``_build_module(member=0)`` (the torch module of ensemble member
    ``member`` for the current params and ``n_features_in_``) and
    ``_train_module(train_values, val_values)`` on scaled arrays, which sets ``members_``,
    ``model_`` (member 0) and ``member_seconds_``.
    """

    def _context_length(self) -> int:
        return check_number(self.lookback, "lookback", min_val=1)

    # -- parameter checks --------------------------------------------------------------------
    def _check_training_params(self) -> None:
        check_number(self.lookback, "lookback", min_val=1)
        check_number(self.epochs, "epochs", min_val=1)
        check_number(self.batch_size, "batch_size", min_val=1)
        check_number(self.lr, "lr", numbers.Real, min_val=0, include_boundaries="neither")
        if self.patience is not None:
            check_number(self.patience, "patience", min_val=1)
        if self.validation_fraction is not None:
            check_number(self.validation_fraction, "validation_fraction", numbers.Real,
                         min_val=0, max_val=1, include_boundaries="left")
        if self.lr_schedule not in (None, "halve"):
            raise ValueError(f"lr_schedule must be None or 'halve', got {self.lr_schedule!r}")
        sizes = getattr(self, "backbone_params", None)
        if sizes is not None and not isinstance(sizes, dict):
            raise TypeError(f"backbone_params must be a dict or None, got {type(sizes).__name__}")
        self._check_uncertainty_params()
        self._conformal()

    def _check_covariates_supported(self) -> None:
        backbone = self._backbone_name() if hasattr(self, "_backbone_name") else self.backbone
        if backbone != "itransformer":
            raise ValueError(
                f"covariates (X, calendar) need the itransformer backbone, where each covariate "
                f"is one more variate token; {type(self).__name__} uses backbone={backbone!r}"
            )
        if self._uncertainty() is not None:
            raise ValueError("covariates (X, calendar) are not supported with uncertainty "
                             f"{self.uncertainty!r} yet: fit with uncertainty=None")

    def _target_kwargs(self) -> dict:
        """With covariates, the backbone forecasts only the target variates."""
        return {"n_targets": self.n_features_in_} if getattr(self, "n_covariates_", 0) else {}

    # -- data --------------------------------------------------------------------------------
    def _to_scaled(self, values: np.ndarray) -> np.ndarray:
        """Scaled float32 values for the network; values beyond float32's range raise."""
        return to_scaled(values, self.scaler_)

    def _from_scaled(self, values: np.ndarray) -> np.ndarray:
        """Network outputs back in the data's units (float64)."""
        return from_scaled(values, self.scaler_)

    def _datasets(self, train_values, val_values, horizon: int):
        train_set = WindowDataset(self._to_scaled(train_values), self.lookback, horizon)
        val_set = None if val_values is None else WindowDataset(
            self._to_scaled(val_values), self.lookback, horizon)
        return train_set, val_set

    # -- training ----------------------------------------------------------------------------
    def _fit(self, values: np.ndarray, val_values: np.ndarray | None) -> None:
        # one int seed per fit (a RandomState / Generator gives one draw and advances)
        self.seed_ = resolve_seed(self.random_state)
        # the fit reseeds the global generators per member; the caller's streams are restored
        with preserve_global_rng():
            self._fit_seeded(values, val_values)

    def _fit_seeded(self, values: np.ndarray, val_values: np.ndarray | None) -> None:
        self._check_training_params()
        train_values, val_values = split_validation(
            values, val_values, fraction=self.validation_fraction, lookback=self.lookback,
            horizon=self.horizon)
        if self._uncertainty() is not None and val_values is None and \
                getattr(self, "uncertainty_data", "train") == "validation":
            raise ValueError("uncertainty_data='validation' needs validation rows: give y_val "
                             "or a validation_fraction > 0")
        self.scaler_ = fit_scaler(train_values, self.scale)
        self.laplace_ = None  # a refit's training forecasts through the new adapters only
        self._train_module(train_values, val_values)
        self.uncertainty_seconds_ = None
        self.uncertainty_skipped_windows_ = None
        if self._uncertainty() is not None:
            data = train_values if getattr(self, "uncertainty_data", "train") == "train" \
                else val_values
            self._fit_uncertainty(data, val_values if data is train_values else None)
        self._fit_conformal(values, val_values)

    def _train_config(self, *, epochs: int, lr: float, patience: int | None,
                      random_state: int | None) -> TrainConfig:
        """The training settings of one stage: these, and the estimator's shared ones."""
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=lr,
                           scheduler=self.lr_schedule, patience=patience, device=self.device,
                           random_state=random_state, verbose=self.verbose)

    def _set_timings(self) -> None:
        """Training-time attributes from the per-member times (after fit or sub_ensemble)."""
        self.train_seconds_ = float(sum(self.member_seconds_))

    # -- inference ---------------------------------------------------------------------------
    def _forecast(self, windows: np.ndarray) -> np.ndarray:
        if self._own_heads():  # the members' refitted heads forecast: the mixture's mean
            return self._forecast_distribution(windows).mean
        scaled = self._to_scaled(windows)
        device = resolve_device(self.device)
        members = getattr(self, "members_", None) or [self.model_]
        if len(members) == 1:
            return self._from_scaled(batched_forecast(members[0], scaled, device))
        outs = [batched_forecast(m, scaled, device).astype(np.float64) for m in members]
        return self._from_scaled(np.mean(outs, axis=0))

    # -- persistence -------------------------------------------------------------------------
    def _state_to_save(self) -> dict:
        state = super()._state_to_save()
        state["model_"] = dict(self.model_.state_dict())
        members = state.pop("members_", None) or [self.model_]
        state["members_"] = [dict(m.state_dict()) for m in members[1:]]  # member 0: model_
        laplace = state.pop("laplace_", None)
        state["laplace_"] = None if laplace is None else [
            [laplace_state(la) for la in member] for member in laplace]
        state["scaler_"] = scaler_state(state.pop("scaler_"))
        cal = state.pop("conformal_", None)
        state["conformal_"] = None if cal is None else {
            "method": cal.method, "min_windows": cal.min_windows, "gamma": cal.gamma,
            "fitted": {k: v for k, v in vars(cal).items() if k.endswith("_") and k != "alpha_"},
            "alpha": [[c, a] for c, a in cal.alpha_.items()]}
        return state

    def _restore_state(self, state: dict) -> None:
        state = dict(state)
        weights = state.pop("model_")
        extra_members = state.pop("members_", [])
        laplace = state.pop("laplace_", None)
        scaler = state.pop("scaler_")
        cal = state.pop("conformal_", None)
        super()._restore_state(state)
        self.conformal_ = None
        if cal is not None:
            self.conformal_ = ConformalCalibrator(cal["method"], min_windows=cal["min_windows"],
                                                  gamma=cal["gamma"])
            for key, value in cal["fitted"].items():
                setattr(self.conformal_, key, value)
            self.conformal_.alpha_ = {float(c): np.asarray(a) for c, a in cal["alpha"]}
        self.scaler_ = restore_scaler(scaler)
        members = []
        for k, member_weights in enumerate([weights] + list(extra_members)):
            module = self._build_module(k)
            module.load_state_dict(member_weights)
            members.append(freeze(module))
        self.model_ = members[0]
        self.members_ = members
        self.laplace_ = None if laplace is None else [
            [restore_laplace(self._head_network(module).head, s) for s in member]
            for module, member in zip(members, laplace, strict=True)]
        if laplace is not None and not self._own_heads():
            warnings.warn(
                "this file holds the old last-layer Laplace on the frozen foundation head "
                "(identical in every member, never trained on the adapted features): its "
                "intervals over-cover and its mixture equals the ensemble; fit again for "
                "members with their own heads", UserWarning, stacklevel=4)


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
    n_ensemble : int
        K networks trained with seeds ``random_state + 1000 k`` (a deep ensemble; K times the
        training cost); the point forecast is their mean. 1: the plain model.
    uncertainty : {None, "laplace", "noise"}
        Predictive distribution for ``predict_interval`` / ``predict_quantiles`` /
        ``predict_distribution``: a last-layer Laplace per member ("laplace"; with K > 1 the
        Laplace mixture) or the Gaussian of the fitted noise alone ("noise"; the MAP, or with
        K > 1 the deep ensemble). None (default): point forecasts only; the probabilistic
        methods then raise a ValueError naming this parameter. See
        :mod:`mola_ts.forecast.predictive`.
    uncertainty_data : {"train", "validation"}
        Windows the members' heads, their Laplace curvature and evidence-tuned prior precision
        and noise are fitted on (post hoc, after training).
    calendar : str or sequence of {"hour", "weekday", "month"}, optional
        Known calendar features (a sine and cosine of each cycle, from the time index) read
        as covariate tokens; they need no input at predict. The itransformer backbone only.
        Past covariates of your own go to ``fit(y, X=...)``: see
        :mod:`mola_ts.forecast.covariates`.
    conformal : {"auto", "split", "adaptive", None}
        Conformal correction of ``predict_interval`` / ``predict_quantiles`` on the validation
        windows (with ``uncertainty`` set): "auto" (default: split or adaptive, whichever
        covers the second half of the validation windows closer to nominal when calibrated on
        the first half), "split", "adaptive" (then learns from the values given to
        ``update``), None (the mixture's own intervals). See
        :mod:`mola_ts.forecast.calibrated`.
    device : str
        "cpu", "cuda" or "auto".
    random_state : int, numpy RandomState or Generator, or None
        Seed of initialisation, shuffling and dropout. One int seed (``seed_``) is drawn from
        it at fit, as scikit-learn does: only an int makes two fits give the same model (a
        RandomState or Generator advances with every fit; None draws a fresh seed).
    verbose : int
        When > 0, a stage line per phase and a progress bar of the epochs (``tqdm.auto``: a
        widget in a notebook, text elsewhere); ``MOLA_TS_NO_PROGRESS=1`` turns them off.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained backbone (eval mode); ensemble member 0.
    members_ : list of torch.nn.Module
        The K trained networks (``members_[0] is model_``).
    laplace_ : list of list of LastLayerLaplace or None
        Per member, the Laplace approximation of its head (None without uncertainty).
    member_seconds_, uncertainty_seconds_ : list of float
        Wall-clock training time of each member, and of fitting its Laplace (None without
        uncertainty).
    uncertainty_skipped_windows_ : int
        Windows left out of the Laplace and noise fit because a variable is constant over their
        lookback (its spread divided into the target would swamp the noise); a warning says
        how many.
    history_ : list of dict
        Per-epoch training and validation losses (member 0).
    columns_ : list of str
        Variable names seen in fit.
    seed_ : int
        The seed drawn from ``random_state`` at fit (member k uses ``seed_ + 1000 k``).

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.forecast import DirectForecaster
    >>> y = np.sin(np.arange(120) / 5.0)[:, None].repeat(2, axis=1)
    >>> tiny = {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 8}
    >>> model = DirectForecaster(lookback=12, horizon=4, backbone_params=tiny, epochs=2)
    >>> model.fit(y).predict().shape
    (4, 2)

    With a predictive distribution (a last-layer Laplace), intervals in sktime's layout:

    >>> model.set_params(uncertainty="laplace").fit(y).predict_interval(coverage=0.9).shape
    (4, 4)
    """

    def __init__(self, lookback: int = 96, horizon: int = 96, *, backbone: str = "itransformer",
                 backbone_params: dict | None = None, epochs: int = 10, patience: int | None = 3,
                 lr: float = 1e-4, batch_size: int = 32, lr_schedule: str | None = "halve",
                 scale: bool = True, validation_fraction: float | None = 0.1,
                 n_ensemble: int = 1, uncertainty: str | None = None,
                 uncertainty_data: str = "train", calendar=None,
                 conformal: str | None = "auto",
                 device: str = "cpu", random_state=0, verbose: int = 0):
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
        self.n_ensemble = n_ensemble
        self.uncertainty = uncertainty
        self.uncertainty_data = uncertainty_data
        self.calendar = calendar
        self.conformal = conformal
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _backbone_name(self) -> str:
        return self.backbone

    def _backbone_kwargs(self) -> dict:
        return dict(self.backbone_params or {})

    def _build_module(self, member: int = 0) -> nn.Module:
        # initialised from the global generator, which _train_module seeds per member
        return make_backbone(self._backbone_name(), self.lookback, self.horizon,
                             **self._backbone_kwargs(), **self._target_kwargs())

    def _train_module(self, train_values: np.ndarray, val_values: np.ndarray | None) -> None:
        train_set, val_set = self._datasets(train_values, val_values, self.horizon)
        members, seconds = [], []
        n_members = self._n_members()
        for k in range(n_members):
            stage(f"{type(self).__name__}: member {k + 1}/{n_members}, horizon "
                  f"{self.horizon}", self.verbose)
            seed = self._member_seed(k)
            seed_everything(seed)
            module = self._build_module(k)
            config = self._train_config(epochs=self.epochs, lr=self.lr, patience=self.patience,
                                        random_state=seed)
            result = train(module, train_set, mse_loss, config, val_data=val_set,
                           val_fn=window_metrics)
            members.append(freeze(module))  # fitted: inference only (a frozen MoLA foundation)
            seconds.append(result.seconds)
            if k == 0:
                self.history_ = result.history
        self.model_ = members[0]
        self.members_ = members
        self.member_seconds_ = seconds
        self._set_timings()
        self.n_parameters_ = sum(p.numel() for p in self.model_.parameters())
        self.n_trainable_parameters_ = self.n_parameters_


class DLinearForecaster(DirectForecaster):
    """DLinear (Zeng et al., 2023): trend/remainder decomposition and two linear maps L -> H.

    Same training settings as :class:`DirectForecaster`; ``kernel_size`` is the moving-average
    window of the decomposition (25 in the reference).

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.forecast import DLinearForecaster
    >>> y = np.sin(np.arange(120) / 5.0)[:, None]
    >>> DLinearForecaster(lookback=12, horizon=4, kernel_size=5, epochs=2).fit(y).predict().shape
    (4, 1)
    """

    def __init__(self, lookback: int = 96, horizon: int = 96, *, kernel_size: int = 25,
                 epochs: int = 10, patience: int | None = 3, lr: float = 1e-4,
                 batch_size: int = 32, lr_schedule: str | None = "halve", scale: bool = True,
                 validation_fraction: float | None = 0.1, device: str = "cpu",
                 random_state=0, verbose: int = 0):
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
