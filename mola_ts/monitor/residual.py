"""The residual (innovations) monitor: T^2 of one-step prediction errors, smoothed, one limit.

Normal operation of a plant wanders (monitoring spec §7); a one-step predictor follows the
wander, so its residuals ``e_t = x_t - x_hat_t`` stay in control while the level drifts, and a
fault shows as residuals that are larger, shifted or correlated differently. Pipeline:

1. standardise every variable with the training mean and std;
2. fit a one-step predictor (ridge VAR(p) by default, :mod:`.predictor`);
3. ``T2_t = e_t^T S^-1 e_t`` with ``S`` the covariance of *out-of-fold* residuals (K time-block
   folds, :func:`mola_ts.data.time_block_folds`: in-sample residuals are too small);
4. smooth T^2 over time (an EWMA, a CUSUM, or none) into the alarm statistic ``score``;
5. one limit: the (1 - alpha) quantile of the out-of-fold ``score`` over all the normal data
   (:func:`.calibration.calibrated_limit`), or the F-distribution limit of an unsmoothed T^2.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..data import check_number, time_block_folds
from ..persistence import SaveLoadMixin
from ..training import resolve_seed
from . import laplace_fault as lf
from .base import MonitorMixin, check_finite_scale, check_random_state, validate_fit_runs
from .calibration import calibrated_limit, finite_scores
from .charts import cusum_upper, empirical_limit, ewma, freeze_statistic, step_scale
from .laplace_fault import LaplaceFaultMixin
from .predictor import PREDICTORS, lag_matrix
from .stream import MonitorStream

__all__ = ["ResidualMonitor"]

_SMOOTHING = ("ewma", "cusum", "none")
_LIMITS = ("crossfit", "parametric")


class ResidualMonitor(LaplaceFaultMixin, MonitorMixin, SaveLoadMixin, BaseEstimator):
    """Innovations monitor: T^2 of one-step prediction residuals, smoothed, cross-fitted limit.

    Sign convention (like pyod): :meth:`score_samples` is the smoothed residual T^2 (higher =
    more abnormal); :meth:`decision_function` is ``score - threshold_`` and :meth:`predict` is 1
    (alarm) where it is positive. The first ``order`` samples of a run have no lag history:
    they are *warm-up* rows (``warmup`` column 1), scored 0 and never alarmed (the smoothing
    starts from its in-control value after them). Every score is finite: a statistic that
    overflows float64 is clipped to 1e300 and alarms.

    Parameters
    ----------
    predictor : {"var", "mlp", "lora-moe"}, default="var"
        One-step predictor: a ridge vector autoregression, the VAR plus a small tanh network
        (:class:`~mola_ts.monitor.predictor.MLPPredictor`, trained by L-BFGS), or that network
        as a trunk of the shared LoRA-MoE layers with one expert per operating mode
        (:class:`~mola_ts.monitor.lora_predictor.LoRAMoEPredictor`), which :meth:`adapt`
        fits to a new mode.
    order : int, default=1
        Lags p of the predictor.
    ridge : float, default=1.0
        Ridge penalty of the predictor's lag coefficients (standardised variables).
    hidden_size : int, default=32
        Hidden units of the ``"mlp"`` predictor.
    smoothing : {"ewma", "cusum", "none"}, default="ewma"
        ``"ewma"``: ``s_t = lambda T2_t + (1 - lambda) s_{t-1}``, started at the in-control mean
        of T^2; ``"cusum"``: ``s_t = max(0, s_{t-1} + (T2_t - m) / sd - cusum_k)`` with the
        in-control mean m and standard deviation sd of T^2; ``"none"``: ``s_t = T2_t``.
    ewma_lambda : float, default=0.2
        EWMA weight of the newest T^2, in (0, 1]: about ``2 / lambda - 1`` samples of memory.
    cusum_k : float, default=0.5
        CUSUM allowance in in-control standard deviations of T^2.
    freeze_check : bool, default=True
        Also watch for *frozen* variables (a stuck valve or sensor: its value stops moving, so
        the predictor, driven by the other variables, keeps its residual going, and T^2 misses
        it). Per variable j, ``v_j = EWMA(m_j^2)`` of its step ``m_j = x_t - x_{t-1}`` over its
        root-mean-square training step (started at 1), and ``freeze = max_j -log v_j``. The
        alarm statistic is then ``score = max(T2_smoothed / L_T2, freeze / L_freeze)`` with
        ``L`` the (1 - alpha) out-of-fold quantiles of each, and its own limit is calibrated
        out of fold like any score (one statistic, one limit).
    freeze_lambda : float, default=0.3
        EWMA weight of the freeze check, in (0, 1].
    limit : {"crossfit", "parametric"}, default="crossfit"
        ``"crossfit"``: the (1 - alpha) quantile of the out-of-fold smoothed statistic over all
        the normal data; ``"parametric"`` (only with ``smoothing="none"``): the F-distribution
        limit of a T^2 of new observations, ``d (n-1)(n+1) / (n (n-d)) F_{1-alpha}(d, n-d)``.
    n_folds : int, default=2
        Time blocks K of the cross-fitting (each fold model is fitted on the other K - 1).
    alpha : float, default=0.01
        Target false-alarm rate of the limit.
    random_state : int, numpy RandomState or Generator, or None, default=0
        Seeds the MLP predictor and the ensemble's bootstrap: one int seed (``seed_``) is
        drawn from it at fit; only an int makes two fits give the same model.
    n_ensemble : int or None, default=None
        Members K of the Laplace mixture behind ``predict_fault_probability(method="laplace")``
        (:mod:`.laplace_fault`): the predictor and K - 1 more trained on block-bootstrap
        resamples. None: 5 with ``predictor="var"`` (milliseconds each), 1 with the neural
        predictors (each member is a full training).

    Attributes
    ----------
    mean_, scale_ : ndarray of shape (n_variables,)
        Standardisation of the final model.
    predictor_ : RidgeVAR or MLPPredictor
        The final predictor, fitted on all the training data.
    precision_ : ndarray of shape (n_variables, n_variables)
        Inverse covariance of the out-of-fold residuals (standardised units).
    t2_mean_, t2_std_ : float
        In-control mean and standard deviation of the out-of-fold residual T^2.
    threshold_ : float
        The alarm limit of ``score``.
    calibration_ : dict
        How the limit was set: method, number of folds, out-of-fold samples, their lag-1
        autocorrelation and effective sample count (see :mod:`.calibration`).
    oof_scores_ : ndarray
        The out-of-fold smoothed statistic behind the limit (for calibration on top).
    seed_ : int
        The seed drawn from ``random_state`` at fit.
    laplace_ : dict or None
        The Laplace mixture's whitening and members (:mod:`.laplace_fault`); None after
        :meth:`adapt` and absent in files saved before it existed (then ``"tail"`` is used).
    decision_scores_, labels_ : ndarray of shape (n_training_samples,)
        pyod's attributes: ``score_samples`` and alarms (1) of the training runs (in-sample,
        concatenated; see :class:`~mola_ts.monitor.base.MonitorMixin`).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from mola_ts.monitor import ResidualMonitor
    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros((3000, 4))
    >>> for t in range(1, 3000):
    ...     x[t] = 0.8 * x[t - 1] + rng.normal(size=4)
    >>> monitor = ResidualMonitor().fit(x[:2000])
    >>> shifted = x[2000:].copy()
    >>> shifted[500:, 0] += 10.0                     # a step fault in variable 0
    >>> alarms = monitor.predict(shifted)
    >>> bool(alarms[:500].mean() < 0.05), bool(alarms[500:503].all())
    (True, True)
    """

    _scoring_params = ("predictor", "order", "ridge", "hidden_size", "smoothing", "ewma_lambda",
                       "cusum_k", "freeze_check", "freeze_lambda", "limit", "n_folds", "alpha",
                       "random_state", "n_ensemble")

    def __init__(self, predictor: str = "var", order: int = 1, ridge: float = 1.0,
                 hidden_size: int = 32, smoothing: str = "ewma", ewma_lambda: float = 0.2,
                 cusum_k: float = 0.5, freeze_check: bool = True, freeze_lambda: float = 0.3,
                 limit: str = "crossfit", n_folds: int = 2, alpha: float = 0.01,
                 random_state: int | None = 0, n_ensemble: int | None = None):
        self.predictor = predictor
        self.order = order
        self.ridge = ridge
        self.hidden_size = hidden_size
        self.smoothing = smoothing
        self.ewma_lambda = ewma_lambda
        self.cusum_k = cusum_k
        self.freeze_check = freeze_check
        self.freeze_lambda, self.limit, self.n_folds = freeze_lambda, limit, n_folds
        self.alpha = alpha
        self.random_state = random_state
        self.n_ensemble = n_ensemble

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        if self.predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {self.predictor!r}")
        if self.smoothing not in _SMOOTHING:
            raise ValueError(f"smoothing must be one of {_SMOOTHING}, got {self.smoothing!r}")
        if self.limit not in _LIMITS:
            raise ValueError(f"limit must be one of {_LIMITS}, got {self.limit!r}")
        if self.limit == "parametric" and (self.smoothing != "none" or self.freeze_check):
            raise ValueError("limit='parametric' (the F-distribution limit of T^2) needs "
                             f"smoothing='none' and freeze_check=False, got "
                             f"smoothing={self.smoothing!r}, freeze_check={self.freeze_check!r}; "
                             "use limit='crossfit' for a smoothed or combined statistic")
        big = float(np.finfo(np.float64).max)  # finite: an infinite penalty or allowance
        check_number(self.order, "order", min_val=1)
        check_number(self.hidden_size, "hidden_size", min_val=1)
        check_number(self.n_folds, "n_folds", min_val=2)
        check_number(self.ridge, "ridge", numbers.Real, min_val=0.0, max_val=big)
        check_number(self.ewma_lambda, "ewma_lambda", numbers.Real, min_val=0.0, max_val=1.0,
                     include_boundaries="right")
        check_number(self.cusum_k, "cusum_k", numbers.Real, min_val=0.0, max_val=big)
        check_number(self.freeze_lambda, "freeze_lambda", numbers.Real, min_val=0.0,
                     max_val=1.0, include_boundaries="right")
        if not isinstance(self.freeze_check, (bool, np.bool_)):
            raise TypeError(f"freeze_check must be a bool, got {self.freeze_check!r}")
        check_number(self.alpha, "alpha", numbers.Real, min_val=0.0, max_val=0.5,
                     include_boundaries="neither")
        check_random_state(self.random_state)
        check_number(1 if self.n_ensemble is None else self.n_ensemble, "n_ensemble", min_val=1)

    # ------------------------------------------------------------------ fit
    def _new_predictor(self):
        return lf.new_predictor(self.predictor, int(self.order), float(self.ridge),
                                int(self.hidden_size), self.seed_)

    def fit(self, X, y=None) -> ResidualMonitor:
        """Fit on in-control data ``X`` (one run, or a list of runs with the same columns).

        Lags never cross the boundary between runs given as a list.
        """
        self._check_params()
        self.seed_ = resolve_seed(self.random_state)
        p, k = int(self.order), int(self.n_folds)
        runs = validate_fit_runs(X, min_rows=2, what_for="a residual monitor")
        values = runs.values
        d = len(runs.columns)
        total = sum(len(v) for v in values)
        needed = max(k * (p + 2), 2 * (d + 1) + k * p, 20)
        if total < needed:
            raise ValueError(f"X has {total} rows; at least {needed} are needed ({k} cross-fit "
                             f"folds of a VAR({p}) and a residual covariance of {d} variables) "
                             f"(n_samples={total})")
        folds = time_block_folds([len(v) for v in values], k)
        # out-of-fold residuals, each fold model standardised and fitted on the other folds only
        oof_raw: list[list[np.ndarray]] = []  # per fold, per held-out segment: raw residuals
        oof_moves: list[np.ndarray] = []  # per held-out segment: steps in fold step scales
        for fold in folds:
            fit_rows = np.concatenate([values[s.run][s.start:s.stop] for s in fold.fit])
            mean, scale = fit_rows.mean(axis=0), fit_rows.std(axis=0, ddof=1)
            check_finite_scale(mean, scale, runs.columns, " in a cross-fit fold")
            model = self._new_predictor().fit(
                [(values[s.run][s.start:s.stop] - mean) / scale for s in fold.fit])
            fold_steps = step_scale([values[s.run][s.start:s.stop] for s in fold.fit])
            parts = []
            for s in fold.held_out:
                run = (values[s.run] - mean) / scale
                start = max(0, s.start - p)
                z = run[start:s.stop]
                if len(z) <= p:
                    continue
                # rows before the segment enter as lag inputs only: every residual is of a
                # row of the segment (a segment at a run's start loses its first p rows)
                e = z[p:] - model.predict_lagged(lag_matrix(z, p))
                parts.append(e * scale)
                raw = values[s.run][start:s.stop]
                oof_moves.append((raw[p:] - raw[p - 1:-1]) / fold_steps)
            oof_raw.append(parts)
        all_rows = np.concatenate(values)
        with np.errstate(over="ignore", invalid="ignore"):
            mean, scale = all_rows.mean(axis=0), all_rows.std(axis=0, ddof=1)
        check_finite_scale(mean, scale, runs.columns, "")
        oof = [[e / scale for e in parts] for parts in oof_raw]
        counts = [sum(len(e) for e in parts) for parts in oof]
        if min(counts) < d + 2:
            raise ValueError(f"X leaves {min(counts)} out-of-fold residuals in a fold; at least "
                             f"{d + 2} are needed for a covariance of {d} variables (more "
                             "rows or fewer n_folds)")
        # each fold's T^2 uses the covariance of the *other* folds' residuals only
        scores = []
        t2_parts = []
        for i, parts in enumerate(oof):
            others = np.concatenate([e for j, o in enumerate(oof) if j != i for e in o])
            precision = _precision(others)
            for e in parts:
                t2_parts.append(_t2(e, precision))
        everything = np.concatenate([e for parts in oof for e in parts])
        self.precision_ = _precision(everything)
        t2_all = np.concatenate(t2_parts)
        self.t2_mean_ = float(np.mean(t2_all))
        self.t2_std_ = float(np.std(t2_all, ddof=1)) if len(t2_all) > 1 else 1.0
        if not self.t2_std_ > 0:
            self.t2_std_ = 1.0
        self.step_scale_ = step_scale(values)
        smoothed = [self._smooth(t2, self._initial_smooth(), np.ones(len(t2), dtype=bool))[0]
                    for t2 in t2_parts]
        self.limits_ = {"T2_smoothed": _quantile(smoothed, self.alpha)}
        if self.freeze_check:
            frozen = [self._freeze(m, np.ones(d), np.ones(len(m), dtype=bool))[0]
                      for m in oof_moves]
            self.limits_["freeze"] = _quantile(frozen, self.alpha)
            scores = [self._combine(a, b) for a, b in zip(smoothed, frozen, strict=True)]
        else:
            scores = smoothed
        self.mean_, self.scale_ = mean, scale
        standardised = [(v - mean) / scale for v in values]
        self.predictor_ = self._new_predictor().fit(standardised)
        self.laplace_ = lf.fit_laplace_members(
            self, standardised, lf.default_members(self.predictor, self.n_ensemble))
        if self.predictor == "lora-moe":
            self.modes_, self.mode_ = ["source"], "source"
        self.feature_names_ = list(runs.columns)
        self.named_features_ = bool(runs.named)
        self.n_features_in_ = d
        if runs.named:
            self.feature_names_in_ = np.asarray(runs.columns, dtype=object)
        if self.limit == "crossfit":
            self.threshold_, info = calibrated_limit(
                scores, self.alpha, what=f"{type(self).__name__}'s alarm statistic")
            self.calibration_ = {**info, "limit": "crossfit", "n_folds": k}
        else:
            n = len(everything)
            self.threshold_ = float(d * (n - 1) * (n + 1) / (n * (n - d))
                                    * stats.f.ppf(1 - self.alpha, d, n - d))
            self.calibration_ = {"limit": "parametric", "n_samples": n, "alpha": self.alpha}
        self.oof_scores_ = np.concatenate(scores)
        self._remember_scoring_params()
        self._set_training_scores(runs)
        return self

    def adapt(self, X, mode=None, *, limit: str = "source", rescale: bool = True,
              scale: str = "source", n_folds: int = 2) -> ResidualMonitor:
        """Adapt to a new operating mode from its normal data ``X`` (``predictor="lora-moe"``).

        Trains only the new mode's LoRA-MoE expert (the trunk stays frozen), centres the
        variables on the means of ``X`` (``scale="source"`` keeps the source standard
        deviations, ``"new"`` takes those of ``X``), re-scales the residual covariance from
        out-of-fold residuals of ``X`` (``rescale``) and keeps the source limits
        (``limit="source"``) or fits a parametric one (``"parametric"``); ``mode`` labels the
        new mode, which the monitor then scores (the Laplace mixture is dropped: ``laplace_``
        None). See :func:`~mola_ts.monitor.adapt.adapt_residual_monitor`.
        """
        from .adapt import adapt_residual_monitor

        return adapt_residual_monitor(self, X, mode=mode, limit=limit, rescale=rescale,
                                      scale=scale, n_folds=n_folds)

    def _held_out_scores(self) -> np.ndarray:
        """The out-of-fold alarm statistic (also behind a parametric limit)."""
        return self.oof_scores_

    # ------------------------------------------------------------------ smoothing
    def _initial_smooth(self) -> float:
        return {"ewma": self.t2_mean_, "cusum": 0.0, "none": self.t2_mean_}[self.smoothing]

    def _smooth(self, t2: np.ndarray, start: float, ok: np.ndarray
                ) -> tuple[np.ndarray, float]:
        """The smoothed statistic of ``t2`` from the state ``start``; rows not ``ok`` keep it."""
        if self.smoothing == "none":
            return np.where(ok, t2, float(start)), float(start)
        if self.smoothing == "ewma":
            out, state = ewma(t2, float(self.ewma_lambda), float(start), ok)
            return out, float(state)
        return cusum_upper(t2, self.t2_mean_, self.t2_std_, float(self.cusum_k), start, ok)

    def _freeze(self, moves: np.ndarray, start: np.ndarray, ok: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        return freeze_statistic(moves, float(self.freeze_lambda), start, ok)

    def _combine(self, smoothed: np.ndarray, frozen: np.ndarray) -> np.ndarray:
        return np.maximum(smoothed / self.limits_["T2_smoothed"], frozen / self.limits_["freeze"])

    # ------------------------------------------------------------------ stream protocol
    def _stream_init_state(self) -> dict[str, Any]:
        d = len(self.feature_names_)
        return {"history": np.empty((0, d)), "smooth": self._initial_smooth(),
                "freeze": np.ones(d)}

    def _stream_check_state(self, state: dict, n_seen: int) -> dict[str, Any]:
        if not isinstance(state, dict) or {"history", "smooth"} - set(state):
            raise ValueError("the stream state of a ResidualMonitor needs 'history' and "
                             "'smooth'; was it taken from a stream of this monitor?")
        history = np.array(state["history"], dtype=np.float64)
        d, p = len(self.feature_names_), int(self.order)
        if history.shape != (min(n_seen, p), d) or not np.isfinite(history).all():
            raise ValueError(f"state['engine']['history'] must hold min(n_seen, order) = "
                             f"{min(n_seen, p)} finite rows of {d} variables, got "
                             f"{history.shape}")
        smooth = state["smooth"]
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float, np.number)) or \
                not np.isfinite(smooth):
            raise ValueError(f"state['engine']['smooth'] must be a finite number, got "
                             f"{smooth!r}")
        freeze = np.array(state.get("freeze", np.ones(d)), dtype=np.float64)
        if freeze.shape != (d,) or not np.isfinite(freeze).all() or (freeze < 0).any():
            raise ValueError(f"state['engine']['freeze'] must hold {d} finite values >= 0, got "
                             f"shape {freeze.shape}")
        return {"history": history, "smooth": float(smooth), "freeze": freeze}

    def _stream_step(self, state: dict, values: np.ndarray, monitorable: np.ndarray
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        p = int(self.order)
        n = len(values)
        d = len(self.feature_names_)
        with np.errstate(over="ignore", invalid="ignore"):
            z = (values - self.mean_) / self.scale_
            history = state["history"]
            full = np.concatenate([history, z]) if len(history) else z
            n_hist = len(full) - n
            first = max(0, p - n_hist)  # first new row with a full lag history
            e = np.zeros((n, d))
            if first < n:
                e[first:] = full[n_hist + first:] - self.predictor_.predict_lagged(
                    lag_matrix(full[n_hist + first - p:], p))
            t2 = _t2(e, self.precision_)
        e = finite_scores(e)
        t2 = finite_scores(t2)
        warmup = np.zeros(n, dtype=bool)
        warmup[:first] = True
        ok = monitorable & ~warmup
        smoothed, smooth = self._smooth(t2, state["smooth"], ok)
        # warm-up rows: every statistic and the score 0, no alarm (like every monitor)
        columns = {"T2": np.where(warmup, 0.0, t2), "T2_smoothed": np.where(warmup, 0.0, smoothed)}
        new_state = {"history": full[max(0, len(full) - p):].copy(), "smooth": smooth,
                     "freeze": state["freeze"].copy()}
        if self.freeze_check:
            with np.errstate(over="ignore", invalid="ignore"):
                moves = np.zeros((n, d))
                if first < n:
                    moves[first:] = (full[n_hist + first:] - full[n_hist + first - 1:-1]) \
                        * (self.scale_ / self.step_scale_)
                frozen, new_state["freeze"] = self._freeze(moves, state["freeze"], ok)
            frozen = finite_scores(frozen)
            columns["freeze"] = np.where(warmup, 0.0, frozen)
            score = finite_scores(self._combine(smoothed, frozen))
        else:
            score = smoothed
        score = np.where(warmup, 0.0, score)
        alarm = ok & (score > self.threshold_)
        columns.update({"score": score, "score_limit": np.full(n, self.threshold_),
                        "alarm": alarm.astype(np.int64), "warmup": warmup.astype(np.int64)})
        return columns, new_state

    # ------------------------------------------------------------------ scoring
    def stream(self, missing: str = "hold", max_hold: int = 10, on_stale: str = "flag"
               ) -> MonitorStream:
        """A fresh sample-by-sample scorer (no lag history, smoothing at its start value).

        ``missing``, ``max_hold`` and ``on_stale`` set the sensor-dropout policy (see
        :class:`~mola_ts.monitor.MonitorStream`).
        """
        check_is_fitted(self)
        self._check_scoring_params()
        return MonitorStream(self, missing=missing, max_hold=max_hold, on_stale=on_stale)

    def statistics(self, X) -> pd.DataFrame:
        """Per sample: ``T2`` (the residual T^2), ``T2_smoothed``, ``freeze`` (with
        ``freeze_check``), ``score`` (the alarm statistic), ``score_limit``, ``alarm`` (1/0),
        ``warmup`` (1 for the first ``order`` rows) and the stream's
        data-quality columns (``sensor_fault`` 0, ``missing_variables`` empty, ``monitorable``
        1). ``X`` must be finite; ``stream(missing="hold").update(X)`` applies the
        sensor-dropout policy instead. Equal, bit for bit, to a stream fed ``X`` row by row.
        """
        series = self._check_X(X, min_rows=1, what_for="one sample")
        return MonitorStream(self)._score(series.values, series.index)

    def score_samples(self, X) -> np.ndarray:
        """The smoothed residual T^2 of every sample (higher = more abnormal; finite)."""
        return self.statistics(X)["score"].to_numpy()

    def contributions(self, X, smoothed: bool = True) -> pd.DataFrame:
        """Per-variable contributions to the residual T^2, one row per sample.

        ``c_j = e_j (S^-1 e)_j`` sums over the variables to ``T2``. With ``smoothed=True`` (and
        ``smoothing="ewma"``) the contributions are EWMA-smoothed like the score, started at an
        equal share of its starting value, so they sum to ``T2_smoothed``. Warm-up rows are 0.
        """
        series = self._check_X(X, min_rows=1, what_for="one sample")
        d, p = len(self.feature_names_), int(self.order)
        z = (series.values - self.mean_) / self.scale_
        out = np.zeros((len(z), d))
        if len(z) > p:
            e = z[p:] - self.predictor_.predict_lagged(lag_matrix(z, p))
            out[p:] = e * np.einsum("ni,ij->nj", e, self.precision_)
        if smoothed and self.smoothing == "ewma":
            lam = float(self.ewma_lambda)
            s = np.full(d, self.t2_mean_ / d)
            for i in range(p, len(z)):
                s = lam * out[i] + (1 - lam) * s
                out[i] = s
            out[:p] = 0.0
        index = series.index if series.index is not None else pd.RangeIndex(len(z))
        return pd.DataFrame(out, index=index, columns=self.feature_names_)

    # ------------------------------------------------------------------ persistence
    def _state_to_save(self) -> dict:
        state = super()._state_to_save()
        state["predictor_"] = self.predictor_.get_state()
        return state

    def _restore_state(self, state: dict) -> None:
        state = dict(state)
        saved = state.pop("predictor_")
        super()._restore_state(state)
        self.predictor_ = lf.restore_predictor(self.predictor, saved, int(self.order),
                                               float(self.ridge), int(self.hidden_size))


def _quantile(parts: list[np.ndarray], alpha: float) -> float:
    """The (1 - alpha) quantile of the pooled parts (floored at the smallest positive float)."""
    value = empirical_limit(np.concatenate(parts), alpha)
    return value if value > 0 else float(np.finfo(np.float64).tiny)


def _precision(residuals: np.ndarray) -> np.ndarray:
    """Inverse covariance of residual rows, with a tiny ridge for a near-singular one."""
    cov = np.atleast_2d(np.cov(residuals, rowvar=False, ddof=1))
    cov = cov + 1e-8 * max(float(np.trace(cov)) / len(cov), 1e-300) * np.eye(len(cov))
    return np.linalg.inv(cov)


def _t2(e: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Row-wise ``e^T P e`` (two einsum contractions: identical for a row alone or in a batch)."""
    return np.einsum("ni,ni->n", np.einsum("ni,ji->nj", e, precision), e)
