"""The residual monitor's probability of fault from a mixture of last-layer Laplace posteriors.

Every one-step predictor of :class:`~mola_ts.monitor.ResidualMonitor` is a linear *head* on
features of the lags ``z_t``: the ridge VAR's head is its coefficient matrix on ``z_t`` itself,
the MLP's and the LoRA-MoE trunk's is ``[A | W2]`` on ``[z_t, tanh(W1 z_t + b1)]`` (the adapters
merged for the active mode). The monitor's Laplace path (uncertainty spec §1-§2, the code the
forecasters use, :mod:`mola_ts.uncertainty`):

1. **members**: ``K = n_ensemble`` predictors. Member 0 is the monitor's own predictor; member
   ``k >= 1`` is a predictor of the same kind trained on a moving-block bootstrap of the training
   runs (blocks of :data:`BLOCK` samples drawn with replacement per run, seed ``seed_ + k``; the
   neural predictors also start from seed ``seed_ + 1000 k``). Each member trains its own head:
   a ridge VAR refitted on resampled data differs, a seed alone would not change it.
2. **whitening**: the targets are the standardised samples times the Cholesky factor ``L`` of
   the residual precision ``S^-1`` (``precision_``), so the outputs' noises are uncorrelated and
   the last-layer Laplace's independent per-output noise fits them; the head is whitened too.
3. **posterior**: per member, the last-layer Laplace of its own trained head on its own training
   rows (:func:`~mola_ts.uncertainty.heads.fit_head_posterior` with ``refit=False``: the
   Kronecker-factored GGN, exact for a linear head, prior precision and one noise level per
   output tuned on the member's evidence).
4. **predictive**: the uniform mixture over members of their linearised Gaussians, a
   :class:`~mola_ts.uncertainty.GaussianMixture` per sample and (whitened) variable.
5. **fault probability**: ``P(x | N)`` is that predictive's joint density (each component a
   product over the whitened variables). The fault law, which no normal data can teach, is the
   *broadened predictive*: the same mixture with every variance times ``FAULT_SCALE ** 2`` (a
   fault makes the next sample less predictable, in any direction). The fault state is a
   two-state Markov chain whose stationary share is the spec's prior ``P(F) = alpha``
   (monitoring spec §4) and which stays in fault from one sample to the next with probability
   ``FAULT_MEMORY``; the probability of fault of sample t is the filtered posterior
   ``P(F_t | x_1..t)`` (``FAULT_MEMORY = alpha`` would make the samples independent: Bayes'
   rule on each sample alone). Both settings were chosen on a validation set of simulated TEP
   runs (``mola-ts bench fault-probability``), not on its test set.
6. **credible band**: the same filter run on :data:`N_DRAWS` heads drawn from the Laplace
   mixture (each draw a plug-in Gaussian with the member's noise); the band is the central
   ``coverage`` range of the draws' probabilities (widened to hold the point value).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
import torch
from scipy.special import expit, logsumexp
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..data import check_number
from ..metrics import _check_coverage
from ..uncertainty import GaussianMixture, LaplaceMixture, fit_head_posterior
from ..uncertainty.heads import laplace_state, restore_laplace
from .lora_predictor import ADAPTER_RANK, N_MODES, LoRAMoEPredictor
from .predictor import MLPPredictor, RidgeVAR, _design, lag_matrix, make_predictor

__all__ = ["FAULT_METHODS", "DEFAULT_FAULT_METHOD", "FAULT_SCALE", "FAULT_MEMORY", "N_DRAWS",
           "BLOCK", "default_members", "fit_laplace_members", "LaplaceFault", "filter_fault",
           "LaplaceFaultMixin"]

#: the methods of ``ResidualMonitor.predict_fault_probability``
FAULT_METHODS = ("laplace", "tail")
#: the default method: the better calibrated one on the validation set of
#: ``mola-ts bench fault-probability`` (see docs/concepts/uncertainty.md)
DEFAULT_FAULT_METHOD = "laplace"
#: standard-deviation factor of the broadened predictive, the fault law (chosen on validation)
FAULT_SCALE = 1.05
#: probability that a fault present at one sample is still present at the next (validation)
FAULT_MEMORY = 0.9
#: heads drawn from the Laplace mixture for the credible band
N_DRAWS = 64
#: block length (samples, 5 h at 3-minute sampling) of the members' moving-block bootstrap
BLOCK = 100


def default_members(predictor: str, n_ensemble) -> int:
    """Members K: ``n_ensemble``, or (None) 5 for the ridge VAR (a refit costs milliseconds)
    and 1 for the neural predictors (each member is a full training: ask for more)."""
    if n_ensemble is None:
        return 5 if predictor == "var" else 1
    return int(n_ensemble)


def new_predictor(kind: str, order: int, ridge: float, hidden: int, seed: int):
    """A fresh one-step predictor of ``kind`` (``"var"``, ``"mlp"`` or ``"lora-moe"``)."""
    if kind == "lora-moe":
        return LoRAMoEPredictor(order, ridge, hidden, random_state=seed)
    return make_predictor(kind, order, ridge, hidden=hidden, random_state=seed)


def restore_predictor(kind: str, state: dict, order: int, ridge: float, hidden: int):
    """A predictor of ``kind`` from its ``get_state()``."""
    if kind == "var":
        return RidgeVAR.from_state(state, order, ridge)
    if kind == "lora-moe":
        return LoRAMoEPredictor.from_state(state, order, ridge, hidden, n_modes=N_MODES,
                                           rank=ADAPTER_RANK)
    return MLPPredictor.from_state(state, order, ridge, hidden)


def _head(predictor) -> tuple[np.ndarray, np.ndarray]:
    """The predictor's linear head ``(W (m, d_f), b (m,))``: ``x_hat = phi W^T + b``."""
    if hasattr(predictor, "w2_"):
        return np.concatenate([predictor.coef_, predictor.w2_]).T, predictor.intercept_
    return predictor.coef_.T, predictor.intercept_


