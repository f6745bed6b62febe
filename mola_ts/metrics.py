"""Point, probabilistic and detection metrics.

Probabilistic metrics score a predictive distribution per point (uncertainty spec §3). Gaussian
mixtures are given as ``means`` and ``variances`` of shape ``y_true.shape + (K,)`` (or
``y_true.shape`` for one Gaussian) with optional ``weights`` (uniform by default). Every score is
per scalar point (one time step of one variate; no covariance across steps) and averaged over all
points; ``average=False`` returns the per-point values. Lower is better for every score except
coverage, which should match the nominal level.

Detection metrics follow the monitoring spec §5 (Tennessee Eastman protocol): in a test run the
fault enters after sample ``onset`` (160), i.e. samples ``onset+1 ..`` (1-based) are faulty.

- FDR (fault detection rate): share of the faulty samples that raise an alarm.
- FAR (false alarm rate): share of in-control samples that raise an alarm.
- Detection delay: 1-based index of the first alarm at or after sample ``onset + 1`` that starts
  a run of at least ``run`` consecutive alarms, minus ``onset``; in samples (x 3 min for TEP).
  A fault caught at its first faulty sample has delay 1. NaN when no such run exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from scipy.special import logsumexp, ndtr

__all__ = [
    "mse",
    "mae",
    "nll_mixture",
    "crps_mixture",
    "interval_coverage",
    "interval_width",
    "interval_score",
    "pinball_loss",
    "pit_calibration_error",
    "probabilistic_scores",
    "PredictiveDistribution",
    "fault_detection_rate",
    "false_alarm_rate",
    "detection_delay",
]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("y_true is empty")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} NaN/inf values")
    return y_true, y_pred


def mse(y_true, y_pred) -> float:
    """Mean squared error over every element (windows, steps and variates alike)."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean((y_true - y_pred) ** 2))


