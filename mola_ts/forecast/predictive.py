"""Probabilistic forecasts of the neural forecasters: deep-ensemble members and a last-layer
Laplace per member (uncertainty spec §1, §4).

This module owns :class:`PredictiveMixin`, the part of
:class:`~mola_ts.forecast.neural.NeuralForecaster` that turns its trained networks into a
predictive distribution: the ensemble settings (member count and seeds), the Laplace fit on the
head of every member, the Gaussian-mixture forecast and :meth:`PredictiveMixin.sub_ensemble`,
The forecasting-agnostic part (every member's own head, its Laplace, the mixture) is in
:mod:`mola_ts.uncertainty` (:meth:`~mola_ts.uncertainty.LaplaceMixture.fit_members`,
:mod:`mola_ts.uncertainty.heads`); this module only gathers the members' features and targets
in the normalised space and maps the mixture back to the data's units.

- **Ensemble** (``n_ensemble = K``): K networks trained with seeds ``random_state + 1000 k``
  (member 0 is the network a plain fit gives); for MoLA they are K adapters on the one frozen
  foundation. The point forecast is the members' mean.
- **Predictive** (``uncertainty``): every member gets **its own head**, fitted post hoc on that
  member's features as a Bayesian linear regression centred on the foundation head (its MAP,
  prior precision and one noise level per head output tuned on the evidence, uncertainty spec
  §2 and §5), and the last-layer Laplace around it (exact for a linear head); the point
  forecast is then the mean of these heads' outputs. Before, the Laplace sat on the frozen
  foundation head, the same copy in every member and never trained on the adapted features:
  every component was the same Gaussian. The heads and their posterior are
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
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..data import WindowDataset, check_number
from ..training import resolve_device
from ..uncertainty import GaussianMixture, LaplaceMixture
from .backbones import InstanceNorm
from .fitting import INFERENCE_BATCH

__all__ = ["PredictiveMixin", "UNCERTAINTY", "UNCERTAINTY_DATA", "MEMBER_SEED_STRIDE"]

#: values of the ``uncertainty`` parameter: no predictive, fitted noise only, last-layer Laplace
UNCERTAINTY = (None, "noise", "laplace")
#: windows the Laplace (curvature and evidence-tuned noise) is fitted on
UNCERTAINTY_DATA = ("train", "validation")
#: seed offset between ensemble members
MEMBER_SEED_STRIDE = 1000
#: a window spread at or below this (the normalisation's floor is sqrt(InstanceNorm.eps)) marks
#: a variate constant over the lookback
CONSTANT_STD = 2.0 * float(np.sqrt(InstanceNorm.eps))
#: multipliers of the evidence's prior precision tried on the validation windows (the heads'
#: pull towards the foundation head; the largest keeps them almost at it)
PRIOR_SCALES = (1.0, 10.0, 100.0, 1e3, 1e4, 1e6)


class PredictiveMixin:
    """Ensemble members and their last-layer Laplace approximations (see the module docstring).

    Mixed into :class:`~mola_ts.forecast.neural.NeuralForecaster`, whose fit sets ``members_``
    (the trained networks), ``scaler_`` and ``_to_scaled``; the parameters ``n_ensemble``,
    ``uncertainty`` and ``uncertainty_data`` are optional (a forecaster without them is one
    member without a predictive distribution).
    """

    # -- ensemble and uncertainty settings ---------------------------------------------------
    def _n_members(self) -> int:
        """K, the ensemble size (``n_ensemble``; 1 for forecasters without the parameter)."""
        return check_number(getattr(self, "n_ensemble", 1), "n_ensemble", min_val=1)

    def _uncertainty(self) -> str | None:
        value = getattr(self, "uncertainty", None)
        if value not in UNCERTAINTY:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY}, got {value!r}")
        return value

    def _member_seed(self, k: int) -> int:
        """Seed of ensemble member ``k``: ``seed_ + 1000 k`` (member 0: ``seed_``, the int the
        fit drew from ``random_state``)."""
        return int(self.seed_) + MEMBER_SEED_STRIDE * k

    def _check_uncertainty_params(self) -> None:
        self._n_members()
        if self._uncertainty() is None:
            return
        data = getattr(self, "uncertainty_data", "train")
        if data not in UNCERTAINTY_DATA:
            raise ValueError(f"uncertainty_data must be one of {UNCERTAINTY_DATA}, got {data!r}")
        if getattr(self, "backbone", None) == "dlinear" and \
                getattr(self, "foundation", None) is None:
            raise ValueError(
                "uncertainty needs a backbone whose forecast is one linear head after the "
                "instance normalisation ('itransformer' or 'patch'); backbone='dlinear' "
                "sums two linear maps"
            )

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

    def _gather(self, module: nn.Module, values: np.ndarray, *, check: bool = False):
        """Member ``module``'s head features and normalised targets on the windows of
        ``values``, per head run, and the windows' spreads (what maps a normalised error back
        to the scaled data): ``(phis, targets, spreads, skipped, n_windows)``."""
        device = resolve_device(self.device)
        dataset = WindowDataset(self._to_scaled(values), self.lookback, self.horizon)
        module.to(device)
        phis: list[list[torch.Tensor]] = []
        targets: list[list[torch.Tensor]] = []
        spreads: list[torch.Tensor] = []
        skipped = 0
        for first in range(0, len(dataset), INFERENCE_BATCH):
            x, y = dataset.get_batch(np.arange(first, min(first + INFERENCE_BATCH,
                                                          len(dataset))))
            x, y = x.to(device), y.to(device)
            phi, f, out, mean, std = self._head_pass(module, x)
            batch = len(x)
            if first == 0 and check:
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
            keep = (std.reshape(batch, -1) > CONSTANT_STD).all(dim=1).cpu()
            skipped += int((~keep).sum())
            if not phis:
                phis, targets = [[] for _ in range(n)], [[] for _ in range(n)]
            for k in range(n):
                phis[k].append(phi[k * batch:(k + 1) * batch].cpu()[keep])
                targets[k].append(z[k].cpu()[keep])
            spreads.append(std.permute(0, 2, 1).cpu()[keep])  # (B, C, 1)
        return ([torch.cat(p) for p in phis], [torch.cat(t) for t in targets],
                torch.cat(spreads), skipped, len(dataset))

    def _fit_heads(self, fit_data: list, scales) -> list[list[list]]:
        """Every member's own heads (one per head run) on its gathered features, per prior
        scale: ``out[scale][member][run]``."""
        fits = [[LaplaceMixture([self._head_network(module).head], noise="per_output",
                                batch_size=INFERENCE_BATCH)
                 ._fit_one(p, t, prior_scales=scales)
                 for p, t in zip(phis, targets, strict=True)]
                for module, (phis, targets) in zip(self.members_, fit_data, strict=True)]
        return [[[run[i] for run in member] for member in fits] for i in range(len(scales))]

    def _fit_uncertainty(self, values: np.ndarray, val_values: np.ndarray | None = None) -> None:
        """Fit every member's own heads and their Laplace on the windows of ``values``; with
        ``val_values``, the prior scale (how far the heads may move from the foundation head)
        is the one of ``PRIOR_SCALES`` with the lowest validation MSE of the members' mean."""
        self.uncertainty_seconds_ = []
        fit_data, skipped, total = [], 0, 0
        for k, module in enumerate(self.members_):
            start = time.perf_counter()
            phis, targets, _, n_skipped, total = self._gather(module, values, check=k == 0)
            if k == 0:
                skipped = n_skipped
            fit_data.append((phis, targets))
            self.uncertainty_seconds_.append(time.perf_counter() - start)
        if skipped == total:
            raise ValueError(
                f"every one of the {total} windows for the Laplace fit "
                f"(uncertainty_data={getattr(self, 'uncertainty_data', 'train')!r}) has a "
                "variable that is constant over its lookback; the noise cannot be fitted")
        start = time.perf_counter()
        scales = PRIOR_SCALES if val_values is not None else (1.0,)
        val = None if val_values is None else [self._gather(m, val_values)[:3]
                                               for m in self.members_]
        best = None
        self.head_validation_mse_ = {}
        for scale, heads in zip(scales, self._fit_heads(fit_data, scales), strict=True):
            if val is None:
                best = (0.0, scale, heads)
                break
            errors = []  # of the members' mean, in the scaled data's units
            spread = val[0][2].double().numpy()
            for j in range(len(heads[0])):
                mean = sum(heads[k][j].predict(val[k][0][j]) for k in range(len(heads)))
                errors.append((((mean / len(heads) - val[0][1][j].double().numpy()) * spread)
                               ** 2).mean())
            mse = float(np.mean(errors))
            self.head_validation_mse_[f"{scale:g}"] = mse
            if best is None or mse < best[0]:
                best = (mse, scale, heads)
        _, self.head_prior_scale_, self.laplace_ = best
        share = (time.perf_counter() - start) / len(self.members_)
        self.uncertainty_seconds_ = [s + share for s in self.uncertainty_seconds_]
        self.uncertainty_skipped_windows_ = skipped
        if skipped:
            warnings.warn(
                f"{skipped} of {total} windows were left out of the Laplace and noise fit: "
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
        k = len(self.members_)
        shape = (n_win, self.horizon, channels, k)
        means, variances, noises = np.empty(shape), np.empty(shape), np.empty(shape)
        # one mixture per head run (segment): component k is member k's own head
        mixtures = [LaplaceMixture.from_components(list(parts))
                    for parts in zip(*self.laplace_, strict=True)]
        for module in self.members_:
            module.to(device)
        for first in range(0, n_win, INFERENCE_BATCH):
            rows = slice(first, min(first + INFERENCE_BATCH, n_win))
            x = torch.from_numpy(np.ascontiguousarray(scaled[rows])).to(device)
            passes = [self._head_pass(module, x) for module in self.members_]
            batch = len(x)
            parts = [mix.predict_members([p[0][j * batch:(j + 1) * batch] for p in passes])
                     for j, mix in enumerate(mixtures)]  # each (B, C, S, K), normalised space
            mu = np.concatenate([d.means for d in parts], axis=2)  # (B, C, n S, K)
            noise = np.concatenate([d.noise_variances for d in parts], axis=2)
            var = np.concatenate([d.variances for d in parts], axis=2) if mode == "laplace" \
                else noise
            # the affine map back to the data's units: window statistics, then the scaler
            # (the instance normalisation reads the window alone: the same for every member)
            _, _, _, mean, std = passes[0]
            a = std.cpu().numpy().astype(np.float64)  # (B, 1, C)
            b = mean.cpu().numpy().astype(np.float64)
            if self.scaler_ is not None:
                a, b = a * self.scaler_.scale_, b * self.scaler_.scale_ + self.scaler_.mean_
            a, b = a[..., None], b[..., None]  # (B, 1, C, 1)
            means[rows] = mu.transpose(0, 2, 1, 3) * a + b
            variances[rows] = var.transpose(0, 2, 1, 3) * a ** 2
            noises[rows] = noise.transpose(0, 2, 1, 3) * a ** 2
        return GaussianMixture(means, variances, noise_variances=noises)

    def _own_heads(self) -> bool:
        """Whether the members' Laplace approximations sit on heads of their own (refitted),
        whose outputs are then the point forecast."""
        laplace = getattr(self, "laplace_", None)
        return bool(laplace) and getattr(laplace[0][0], "prior_mean", None) is not None

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
        >>> y = np.sin(np.arange(120) / 5.0)[:, None]
        >>> tiny = {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 8}
        >>> model = DirectForecaster(12, 4, backbone_params=tiny, epochs=1, n_ensemble=2,
        ...                          uncertainty="laplace").fit(y)
        >>> single = model.sub_ensemble(1, uncertainty="noise")
        >>> single.n_ensemble, single.uncertainty, single.predict_distribution().n_components
        (1, 'noise', 1)
        """
        check_is_fitted(self, "members_")
        n = len(self.members_) if n_members is None else check_number(n_members, "n_members",
                                                                      min_val=1)
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
        # the conformal correction was calibrated for all members: a subset is recalibrated
        # with calibrate(y_val)
        out.conformal_ = None
        out._set_timings()
        return out