def _features(predictor, lagged: np.ndarray) -> np.ndarray:
    """The head's input ``phi`` for lag rows (n, p d)."""
    if hasattr(predictor, "w2_"):
        hidden = np.tanh(np.einsum("ni,ij->nj", lagged, predictor.w1_) + predictor.b1_)
        return np.concatenate([lagged, hidden], axis=1)
    return lagged


def _bootstrap(segments: list[np.ndarray], order: int, rng: np.random.Generator
               ) -> list[np.ndarray]:
    """A moving-block bootstrap of each segment: as many samples, blocks of ``BLOCK``."""
    out = []
    for seg in segments:
        n = len(seg)
        if n <= BLOCK + order:
            out.append(seg)
            continue
        starts = rng.integers(0, n - BLOCK - order + 1, size=int(np.ceil(n / BLOCK)))
        out.extend(seg[s:s + BLOCK + order] for s in starts)
    return out


def fit_laplace_members(monitor, segments: list[np.ndarray], n_members: int) -> dict:
    """Fit the K members' whitened last-layer Laplace posteriors (the module docstring).

    ``segments`` are the training runs standardised with the monitor's ``mean_``/``scale_``;
    the monitor's ``predictor_`` and ``precision_`` must be fitted. Returns the storable state.
    """
    p = int(monitor.order)
    whiten = np.linalg.cholesky(monitor.precision_)
    members = []
    for k in range(n_members):
        if k == 0:
            predictor, rows = monitor.predictor_, segments
        else:
            rows = _bootstrap(segments, p, np.random.default_rng(int(monitor.seed_) + k))
            predictor = new_predictor(monitor.predictor, p, float(monitor.ridge),
                                      int(monitor.hidden_size), int(monitor.seed_) + 1000 * k)
            predictor.fit(rows)
        lagged, y = _design(rows, p)
        phi = _features(predictor, lagged)
        weight, bias = _head(predictor)
        head = nn.Linear(phi.shape[1], y.shape[1], dtype=torch.float64)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(whiten.T @ weight))
            head.bias.copy_(torch.from_numpy(whiten.T @ bias))
        la = fit_head_posterior(torch.from_numpy(phi), torch.from_numpy(y @ whiten), head,
                                refit=False, noise="per_output")
        members.append({"predictor": None if k == 0 else predictor.get_state(),
                        "laplace": laplace_state(la)})
    return {"whiten": whiten, "members": members}


def filter_fault(log_lr: np.ndarray, prior: float, memory: float) -> np.ndarray:
    """Filtered ``P(F_t | x_1..t)`` of a two-state chain from per-sample log likelihood
    ratios ``log p(x|F) - log p(x|N)`` (last axis: time). The chain stays in fault with
    probability ``memory`` and its stationary share of fault is ``prior``."""
    memory = max(float(memory), float(prior))
    enter = prior * (1.0 - memory) / (1.0 - prior)  # P(F_t | N_{t-1})
    out = np.empty_like(log_lr)
    p = np.full(log_lr.shape[:-1], float(prior))  # the first sample's prior: stationary
    q = 1.0 - p
    for t in range(log_lr.shape[-1]):
        if t:
            p, q = enter * q + memory * p, (1.0 - enter) * q + (1.0 - memory) * p
        logit = np.log(p) - np.log(q) + log_lr[..., t]
        p, q = expit(logit), expit(-logit)
        out[..., t] = p
        p, q = np.maximum(p, 1e-300), np.maximum(q, 1e-300)
    return out


