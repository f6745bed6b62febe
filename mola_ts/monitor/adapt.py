"""Adapting a fitted residual monitor to a new operating mode from a short stretch of its data.

A plant that changes mode (product grade, throughput) moves every setpoint and changes its
dynamics; a monitor fitted in the old mode floods alarms in the new one. Retraining from scratch
needs weeks of data: 2, 8 or 24 hours (40, 160, 480 samples) are too few for a network and for
empirical 1 % limits. :func:`adapt_residual_monitor` (``ResidualMonitor.adapt``) keeps what
transfers and re-learns the rest from the new data ``X``:

1. **standardisation**: every variable is centred on its mean in ``X`` (setpoints move with the
   mode; the source means would leave the new data many standard deviations off). Its scale
   stays the source's (``scale="source"``, default) or is the standard deviation in ``X``
   (``"new"``): a few hours of a slowly wandering variable show only part of its spread, and
   the trunk's couplings were learnt in the source units, so the source scale transfers better
   (measured on validation data, docs/how-to/mode-adaptation.md);
2. **predictor**: the new mode's LoRA-MoE expert is trained on ``X`` with the shared trunk frozen
   (:meth:`~mola_ts.monitor.lora_predictor.LoRAMoEPredictor.adapt`);
3. **residual scales** (``rescale=True``): the source residual covariance ``C`` keeps its
   correlations, each variable's residual standard deviation is re-estimated from *out-of-fold*
   residuals of ``X`` (K time blocks: each block's expert is trained on the others), so
   ``C_new = D C D`` with ``D = diag(sd_new / sd_source)``; the freeze check's step scales are
   those of ``X``;
4. **limit**: ``"source"`` keeps the source limits (the statistic of whitened residuals is meant
   to have the same law in every mode); ``"parametric"`` fits a scaled chi-square ``g chi2_h``
   to the mean and variance of the new mode's out-of-fold alarm statistic and takes its
   (1 - alpha) quantile (a tail estimated from its first two moments, not from 1 % of 160
   samples).

What transfers is measured by ``mola-ts bench adapt`` (docs/how-to/mode-adaptation.md).
"""

from __future__ import annotations

import copy
import numbers
from typing import Any

import numpy as np
from scipy import stats
from sklearn.utils.validation import check_is_fitted

from ..data import check_number, time_block_folds
from .base import check_finite_scale, validate_fit_runs
from .charts import step_scale, t2_statistic
from .predictor import lag_matrix

__all__ = ["adapt_residual_monitor", "ADAPT_LIMITS", "ADAPT_SCALES"]

ADAPT_LIMITS = ("source", "parametric")
ADAPT_SCALES = ("new", "source")


def _slot(monitor, mode) -> int:
    """The router's task slot of ``mode`` (a new slot for a new label)."""
    labels = list(monitor.modes_)
    if mode is None:
        mode = f"mode{len(labels)}"
    if not isinstance(mode, (str, numbers.Integral)) or isinstance(mode, bool):
        raise TypeError(f"mode must be a str or an int label, got {mode!r}")
    mode = mode if isinstance(mode, str) else int(mode)
    if mode == labels[0]:
        raise ValueError(f"mode {mode!r} is the source mode the trunk was fitted on; call fit "
                         "to refit it")
    if mode in labels:
        return labels.index(mode)
    n_slots = monitor.predictor_.n_modes
    if len(labels) >= n_slots:
        raise ValueError(f"the predictor has {n_slots} mode slots, all taken by {labels}; fit "
                         "a new monitor to adapt to more modes")
    monitor.modes_ = labels + [mode]
    return len(labels)


def _oof_residuals(monitor, values: list[np.ndarray], mean, scale, slot: int, n_folds: int):
    """Out-of-fold residuals (standardised) and scaled steps of the new-mode runs."""
    p = int(monitor.order)
    residuals, moves = [], []
    steps = step_scale(values)
    for fold in time_block_folds([len(v) for v in values], n_folds):
        model = copy.deepcopy(monitor.predictor_)
        fit_segs = [(values[s.run][s.start:s.stop] - mean) / scale for s in fold.fit]
        model.adapt([s for s in fit_segs if len(s) > p], slot)
        for s in fold.held_out:
            start = max(0, s.start - p)
            z = (values[s.run][start:s.stop] - mean) / scale
            if len(z) <= p:
                continue
            residuals.append(z[p:] - model.predict_lagged(lag_matrix(z, p)))
            raw = values[s.run][start:s.stop]
            moves.append((raw[p:] - raw[p - 1:-1]) / steps)
    return residuals, moves, steps


def _moment_limit(scores: np.ndarray, alpha: float) -> tuple[float, dict[str, float]]:
    """(1 - alpha) quantile of the scaled chi-square ``g chi2_h`` with the scores' moments."""
    m, v = float(np.mean(scores)), float(np.var(scores, ddof=1))
    if not (m > 0 and v > 0):
        raise ValueError("the new mode's out-of-fold statistic has no spread to fit a limit to")
    g, h = v / (2 * m), 2 * m * m / v
    return float(g * stats.chi2.ppf(1 - alpha, h)), {"g": g, "h": h}


