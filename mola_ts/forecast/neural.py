"""Neural forecasters trained with :func:`mola_ts.training.train`: the shared plumbing and the
direct multi-output baselines (:class:`DirectForecaster`, :class:`DLinearForecaster`).

Plumbing shared with :class:`~mola_ts.forecast.MoLAForecaster`: an optional StandardScaler fitted
on the training rows, the validation series (given, or carved from the end of ``y``), sliding
windows (:class:`mola_ts.data.WindowDataset`), batched inference, save/load of the torch
module's weights, and the probabilistic forecasts (uncertainty spec §1, §4):

- **Ensemble** (``n_ensemble = K``): K networks trained with seeds ``random_state + 1000 k``
  (member 0 is the network a plain fit gives); for MoLA they are K adapters on the one frozen
  foundation. The point forecast is the members' mean.
- **Predictive** (``uncertainty``): every member gets a last-layer Laplace approximation
  (:class:`~mola_ts.uncertainty.LastLayerLaplace`, Kronecker-factored, which is exact for a
  linear head, prior precision and one noise level per head output tuned on the evidence),
  fitted post hoc on the training windows (``uncertainty_data="train"``) or the validation
  windows. ``"laplace"`` predicts with the linearised Laplace predictive (functional variance
  plus noise), ``"noise"`` with the Gaussian of the fitted noise alone (the MAP predictive;
  with K > 1 the deep ensemble). The K member predictives form a uniform Gaussian mixture
  (K > 1 with ``"laplace"``: the mixture of Laplace approximations).

Where the Laplace sits, and why the de-normalisation is exact
-------------------------------------------------------------
The backbones (iTransformer, patch transformer) standardise every window per variate,
``x_n = (x - m) / s`` with the window's mean ``m`` and std ``s`` (per variate), run the network,
and return ``head(phi) * s + m``: the output is *not* the head's output. The Laplace therefore
sits on the ``head`` (the last ``nn.Linear``) with its input ``phi``, and is fitted on the
targets in that normalised space, ``(y - m) / s``; its Gaussian likelihood (noise ``sigma_i``
per head output, i.e. per step of the segment) lives there too. Given the window, ``m`` and
``s`` are constants, so the forecast is an affine map of the head output per (window, variate);
the forecaster's StandardScaler adds a second affine map per variate. Under ``y = a f + b`` a
Gaussian component ``N(mu, v)`` becomes exactly ``N(a mu + b, a^2 v)`` (likewise its noise
part), so the mixture is mapped component by component without approximation. A noise level
that is constant in the normalised space is proportional to the window's std in the data's
units: calmer windows get narrower intervals.

A MoLA adapter runs the frozen foundation head once per segment; each segment gets its own
Laplace on the head (same MAP weights, its own features, curvature and per-step noise), so the
noise can grow along the whole horizon.
"""

from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..data import WindowDataset
from ..persistence import SaveLoadMixin
from ..training import (
    TrainConfig,
    preserve_global_rng,
    resolve_device,
    seed_everything,
    train,
)
from ..uncertainty import GaussianMixture, LastLayerLaplace
from .backbones import InstanceNorm, make_backbone
from .base import BaseForecaster

#: a window spread at or below this (the normalisation's floor is sqrt(InstanceNorm.eps)) marks
#: a variate constant over the lookback
_CONSTANT_STD = 2.0 * float(np.sqrt(InstanceNorm.eps))

__all__ = ["NeuralForecaster", "DirectForecaster", "DLinearForecaster", "mse_loss",
           "window_metrics", "UNCERTAINTY", "UNCERTAINTY_DATA"]

#: values of the ``uncertainty`` parameter: no predictive, fitted noise only, last-layer Laplace
UNCERTAINTY = (None, "noise", "laplace")
#: windows the Laplace (curvature and evidence-tuned noise) is fitted on
UNCERTAINTY_DATA = ("train", "validation")
#: seed offset between ensemble members
MEMBER_SEED_STRIDE = 1000


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