_FLOAT64 = nn.Linear(1, 1, dtype=torch.float64)
_CHUNK = 2048  # rows per block of the band's draws


class LaplaceFault:
    """The fitted Laplace path of a residual monitor: predictive mixture and fault probability."""

    def __init__(self, state: dict, monitor):
        self.whiten = np.asarray(state["whiten"], dtype=np.float64)
        self.components, self.predictors = [], []
        for k, member in enumerate(state["members"]):
            # the head is rebuilt from the stored weights; this one only sets float64
            self.components.append(restore_laplace(_FLOAT64, member["laplace"]))
            self.predictors.append(monitor.predictor_ if k == 0 else restore_predictor(
                monitor.predictor, member["predictor"], int(monitor.order),
                float(monitor.ridge), int(monitor.hidden_size)))

    def _member_features(self, z: np.ndarray, order: int) -> list[np.ndarray]:
        lagged = lag_matrix(z, order)
        return [_features(pr, lagged) for pr in self.predictors]

    def predictive(self, z: np.ndarray, order: int) -> GaussianMixture:
        """The whitened predictive mixture of rows ``order ..`` of standardised ``z``."""
        features = [torch.from_numpy(f) for f in self._member_features(z, order)]
        return LaplaceMixture.from_components(self.components).predict_members(features)

    def log_ratios(self, z: np.ndarray, order: int, scale: float, n_draws: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row ``order ..``: predictive NLL (whitened), ``log p(x|F) - log p(x|N)`` under
        the Laplace predictive, and the same ratio under ``n_draws`` heads drawn from the
        mixture, shape (n_draws, rows)."""
        y = z[order:] @ self.whiten
        features = self._member_features(z, order)
        dist = LaplaceMixture.from_components(self.components).predict_members(
            [torch.from_numpy(f) for f in features])
        mu, var = dist.means, dist.variances  # (rows, m, K)
        r2 = (y[..., None] - mu) ** 2
        normal = -0.5 * (r2 / var + np.log(2 * np.pi * var)).sum(axis=1)  # (rows, K)
        fault = -0.5 * (r2 / (scale**2 * var) + np.log(2 * np.pi * scale**2 * var)).sum(axis=1)
        log_k = np.log(len(self.components))
        log_normal = logsumexp(normal, axis=1) - log_k
        log_lr = logsumexp(fault, axis=1) - log_k - log_normal
        rng = np.random.default_rng(seed)
        draws = []
        shares = np.diff(np.linspace(0, n_draws, len(self.components) + 1).round().astype(int))
        for la, phi, n_k, k in zip(self.components, features, shares,
                                   range(len(self.components)), strict=True):
            if n_k == 0:
                continue
            # head k + delta: delta's rows are sqrt of the Kronecker blocks' spectrum times
            # standard normals, in the eigenbasis of the Gram matrix (one draw per row of eps)
            eps = np.sqrt(la._block_inverse_diag()) * rng.standard_normal(
                (n_k,) + la.theta_.shape)
            s2 = la._noise_sigma() ** 2
            out = np.empty((n_k, len(y)))
            for start in range(0, len(y), _CHUNK):  # (draws, rows, outputs) in bounded memory
                rows = slice(start, start + _CHUNK)
                phi1 = np.concatenate([phi[rows], np.ones((len(phi[rows]), 1))], axis=1)
                delta = np.einsum("nd,smd->snm", phi1 @ la.eigenvectors_, eps)
                r2 = (y[rows] - mu[rows, :, k] - delta) ** 2 / s2
                out[:, rows] = 0.5 * (1 - 1 / scale**2) * r2.sum(axis=2) \
                    - y.shape[1] * np.log(scale)
            draws.append(out)
        return -log_normal, log_lr, (np.concatenate(draws) if draws
                                     else np.empty((0, len(y))))


class LaplaceFaultMixin:
    """``predict_fault_probability(method=...)`` and ``predictive_distribution`` of the
    residual monitor (before :class:`~mola_ts.monitor.base.MonitorMixin` in the MRO)."""

    def _laplace(self) -> LaplaceFault:
        check_is_fitted(self)
        state = getattr(self, "laplace_", None)
        if state is None:
            raise ValueError(
                f"this {type(self).__name__} has no Laplace posterior (adapted to a new mode, "
                "or saved before the Laplace mixture existed): fit it again, or use "
                "method='tail'")
        return LaplaceFault(state, self)

    def predictive_distribution(self, X) -> GaussianMixture:
        """The Laplace mixture's predictive of every sample's variables, given its lags.

        Rows ``order ..`` of ``X`` (the first ``order`` have no lags), in the variables'
        units: component k's marginal of variable j (the whitened Gaussian mapped back
        through the residual covariance and the standardisation). Batch shape
        ``(n_samples - order, n_variables)``, K = ``n_ensemble`` components.
        """
        series = self._check_X(X, min_rows=int(self.order) + 1, what_for="a prediction")
        laplace = self._laplace()
        z = (series.values - self.mean_) / self.scale_
        dist = laplace.predictive(z, int(self.order))
        back = np.linalg.inv(laplace.whiten)  # whitened -> standardised
        mean = np.einsum("nik,ij->njk", dist.means, back) * self.scale_[:, None] \
            + self.mean_[:, None]
        square = (back ** 2)[None, :, :, None]
        scale2 = (self.scale_ ** 2)[:, None]
        var = (dist.variances[:, :, None, :] * square).sum(axis=1) * scale2
        noise = (dist.noise_variances[:, :, None, :] * square).sum(axis=1) * scale2
        return GaussianMixture(mean, var, noise_variances=np.minimum(noise, var))

    def predict_fault_probability(self, X, *, method: str | None = None, coverage: float = 0.9,
                                  prior_fault: float | None = None,
                                  tail_fraction: float | None = None,
                                  fault_scale: float = FAULT_SCALE,
                                  fault_memory: float = FAULT_MEMORY) -> pd.DataFrame:
        """Probability of fault per sample with its credible band (uncertainty spec §4).

        ``method="laplace"`` (the default, :data:`DEFAULT_FAULT_METHOD`: the better
        calibrated of the two on simulated validation data): the filtered posterior of a
        fault under the Laplace mixture's predictive (normal) and that predictive broadened
        by ``fault_scale`` (fault), a fault persisting with probability ``fault_memory``, prior
        ``prior_fault`` (default ``alpha``); the band is the central ``coverage`` range over
        heads drawn from the mixture (:mod:`mola_ts.monitor.laplace_fault`). Columns
        ``score``, ``nll`` (the sample's predictive negative log density, whitened units),
        ``log_lr`` (its log likelihood ratio fault/normal), ``fault_probability`` and
        ``fault_probability_lower`` / ``_upper``; warm-up rows get 0.

        ``method="tail"``: the generalised-Pareto tail model of the alarm statistic
        (:meth:`MonitorMixin.predict_fault_probability
        <mola_ts.monitor.base.MonitorMixin.predict_fault_probability>`, ``tail_fraction``
        there). A monitor without a Laplace posterior (``laplace_`` None: adapted, or saved
        before it existed) uses ``"tail"`` when ``method`` is None.
        """
        if method is None:
            method = DEFAULT_FAULT_METHOD if getattr(self, "laplace_", None) is not None \
                else "tail"
        if method not in FAULT_METHODS:
            raise ValueError(f"method must be one of {FAULT_METHODS}, got {method!r}")
        if method == "tail":
            out = super().predict_fault_probability(  # type: ignore[misc]
                X, coverage=coverage, prior_fault=prior_fault, tail_fraction=tail_fraction)
            out.attrs["method"] = "tail"
            return out
        if tail_fraction is not None:
            raise ValueError("tail_fraction belongs to method='tail'; the Laplace method has no "
                             "tail model")
        _check_coverage(coverage)
        prior = float(self.alpha if prior_fault is None else _check_coverage(prior_fault,
                                                                             "prior_fault"))
        check_number(fault_scale, "fault_scale", numbers.Real, min_val=1.0, max_val=1e6,
                     include_boundaries="neither")
        check_number(fault_memory, "fault_memory", numbers.Real, min_val=0.0, max_val=1.0,
                     include_boundaries="left")
        laplace = self._laplace()
        stats = self.statistics(X)
        p = int(self.order)
        z = (self._check_X(X, min_rows=1, what_for="one sample").values - self.mean_) \
            / self.scale_
        n = len(z)
        cols = {k: np.zeros(n) for k in ("nll", "log_lr", "fault_probability",
                                         "fault_probability_lower", "fault_probability_upper")}
        if n > p:
            nll, log_lr, draws = laplace.log_ratios(z, p, float(fault_scale), N_DRAWS,
                                                    int(self.seed_))
            point = filter_fault(log_lr, prior, float(fault_memory))
            sampled = filter_fault(draws, prior, float(fault_memory))
            a = (1.0 - coverage) / 2.0
            lower, upper = np.quantile(sampled, [a, 1.0 - a], axis=0)
            cols["nll"][p:], cols["log_lr"][p:] = nll, log_lr
            cols["fault_probability"][p:] = point
            cols["fault_probability_lower"][p:] = np.minimum(lower, point)
            cols["fault_probability_upper"][p:] = np.maximum(upper, point)
        out = pd.DataFrame({"score": stats["score"].to_numpy(), **cols}, index=stats.index)
        out.attrs["method"] = "laplace"
        return out