def adapt_residual_monitor(monitor, X, *, mode=None, limit: str = "source",
                           rescale: bool = True, scale: str = "source", n_folds: int = 2) -> Any:
    """Adapt a fitted ``ResidualMonitor(predictor="lora-moe")`` to a new mode in place.

    See the module doc for the steps; returns the monitor, which from then on scores the new
    mode (the source mode's standardisation and limits are replaced; its trunk and the other
    modes' experts are unchanged).
    """
    check_is_fitted(monitor)
    monitor._check_scoring_params()
    if monitor.predictor != "lora-moe":
        raise ValueError("adapt needs a monitor fitted with predictor='lora-moe' (its trunk is "
                         f"shared by modes and adapted per mode), got predictor="
                         f"{monitor.predictor!r}")
    if limit not in ADAPT_LIMITS:
        raise ValueError(f"limit must be one of {ADAPT_LIMITS}, got {limit!r}")
    if scale not in ADAPT_SCALES:
        raise ValueError(f"scale must be one of {ADAPT_SCALES}, got {scale!r}")
    if not isinstance(rescale, (bool, np.bool_)):
        raise TypeError(f"rescale must be a bool, got {rescale!r}")
    check_number(n_folds, "n_folds", min_val=2)
    runs = validate_fit_runs(X, min_rows=2, what_for="adapting a residual monitor")
    d, p = len(monitor.feature_names_), int(monitor.order)
    if len(runs.columns) != d or (runs.named and monitor.named_features_
                                  and list(runs.columns) != list(monitor.feature_names_)):
        raise ValueError(f"X has the columns {list(runs.columns)[:4]}... ({len(runs.columns)}); "
                         f"the monitor was fitted on {monitor.feature_names_[:4]}... ({d}), in "
                         "that order")
    values = runs.values
    total = sum(len(v) for v in values)
    needed = max(int(n_folds) * (p + 2), 2 * p + 4)
    if total < needed:
        raise ValueError(f"X has {total} rows; at least {needed} are needed to adapt a VAR({p}) "
                         f"predictor with {n_folds} out-of-fold blocks (n_samples={total})")
    all_rows = np.concatenate(values)
    mean = all_rows.mean(axis=0)
    spread = all_rows.std(axis=0, ddof=1) if scale == "new" else monitor.scale_.copy()
    check_finite_scale(mean, spread, runs.columns, " in the new mode's data")
    slot = _slot(monitor, mode)
    residuals, moves, steps = _oof_residuals(monitor, values, mean, spread, slot, int(n_folds))
    e = np.concatenate(residuals)
    if rescale:
        cov = np.linalg.inv(monitor.precision_)
        ratio = e.std(axis=0, ddof=1) / np.sqrt(np.diag(cov))
        ratio = np.where(ratio > 0, ratio, 1.0)
        monitor.precision_ = monitor.precision_ / np.outer(ratio, ratio)
        monitor.step_scale_ = steps
    monitor.mean_, monitor.scale_ = mean, spread
    monitor.laplace_ = None  # the Laplace mixture describes the source mode's predictors
    monitor.predictor_.adapt([(v - mean) / spread for v in values if len(v) > p], slot)
    t2 = [t2_statistic(r, 0.0, monitor.precision_) for r in residuals]  # as the monitor's
    if limit == "parametric":
        t2_all = np.concatenate(t2)
        monitor.t2_mean_ = float(np.mean(t2_all))
        monitor.t2_std_ = float(np.std(t2_all, ddof=1)) or 1.0
    smoothed = [monitor._smooth(t, monitor._initial_smooth(), np.ones(len(t), dtype=bool))[0]
                for t in t2]
    info: dict[str, Any] = {"limit": limit, "rescale": bool(rescale), "n_folds": int(n_folds),
                            "scale": scale,
                            "n_samples": total, "mode": monitor.modes_[slot], "slot": slot}
    if limit == "parametric":
        monitor.limits_ = dict(monitor.limits_)
        monitor.limits_["T2_smoothed"], info["T2_smoothed"] = _moment_limit(
            np.concatenate(smoothed), monitor.alpha)
    if monitor.freeze_check:
        frozen = [monitor._freeze(m, np.ones(d), np.ones(len(m), dtype=bool))[0] for m in moves]
        if limit == "parametric":
            monitor.limits_["freeze"], info["freeze"] = _moment_limit(
                np.concatenate(frozen), monitor.alpha)
        scores = [monitor._combine(a, b) for a, b in zip(smoothed, frozen, strict=True)]
    else:
        scores = smoothed
    monitor.oof_scores_ = np.concatenate(scores)
    if limit == "parametric":
        monitor.threshold_, info["score"] = _moment_limit(monitor.oof_scores_, monitor.alpha)
    monitor.mode_ = monitor.modes_[slot]
    monitor.calibration_ = {**monitor.calibration_, "adapted": info}
    monitor._set_training_scores(runs)
    return monitor
