"""Control limits from out-of-fold statistics, and how many effective samples they rest on.

Every monitor's alarm limit is the (1 - alpha) quantile of its alarm statistic over samples its
model never saw: with ``limit="crossfit"`` the out-of-fold statistics of K time-block folds
(:func:`mola_ts.data.time_block_folds`) over all the normal training data. A quantile of an
autocorrelated statistic rests on fewer samples than it has: with lag-1 autocorrelation rho, n
samples carry about ``n (1 - rho) / (1 + rho)`` independent ones (the AR(1) variance-inflation
rule). An empirical (1 - alpha) quantile needs at least about ``10 / alpha`` of them to be more
than a guess; below that :func:`calibrated_limit` warns with a :class:`LimitSupportWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .charts import control_limit

__all__ = ["LimitSupportWarning", "lag1_autocorrelation", "effective_sample_size",
           "calibrated_limit", "SCORE_CEILING", "finite_scores"]

#: the finite value an overflowing statistic is clipped to (it still alarms: no limit is larger)
SCORE_CEILING = 1e300


class LimitSupportWarning(UserWarning):
    """A control limit rests on fewer effective samples than its alpha needs (10 / alpha)."""


def finite_scores(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN from overflow and +-inf replaced by +-:data:`SCORE_CEILING`.

    A statistic that overflowed float64 is an extreme sample, so it must still alarm; a finite
    ceiling keeps every score usable by ``roc_auc_score`` and plots.
    """
    values = np.asarray(values, dtype=np.float64)
    return np.nan_to_num(values, nan=SCORE_CEILING, posinf=SCORE_CEILING,
                         neginf=-SCORE_CEILING)


def lag1_autocorrelation(segments: Sequence[np.ndarray]) -> float:
    """Pooled lag-1 autocorrelation of one or several 1-D stretches (pairs never cross them)."""
    finite = [np.asarray(s, dtype=np.float64) for s in segments]
    finite = [s[np.isfinite(s)] for s in finite]
    pooled = np.concatenate(finite) if finite else np.empty(0)
    if pooled.size < 3:
        return 0.0
    mean, var = pooled.mean(), pooled.var()
    if not var > 0:
        return 0.0
    num = sum(float(np.sum((s[1:] - mean) * (s[:-1] - mean))) for s in finite if len(s) > 1)
    pairs = sum(max(len(s) - 1, 0) for s in finite)
    if pairs == 0:
        return 0.0
    return float(np.clip(num / pairs / var, -0.999, 0.999))


def effective_sample_size(segments: Sequence[np.ndarray]) -> tuple[int, float, float]:
    """``(n, rho, n_eff)``: samples, pooled lag-1 autocorrelation, ``n (1-rho)/(1+rho)``.

    A negative rho is taken as 0 (no credit for anti-correlation).
    """
    n = int(sum(np.isfinite(np.asarray(s, dtype=np.float64)).sum() for s in segments))
    rho = lag1_autocorrelation(segments)
    r = max(rho, 0.0)
    return n, rho, n * (1.0 - r) / (1.0 + r)


def calibrated_limit(segments: Sequence[np.ndarray], alpha: float, *, method: str = "empirical",
                     what: str = "the alarm statistic", warn: bool = True
                     ) -> tuple[float, dict]:
    """The (1 - alpha) quantile of the pooled ``segments`` and a report of its support.

    ``segments`` are the out-of-fold (or held-out) statistic values, one array per contiguous
    stretch. Returns ``(limit, info)`` with ``info`` = ``{"method", "alpha", "n_samples",
    "lag1_autocorrelation", "effective_samples", "needed_effective_samples"}``. Warns with a
    :class:`LimitSupportWarning` when the effective samples are fewer than ``10 / alpha``.
    """
    values = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in segments])
    limit = control_limit(values, alpha, method)
    n, rho, n_eff = effective_sample_size(segments)
    needed = 10.0 / alpha
    info = {"method": method, "alpha": float(alpha), "n_samples": n,
            "lag1_autocorrelation": rho, "effective_samples": float(n_eff),
            "needed_effective_samples": needed}
    if warn and n_eff < needed:
        warnings.warn(
            f"the limit of {what} rests on {n} out-of-fold samples with lag-1 "
            f"autocorrelation {rho:.2f}, about {n_eff:.0f} effective samples; an alpha of "
            f"{alpha:g} needs about {needed:.0f} (10 / alpha): expect its false-alarm rate on "
            "new normal data to differ from alpha (more normal data, or a larger alpha)",
            LimitSupportWarning, stacklevel=3)
    return (limit if limit > 0 else float(np.finfo(np.float64).tiny)), info