def _laplace_state(la: LastLayerLaplace) -> dict:
    """A fitted LastLayerLaplace as storable values (its params but the model, its state)."""
    params = {k: v for k, v in la.get_params(deep=False).items() if k != "model"}
    fitted = {k: v for k, v in vars(la).items() if k.endswith("_") and not k.startswith("_")}
    return {"params": params, "fitted": fitted}


def _restore_laplace(head: nn.Module, state: dict) -> LastLayerLaplace:
    la = LastLayerLaplace(head, **state["params"])
    for key, value in state["fitted"].items():
        setattr(la, key, value)
    return la


class NeuralForecaster(SaveLoadMixin, BaseForecaster):
    """Base of the torch forecasters (not used directly).

    Subclasses implement ``_build_module(member=0)`` (the torch module of ensemble member
    ``member`` for the current params and ``n_features_in_``) and
    ``_train_module(train_values, val_values)`` on scaled arrays, which sets ``members_``,
    ``model_`` (member 0) and ``member_seconds_``.
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
        self._n_members()
        if self._uncertainty() is not None:
            data = getattr(self, "uncertainty_data", "train")
            if data not in UNCERTAINTY_DATA:
                raise ValueError(f"uncertainty_data must be one of {UNCERTAINTY_DATA}, got "
                                 f"{data!r}")
            if getattr(self, "backbone", None) == "dlinear" and \
                    getattr(self, "foundation", None) is None:
                raise ValueError(
                    "uncertainty needs a backbone whose forecast is one linear head after the "
                    "instance normalisation ('itransformer' or 'patch'); backbone='dlinear' "
                    "sums two linear maps"
                )

    # -- ensemble and uncertainty settings ---------------------------------------------------
    def _n_members(self) -> int:
        """K, the ensemble size (``n_ensemble``; 1 for forecasters without the parameter)."""
        return _check_int("n_ensemble", getattr(self, "n_ensemble", 1), 1)

    def _uncertainty(self) -> str | None:
        value = getattr(self, "uncertainty", None)
        if value not in UNCERTAINTY:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY}, got {value!r}")
        return value

    def _member_seed(self, k: int) -> int | None:
        """Seed of ensemble member ``k`` (member 0: ``random_state`` itself)."""
        return None if self.random_state is None else \
            int(self.random_state) + MEMBER_SEED_STRIDE * k

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
        if not self.scale:
            # the squared errors of the loss must fit float32 as well as the values
            limit = float(np.sqrt(np.finfo(np.float32).max)) / 10.0
            largest = float(np.abs(values).max())
            if largest > limit:
                raise ValueError(
                    f"y reaches |value| {largest:.3g}; with scale=False the squared errors of "
                    f"the training loss overflow float32 beyond {limit:.3g}: fit with "
                    "scale=True or rescale y"
                )
            self.scaler_ = None
            return
        with np.errstate(over="ignore", invalid="ignore"):
            scaler = StandardScaler().fit(values)
        bad = ~(np.isfinite(scaler.mean_) & np.isfinite(scaler.scale_))
        if bad.any():
            raise ValueError(
                f"y's variance overflows float64 in columns at positions "
                f"{np.flatnonzero(bad)[:5].tolist()} (largest |value| "
                f"{np.abs(values).max():.3g}); divide the series by a constant first"
            )
        self.scaler_ = scaler

    def _to_scaled(self, values: np.ndarray) -> np.ndarray:
        """Scaled float32 values for the network; values beyond float32's range raise."""
        scaler = self.scaler_
        with np.errstate(over="ignore", invalid="ignore"):
            out = values if scaler is None else (values - scaler.mean_) / scaler.scale_
            out = np.asarray(out, dtype=np.float32)
        if not np.isfinite(out).all():
            raise ValueError(
                f"the series holds values too large for the network's float32 arithmetic "
                f"(largest |value| {np.abs(values).max():.3g}"
                f"{', after scaling' if scaler is not None else ''}; float32 holds up to "
                f"{np.finfo(np.float32).max:.3g}): rescale it"
                f"{'' if scaler is not None else ' or fit with scale=True'}"
            )
        return out

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
        # the fit reseeds the global generators per member; the caller's streams are restored
        with preserve_global_rng():
            self._fit_seeded(values, val_values)

    def _fit_seeded(self, values: np.ndarray, val_values: np.ndarray | None) -> None:
        self._check_training_params()
        train_values, val_values = self._split_validation(values, val_values)
        if self._uncertainty() is not None and val_values is None and \
                getattr(self, "uncertainty_data", "train") == "validation":
            raise ValueError("uncertainty_data='validation' needs validation rows: give y_val "
                             "or a validation_fraction > 0")
        self._fit_scaler(train_values)
        self._train_module(train_values, val_values)
        self.laplace_ = None
        self.uncertainty_seconds_ = None
        self.uncertainty_skipped_windows_ = None
        if self._uncertainty() is not None:
            data = train_values if getattr(self, "uncertainty_data", "train") == "train" \
                else val_values
            self._fit_uncertainty(data)

    def _run_train(self, module: nn.Module, train_set, val_set, *, loss_fn, val_fn, epochs: int,
                   lr: float, patience, stopper=None, random_state="params"):
        config = TrainConfig(
            epochs=epochs, batch_size=self.batch_size, lr=lr, scheduler=self.lr_schedule,
            patience=patience, device=self.device,
            random_state=self.random_state if random_state == "params" else random_state,
            verbose=self.verbose,
        )
        return train(module, train_set, loss_fn, config, val_data=val_set, val_fn=val_fn,
                     stopper=stopper)

    def _set_timings(self) -> None:
        """Training-time attributes from the per-member times (after fit or sub_ensemble)."""
        self.train_seconds_ = float(sum(self.member_seconds_))

    # -- the head and its normalised space (for the Laplace) ---------------------------------
    def _head_network(self, module: nn.Module) -> nn.Module:
        """The backbone network inside a member (the one holding ``head``)."""
        return module

    def _head_pass(self, module: nn.Module, x: torch.Tensor):
        """Run ``module`` on scaled windows ``x`` (B, L, C) and capture its head.

        Returns ``(phi, f, out, mean, std)``: the head's input (n B, C, d) and output
        (n B, C, S) for the module's ``n`` head runs stacked segment-major (n = 1 for a direct
        model), the module's output (B, n S, C) and the window statistics (B, 1, C) of the
        instance normalisation (0 and 1 without it), so that
        ``out = f (as (B, n S, C)) * std + mean``.
        """
        network = self._head_network(module)
        head = getattr(network, "head", None)
        if not isinstance(head, nn.Linear):
            raise ValueError(
                f"uncertainty needs a backbone whose forecast is one linear `head` after the "
                f"instance normalisation (itransformer, patch); {type(network).__name__} has "
                "none"
            )
        captured: list[tuple[torch.Tensor, torch.Tensor]] = []
        handle = head.register_forward_hook(
            lambda _mod, inputs, output: captured.append((inputs[0], output)))
        try:
            with torch.no_grad():
                out = module(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise ValueError(f"the head of {type(network).__name__} ran {len(captured)} times "
                             "in one forward pass; expected once")
        phi, f = captured[0]
        if getattr(network, "instance_norm", False):
            _, mean, std = InstanceNorm.normalize(x)
        else:
            mean = torch.zeros_like(x[:, :1])
            std = torch.ones_like(x[:, :1])
        return phi, f, out, mean, std

    @staticmethod
    def _to_horizon(f: torch.Tensor, batch: int) -> torch.Tensor:
        """Head outputs (n B, C, S), segment-major, as forecasts (B, n S, C)."""
        n, channels, steps = f.shape[0] // batch, f.shape[1], f.shape[2]
        return f.reshape(n, batch, channels, steps).permute(1, 0, 3, 2).reshape(
            batch, n * steps, channels)

    def _fit_uncertainty(self, values: np.ndarray) -> None:
        """Fit one last-layer Laplace per member and head run on the windows of ``values``."""
        device = resolve_device(self.device)
        dataset = WindowDataset(self._to_scaled(values), self.lookback, self.horizon)
        self.laplace_, self.uncertainty_seconds_ = [], []
        skipped = 0
        for module in self.members_:
            start = time.perf_counter()
            module.to(device)
            phis: list[list[torch.Tensor]] = []
            targets: list[list[torch.Tensor]] = []
            for first in range(0, len(dataset), self._inference_batch):
                x, y = dataset.get_batch(np.arange(first, min(first + self._inference_batch,
                                                             len(dataset))))
                x, y = x.to(device), y.to(device)
                phi, f, out, mean, std = self._head_pass(module, x)
                batch = len(x)
                if first == 0:
                    rebuilt = self._to_horizon(f, batch) * std + mean
                    if rebuilt.shape != out.shape or not torch.allclose(
                            rebuilt, out, rtol=1e-4, atol=1e-4 * float(out.abs().max()) + 1e-6):
                        raise ValueError(
                            f"{type(self._head_network(module)).__name__}'s forecast is not its "
                            "head's output mapped back by the instance normalisation; the "
                            "last-layer Laplace cannot be placed on it"
                        )
                n, steps = f.shape[0] // batch, f.shape[2]
                z = ((y - mean) / std).reshape(batch, n, steps, y.shape[2]).permute(1, 0, 3, 2)
                # a variate constant over the lookback has the normalisation's floor as its
                # spread, and its future, divided by that floor, would dominate the fitted
                # noise (ETTh1's validation rows hold such stretches): such windows are left
                # out of the fit, counted in uncertainty_skipped_windows_
                keep = (std.reshape(batch, -1) > _CONSTANT_STD).all(dim=1).cpu()
                if module is self.members_[0]:
                    skipped += int((~keep).sum())
                if not phis:
                    phis, targets = [[] for _ in range(n)], [[] for _ in range(n)]
                for k in range(n):
                    phis[k].append(phi[k * batch:(k + 1) * batch].cpu()[keep])
                    targets[k].append(z[k].cpu()[keep])
            if skipped == len(dataset):
                raise ValueError(
                    f"every one of the {len(dataset)} windows for the Laplace fit "
                    f"(uncertainty_data={getattr(self, 'uncertainty_data', 'train')!r}) has a "
                    "variable that is constant over its lookback; the noise cannot be fitted")
            head = self._head_network(module).head
            self.laplace_.append([
                LastLayerLaplace(head, structure="kron", noise="per_output", tune=True,
                                 batch_size=self._inference_batch).fit(
                    torch.cat(p), torch.cat(t))
                for p, t in zip(phis, targets, strict=True)])
            self.uncertainty_seconds_.append(time.perf_counter() - start)
        self.uncertainty_skipped_windows_ = skipped
        if skipped:
            warnings.warn(
                f"{skipped} of {len(dataset)} windows were left out of the Laplace and noise fit: "
                "a variable is constant over their lookback (uncertainty_skipped_windows_)",
                UserWarning, stacklevel=3)

    def _forecast_distribution(self, windows: np.ndarray) -> GaussianMixture:
        check_is_fitted(self, "model_")
        mode = self._uncertainty()
        if mode is None or getattr(self, "laplace_", None) is None:
            raise ValueError(
                f"this {type(self).__name__} was fitted with uncertainty=None and has no "
                "predictive distribution: set uncertainty='laplace' (last-layer Laplace; with "
                "n_ensemble=5 the Laplace mixture) or uncertainty='noise' (fitted noise only; "
                "with n_ensemble > 1 the deep ensemble) and fit again"
            )
        device = resolve_device(self.device)
        scaled = self._to_scaled(windows)
        n_win, _, channels = windows.shape
        shape = (n_win, self.horizon, channels, len(self.members_))
        means, variances, noises = np.empty(shape), np.empty(shape), np.empty(shape)
        for m, (module, laplaces) in enumerate(zip(self.members_, self.laplace_, strict=True)):
            module.to(device)
            for first in range(0, n_win, self._inference_batch):
                rows = slice(first, min(first + self._inference_batch, n_win))
                x = torch.from_numpy(np.ascontiguousarray(scaled[rows])).to(device)
                phi, _, _, mean, std = self._head_pass(module, x)
                batch = len(x)
                parts = [la.predict_distribution(phi[k * batch:(k + 1) * batch])
                         for k, la in enumerate(laplaces)]  # each (B, C, S), normalised space
                mu = np.concatenate([d.mean for d in parts], axis=2)  # (B, C, n S)
                noise = np.concatenate([d.variance_decomposition()["noise"] for d in parts],
                                       axis=2)
                var = np.concatenate([d.var for d in parts], axis=2) if mode == "laplace" \
                    else noise
                # the affine map back to the data's units: window statistics, then the scaler
                a = std.cpu().numpy().astype(np.float64)  # (B, 1, C)
                b = mean.cpu().numpy().astype(np.float64)
                if self.scaler_ is not None:
                    a, b = a * self.scaler_.scale_, b * self.scaler_.scale_ + self.scaler_.mean_
                means[rows, ..., m] = mu.transpose(0, 2, 1) * a + b
                variances[rows, ..., m] = var.transpose(0, 2, 1) * a ** 2
                noises[rows, ..., m] = noise.transpose(0, 2, 1) * a ** 2
        return GaussianMixture(means, variances, noise_variances=noises)

    def sub_ensemble(self, n_members: int | None = None, *, uncertainty: str | None = None):
        """This fitted forecaster restricted to its first ``n_members`` ensemble members.

        Returns a new fitted forecaster (sharing the trained networks and Laplace fits, which
        are never modified) with ``n_ensemble = n_members`` and, optionally, another
        ``uncertainty`` ("noise" or "laplace"; both use the same fitted Laplace, so no refit is
        needed). Member ``k`` is seeded by ``random_state`` and ``k`` alone, so the result is
        what fitting with those parameters gives. This is how one fit scores the MAP, the
        deep ensemble, one Laplace and the Laplace mixture.

        Examples
        --------
        >>> import numpy as np
        >>> from mola_ts.forecast import DirectForecaster
        >>> y = np.sin(np.arange(300) / 5.0)[:, None]
        >>> model = DirectForecaster(24, 6, backbone_params={"d_model": 16, "d_ff": 16}, epochs=1,
        ...                          n_ensemble=2, uncertainty="laplace").fit(y)
        >>> single = model.sub_ensemble(1, uncertainty="noise")
        >>> single.n_ensemble, single.uncertainty, single.predict_distribution().n_components
        (1, 'noise', 1)
        """
        check_is_fitted(self, "members_")
        n = len(self.members_) if n_members is None else _check_int("n_members", n_members, 1)
        if n > len(self.members_):
            raise ValueError(f"n_members must be <= the {len(self.members_)} fitted members, "
                             f"got {n}")
        if uncertainty is not None and uncertainty not in UNCERTAINTY:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY}, got {uncertainty!r}")
        if uncertainty is not None and self.laplace_ is None:
            raise ValueError("this forecaster was fitted with uncertainty=None: no Laplace to "
                             "reuse; fit with uncertainty='laplace' or 'noise'")
        out = copy.copy(self)
        out.n_ensemble = n
        if uncertainty is not None:
            out.uncertainty = uncertainty
        out.members_ = self.members_[:n]
        out.member_seconds_ = list(self.member_seconds_[:n])
        if self.laplace_ is not None:
            out.laplace_ = self.laplace_[:n]
            out.uncertainty_seconds_ = list(self.uncertainty_seconds_[:n])
        out._set_timings()
        return out

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
        members = getattr(self, "members_", None) or [self.model_]
        if len(members) == 1:
            return self._from_scaled(self._module_forecast(members[0], scaled))
        outs = [self._module_forecast(m, scaled).astype(np.float64) for m in members]
        return self._from_scaled(np.mean(outs, axis=0))

    # -- persistence -------------------------------------------------------------------------
    def _state_to_save(self) -> dict:
        state = super()._state_to_save()
        state["model_"] = dict(self.model_.state_dict())
        members = state.pop("members_", None) or [self.model_]
        state["members_"] = [dict(m.state_dict()) for m in members[1:]]  # member 0: model_
        laplace = state.pop("laplace_", None)
        state["laplace_"] = None if laplace is None else [
            [_laplace_state(la) for la in member] for member in laplace]
        scaler = state.pop("scaler_")
        state["scaler_"] = None if scaler is None else {
            "mean": scaler.mean_, "scale": scaler.scale_, "var": scaler.var_,
            "n": int(np.max(scaler.n_samples_seen_))}
        return state

    def _restore_state(self, state: dict) -> None:
        state = dict(state)
        weights = state.pop("model_")
        extra_members = state.pop("members_", [])
        laplace = state.pop("laplace_", None)
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
        members = []
        for k, member_weights in enumerate([weights] + list(extra_members)):
            module = self._build_module(k)
            module.load_state_dict(member_weights)
            module.eval()
            module.requires_grad_(False)
            members.append(module)
        self.model_ = members[0]
        self.members_ = members
        self.laplace_ = None if laplace is None else [
            [_restore_laplace(self._head_network(module).head, s) for s in member]
            for module, member in zip(members, laplace, strict=True)]



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
        methods then raise a ValueError naming this parameter. See the module docstring.
    uncertainty_data : {"train", "validation"}
        Windows the Laplace's curvature and its evidence-tuned prior precision and noise are
        fitted on (post hoc, after training).
    device : str
        "cpu", "cuda" or "auto".
    random_state : int or None
        Seed of initialisation, shuffling and dropout.
    verbose : int
        Show a progress bar on a terminal when > 0.

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

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.forecast import DirectForecaster
    >>> y = np.sin(np.arange(300) / 5.0)[:, None].repeat(2, axis=1)
    >>> model = DirectForecaster(lookback=24, horizon=6, epochs=2, validation_fraction=0)
    >>> model.fit(y).predict().shape
    (6, 2)

    With a predictive distribution (a last-layer Laplace), intervals in sktime's layout:

    >>> model = DirectForecaster(lookback=24, horizon=6, epochs=2, validation_fraction=0,
    ...                          uncertainty="laplace").fit(y)
    >>> model.predict_interval(coverage=0.9).shape
    (6, 4)
    """

    def __init__(self, lookback: int = 96, horizon: int = 96, *, backbone: str = "itransformer",
                 backbone_params: dict | None = None, epochs: int = 10, patience: int | None = 3,
                 lr: float = 1e-4, batch_size: int = 32, lr_schedule: str | None = "halve",
                 scale: bool = True, validation_fraction: float | None = 0.1,
                 n_ensemble: int = 1, uncertainty: str | None = None,
                 uncertainty_data: str = "train",
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
        self.n_ensemble = n_ensemble
        self.uncertainty = uncertainty
        self.uncertainty_data = uncertainty_data
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
                             **self._backbone_kwargs())

    def _train_module(self, train_values: np.ndarray, val_values: np.ndarray | None) -> None:
        train_set, val_set = self._datasets(train_values, val_values, self.horizon)
        members, seconds = [], []
        for k in range(self._n_members()):
            seed = self._member_seed(k)
            seed_everything(seed)
            module = self._build_module(k)
            result = self._run_train(module, train_set, val_set, loss_fn=mse_loss,
                                     val_fn=window_metrics, epochs=self.epochs, lr=self.lr,
                                     patience=self.patience, random_state=seed)
            module.eval()
            module.requires_grad_(False)  # fitted: inference only (and a frozen MoLA foundation)
            members.append(module)
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