def mae(y_true, y_pred) -> float:
    """Mean absolute error over every element."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def _alarms(alarms) -> np.ndarray:
    arr = np.asarray(alarms)
    if arr.ndim != 1:
        raise ValueError(f"alarms must be 1-D, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("alarms must be boolean or 0/1")
        arr = arr.astype(bool)
    return arr


def fault_detection_rate(alarms, onset: int = 160) -> float:
    """Share of samples after ``onset`` (the faulty ones) that raise an alarm."""
    arr = _alarms(alarms)
    if not 0 <= onset < len(arr):
        raise ValueError(f"onset {onset} must lie inside the {len(arr)} samples")
    return float(arr[onset:].mean())


def false_alarm_rate(alarms, start: int = 0, stop: int | None = None) -> float:
    """Share of in-control samples ``alarms[start:stop]`` that raise an alarm.

    For TEP: ``false_alarm_rate(alarms_d00_te, start=160)`` (samples 161..960 of the normal
    test run) or ``false_alarm_rate(alarms_dNN_te, stop=160)`` (before a fault enters).
    """
    arr = _alarms(alarms)[start:stop]
    if arr.size == 0:
        raise ValueError(f"no samples between start={start} and stop={stop}")
    return float(arr.mean())


def detection_delay(alarms, onset: int = 160, run: int = 3) -> float:
    """Samples from the fault onset to the first alarm that starts a run of ``run`` alarms."""
    arr = _alarms(alarms)
    if run < 1:
        raise ValueError(f"run must be >= 1, got {run}")
    after = arr[onset:].astype(np.int64)
    if after.size < run:
        return float("nan")
    window_sums = np.convolve(after, np.ones(run, dtype=np.int64), mode="valid")
    hits = np.flatnonzero(window_sums == run)
    return float(hits[0] + 1) if hits.size else float("nan")


# --- probabilistic metrics (uncertainty spec §3) ---------------------------------------------


class PredictiveDistribution(Protocol):
    """What :func:`probabilistic_scores` needs from a predictive distribution (per point)."""

    def log_prob(self, y) -> np.ndarray: ...

    def crps(self, y) -> np.ndarray: ...

    def cdf(self, y) -> np.ndarray: ...

    def interval(self, coverage: float = 0.9) -> tuple[np.ndarray, np.ndarray]: ...


def _float_array(x, name: str) -> np.ndarray:
    """``x`` as a new float64 array (never a view of the caller's data), finite everywhere."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float64)
    n_bad = int(arr.size - np.isfinite(arr).sum())
    if n_bad:
        raise ValueError(f"{name} holds {n_bad} NaN/inf values")
    return arr


def _target(y_true) -> np.ndarray:
    y = _float_array(y_true, "y_true")
    if y.size == 0:
        raise ValueError("y_true is empty")
    return y


def _mixture_params(means, variances, weights=None, *, batch_shape: tuple[int, ...] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a batch of Gaussian mixtures; return means, variances, weights of one shape.

    The components lie on the last axis. When ``batch_shape`` is given, arrays of exactly that
    shape are read as one Gaussian per point (K = 1).
    """
    m = _float_array(means, "means")
    v = _float_array(variances, "variances")
    if batch_shape is not None and m.shape == tuple(batch_shape):
        m = m[..., None]
        if v.shape == tuple(batch_shape):
            v = v[..., None]
    if m.ndim == 0:
        raise ValueError("means must have a component axis (the last one), got a scalar")
    if v.shape != m.shape:
        raise ValueError(f"variances has shape {v.shape} but means has shape {m.shape}")
    if batch_shape is not None and m.shape[:-1] != tuple(batch_shape):
        raise ValueError(
            f"means has shape {m.shape}; expected y_true's shape {tuple(batch_shape)} plus a "
            "component axis"
        )
    if m.shape[-1] == 0:
        raise ValueError("means has no components (its last axis is empty)")
    n_bad = int((v <= 0).sum())
    if n_bad:
        raise ValueError(f"variances must be > 0; {n_bad} values are <= 0")
    n_comp = m.shape[-1]
    if weights is None:
        w = np.full(m.shape, 1.0 / n_comp)
    else:
        w = _float_array(weights, "weights")
        try:
            w = np.broadcast_to(w, m.shape)
        except ValueError:
            raise ValueError(
                f"weights has shape {w.shape}, which does not broadcast to the means' shape "
                f"{m.shape} (give (K,) or one weight vector per point)"
            ) from None
        if (w < 0).any():
            raise ValueError(f"weights must be >= 0; {int((w < 0).sum())} values are negative")
        total = w.sum(axis=-1)
        if not np.allclose(total, 1.0, rtol=0.0, atol=1e-6):
            worst = float(total.flat[np.argmax(np.abs(total - 1.0))])
            raise ValueError(f"weights must sum to 1 over the components; one sum is {worst}")
    return m, v, w


def _average(values: np.ndarray, average: bool):
    return float(np.mean(values)) if average else values


def nll_mixture(y_true, means, variances, weights=None, *, average: bool = True):
    """Negative log-likelihood ``-log sum_k w_k N(y; mu_k, var_k)``, per point (logsumexp).

    Parameters
    ----------
    y_true : array-like
        Observations, any shape ``S``.
    means, variances : array-like
        Component means and variances, shape ``S + (K,)`` (or ``S`` for one Gaussian).
    weights : array-like, optional
        Mixture weights, shape ``(K,)`` or ``S + (K,)``, each summing to 1 (uniform by default).
    average : bool
        Return the mean over all points (default) or the per-point array of shape ``S``.

    Examples
    --------
    >>> round(nll_mixture([0.0], [[0.0]], [[1.0]]), 4)  # -log N(0; 0, 1)
    0.9189
    """
    y = _target(y_true)
    m, v, w = _mixture_params(means, variances, weights, batch_shape=y.shape)
    with np.errstate(divide="ignore"):  # a zero weight is log 0 = -inf, which logsumexp handles
        log_w = np.log(w)
    log_comp = log_w - 0.5 * np.log(2.0 * np.pi * v) - 0.5 * (y[..., None] - m) ** 2 / v
    return _average(-logsumexp(log_comp, axis=-1), average)


def _crps_kernel(mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``A(mu, var) = E|X|`` for ``X ~ N(mu, var)``: mu (2 Phi(mu/s) - 1) + 2 s phi(mu/s)."""
    sd = np.sqrt(var)
    z = mu / sd
    return mu * (2.0 * ndtr(z) - 1.0) + 2.0 * sd * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)


def crps_mixture(y_true, means, variances, weights=None, *, average: bool = True):
    """Closed-form CRPS of a Gaussian mixture (Grimit et al. 2006), per point.

    ``CRPS = sum_i w_i A(y - mu_i, s_i^2) - 1/2 sum_ij w_i w_j A(mu_i - mu_j, s_i^2 + s_j^2)``
    with ``A(m, v) = E|N(m, v)|``. Arguments as in :func:`nll_mixture`; in the units of ``y``.

    Examples
    --------
    >>> round(crps_mixture([0.0], [[0.0]], [[1.0]]), 4)  # (sqrt(2) - 1) / sqrt(pi)
    0.2337
    """
    y = _target(y_true)
    m, v, w = _mixture_params(means, variances, weights, batch_shape=y.shape)
    spread = np.sum(w * _crps_kernel(y[..., None] - m, v), axis=-1)
    pair_w = w[..., :, None] * w[..., None, :]
    pair = _crps_kernel(m[..., :, None] - m[..., None, :], v[..., :, None] + v[..., None, :])
    return _average(spread - 0.5 * np.sum(pair_w * pair, axis=(-2, -1)), average)


def _bounds(lower, upper, shape: tuple[int, ...] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Validated interval bounds: same shape (``shape`` when given, y_true's), lower <= upper."""
    lo = _float_array(lower, "lower")
    hi = _float_array(upper, "upper")
    if hi.shape != lo.shape:
        raise ValueError(f"upper has shape {hi.shape} but lower has shape {lo.shape}")
    if shape is not None and lo.shape != shape:
        raise ValueError(f"lower and upper have shape {lo.shape} but y_true has shape {shape}")
    if lo.size == 0:
        raise ValueError("lower and upper are empty")
    n_cross = int((lo > hi).sum())
    if n_cross:
        raise ValueError(f"lower must be <= upper; {n_cross} intervals have lower > upper")
    return lo, hi


def _check_coverage(coverage, name: str = "coverage") -> float:
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float, np.floating)):
        raise TypeError(f"{name} must be a float in (0, 1), got {type(coverage).__name__}")
    if not 0.0 < float(coverage) < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {coverage}")
    return float(coverage)


def interval_coverage(y_true, lower, upper) -> float:
    """Prediction interval coverage probability (PICP): share of points inside [lower, upper]."""
    y = _target(y_true)
    lo, hi = _bounds(lower, upper, y.shape)
    return float(np.mean((y >= lo) & (y <= hi)))


def interval_width(lower, upper) -> float:
    """Mean width ``upper - lower`` of the prediction intervals (in the units of ``y``)."""
    lo, hi = _bounds(lower, upper)
    return float(np.mean(hi - lo))


def interval_score(y_true, lower, upper, coverage: float) -> float:
    """Mean interval (Winkler) score of central ``coverage`` intervals; lower is better.

    ``(u - l) + (2 / a) (l - y) 1[y < l] + (2 / a) (y - u) 1[y > u]`` with ``a = 1 - coverage``:
    the width plus a penalty for every miss, proper for the (a/2, 1 - a/2) quantiles.
    """
    y = _target(y_true)
    lo, hi = _bounds(lower, upper, y.shape)
    a = 1.0 - _check_coverage(coverage)
    score = (hi - lo) + (2.0 / a) * np.maximum(lo - y, 0.0) + (2.0 / a) * np.maximum(y - hi, 0.0)
    return float(np.mean(score))


def pinball_loss(y_true, quantiles, alphas) -> float:
    """Mean pinball (quantile) loss over points and levels.

    Parameters
    ----------
    y_true : array-like, shape S
    quantiles : array-like, shape ``S + (A,)`` (or ``S`` for a single level)
        The predicted ``alphas``-quantiles of every point.
    alphas : float or sequence of A floats in (0, 1)
    """
    y = _target(y_true)
    a = _float_array(alphas, "alphas")
    if a.ndim > 1:
        raise ValueError(f"alphas must be a float or a 1-D sequence, got shape {a.shape}")
    a = np.atleast_1d(a)
    if ((a <= 0) | (a >= 1)).any():
        raise ValueError(f"alphas must lie in (0, 1), got {a.tolist()}")
    q = _float_array(quantiles, "quantiles")
    if q.shape == y.shape and a.size == 1:
        q = q[..., None]
    if q.shape != y.shape + (a.size,):
        raise ValueError(
            f"quantiles has shape {q.shape}; expected y_true's shape {y.shape} plus {a.size} "
            "levels"
        )
    diff = y[..., None] - q
    return float(np.mean(np.maximum(a * diff, (a - 1.0) * diff)))


def pit_calibration_error(pit, *, levels=None) -> float:
    """Calibration error of probability integral transform values ``u = F(y)``.

    The mean absolute gap ``|P(u <= t) - t|`` over the levels ``t`` (default 0.01, ..., 0.99):
    0 for a calibrated forecast, whose PIT values are uniform on [0, 1]; at most 0.5.
    """
    u = _float_array(pit, "pit")
    if u.size == 0:
        raise ValueError("pit is empty")
    if ((u < 0) | (u > 1)).any():
        raise ValueError(f"pit values must lie in [0, 1]; {int(((u < 0) | (u > 1)).sum())} do not")
    t = np.linspace(0.01, 0.99, 99) if levels is None else _float_array(levels, "levels")
    if t.ndim != 1 or t.size == 0 or ((t < 0) | (t > 1)).any():
        raise ValueError(f"levels must be a non-empty 1-D sequence in [0, 1], got {t!r}")
    empirical = np.mean(u.reshape(-1)[:, None] <= t[None, :], axis=0)
    return float(np.mean(np.abs(empirical - t)))


def probabilistic_scores(y_true, distribution: PredictiveDistribution, *,
                         coverages: Sequence[float] = (0.8, 0.9, 0.95)) -> dict[str, float]:
    """Every probabilistic score of ``distribution`` (per-point predictive) against ``y_true``.

    Returns ``nll``, ``crps``, ``pit_error`` and, per coverage ``c`` (as a percentage ``P``),
    ``coverageP``, ``widthP`` and ``winklerP`` (e.g. ``coverage90``). ``distribution`` is any
    object with ``log_prob``, ``crps``, ``cdf`` and ``interval(coverage)`` per point, such as
    :class:`mola_ts.uncertainty.GaussianMixture`.
    """
    y = _target(y_true)
    scores = {
        "nll": float(-np.mean(distribution.log_prob(y))),
        "crps": float(np.mean(distribution.crps(y))),
        "pit_error": pit_calibration_error(distribution.cdf(y)),
    }
    for c in coverages:
        c = _check_coverage(c, "coverages")
        lo, hi = distribution.interval(c)
        tag = f"{100 * c:g}"
        scores[f"coverage{tag}"] = interval_coverage(y, lo, hi)
        scores[f"width{tag}"] = interval_width(lo, hi)
        scores[f"winkler{tag}"] = interval_score(y, lo, hi, c)
    return scores
