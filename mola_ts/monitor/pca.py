"""PCA and dynamic PCA monitors: Hotelling T^2 and SPE (Q) with cross-fitted, parametric or
held-out limits, batch and streaming.

:class:`PCAMonitor` follows the classical recipe (Yin et al., J. Process Control 2012; spec §6):
z-score each variable with the training mean and std (ddof = 1), eigen-decompose the correlation
matrix, keep ``k`` components; ``T^2 = sum_i t_i^2 / lambda_i`` over the kept scores and
``SPE = ||z - P P^T z||^2``. :class:`DPCAMonitor` does the same on variables augmented with
``n_lags`` past samples (Ku et al., 1995).

Limits (``limit``):

- ``"crossfit"`` (default): the training runs are cut into ``n_folds`` contiguous time blocks
  (:func:`mola_ts.data.time_block_folds`); for each block a fold model (standardisation and PCA,
  with the final model's ``k``) is fitted on the other blocks and scores the held-out one, and
  the limit is the (1 - alpha) quantile of the pooled out-of-fold values of the alarm statistic
  (:func:`mola_ts.monitor.calibration.calibrated_limit`, which reports its effective samples in
  ``calibration_``). The final model is fitted on all the data. Out-of-fold statistics include
  the drift between time blocks that an in-sample fit hides, so the limit carries over to new
  normal data far better than a parametric one on wandering processes such as the TEP.
- ``"parametric"``: T^2 ``k(n-1)(n+1)/(n(n-k)) F_{1-alpha}(k, n-k)``, SPE Jackson-Mudholkar
  over the discarded eigenvalues, from the model fitted on all the data (Yin's recipe).
- ``"validation"``: (1 - alpha) empirical quantiles over the held-out last
  ``validation_fraction`` of each run, the model being fitted on the rest.

Every statistic is computed row by row (``np.einsum``), so a row's value never depends on the
rows scored with it: :meth:`PCAMonitor.statistics` is exactly a fresh :meth:`PCAMonitor.stream`
fed the whole run. Scores are always finite: a statistic that overflows float64 is clipped to
:data:`~mola_ts.monitor.calibration.SCORE_CEILING` (and alarms); rows without a complete lag
history are flagged ``warmup`` and scored 0.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..data import time_block_folds
from ..persistence import SaveLoadMixin
from .base import MonitorMixin, validate_fit_runs
from .calibration import LimitSupportWarning, calibrated_limit, finite_scores
from .charts import empirical_limit, spe_limit_jackson_mudholkar, t2_limit_f
from .pca_core import LIMITS, STATISTICS, choose_components, fit_pca, lagged, pca_statistics
from .stream import MonitorStream

__all__ = ["PCAMonitor", "DPCAMonitor"]

class PCAMonitor(MonitorMixin, SaveLoadMixin, BaseEstimator):
    """Principal component analysis monitor with T^2, SPE or both.

    Sign convention: higher scores are more abnormal. With ``statistic="t2"`` or ``"spe"`` the
    score is that statistic and ``threshold_`` its limit; with ``"either"`` the score is
    ``max(T2 / T2_limit, SPE / SPE_limit)`` and ``threshold_ = 1`` (an alarm when either
    statistic exceeds its limit). :meth:`predict` is 1 (alarm) where the score exceeds
    ``threshold_``. Scores are finite: an overflowing statistic is clipped to ``1e300`` (an
    alarm); a row without a complete lag history (:class:`DPCAMonitor`'s first ``n_lags``)
    has ``warmup = 1``, statistics and score 0 and no alarm.

    With ``limit="crossfit"`` and ``statistic="either"`` the two limits are set so that the
    *combined* alarm has rate ``alpha`` out of fold: each statistic is first divided by the
    (1 - alpha) quantile of its out-of-fold values, then the (1 - alpha) quantile ``c`` of the
    larger of the two ratios is taken, and ``T2_limit``, ``SPE_limit`` are the two quantiles
    times ``c`` (both statistics get the same out-of-fold exceedance level, and the union of
    their alarms has rate ``alpha``).

    Parameters
    ----------
    n_components : int or float, default=0.9
        Retained components ``k``. An int is used as given (it must be smaller than the number
        of (lag-augmented) variables). A float in (0, 1) keeps the fewest components whose
        eigenvalues explain at least that share of the total variance, capped at the number of
        variables minus one so that SPE keeps a residual space: the default works on any plant
        with two or more variables. Yin's reference setting is ``n_components=9,
        limit="parametric"``.
    statistic : {"either", "t2", "spe"}, default="either"
    limit : {"crossfit", "parametric", "validation"}, default="crossfit"
        How the limits are set (see the module doc): out-of-fold quantiles of ``n_folds``
        time-block folds over all of ``X``; parametric (F distribution and Jackson-Mudholkar)
        from the model fitted on all of ``X``; or empirical quantiles over the held-out last
        ``validation_fraction`` of each run, the model being fitted on the rest.
    alpha : float, default=0.01
        Target false-alarm rate of the alarm (of each limit for the parametric and validation
        limits).
    validation_fraction : float, default=0.3
        Used by ``limit="validation"`` only.
    n_folds : int, default=2
        Time-block folds of ``limit="crossfit"`` (>= 2); fewer folds leave the limit more
        conservative. Chosen on TEP training runs only (docs/concepts/monitoring.md).

    Attributes
    ----------
    mean_, scale_ : ndarray
        Standardisation of the (lag-augmented) variables.
    eigenvalues_ : ndarray
        All eigenvalues of the correlation matrix, decreasing.
    components_ : ndarray of shape (n_variables, k)
        The retained loading vectors P.
    n_components_ : int
    t2_limit_, spe_limit_ : float
    threshold_ : float
    oof_scores_ : ndarray
        ``limit="crossfit"``: the out-of-fold scores behind the limit; ``"validation"``: the
        held-out scores (absent with ``"parametric"``).
    decision_scores_, labels_ : ndarray of shape (n_training_samples,)
        pyod's attributes: ``score_samples`` and alarms (1) of the training runs (in-sample,
        concatenated; see :class:`~mola_ts.monitor.base.MonitorMixin`).
    calibration_ : dict
        ``limit="crossfit"`` only: the report of :func:`~mola_ts.monitor.calibration.
        calibrated_limit` on the out-of-fold alarm statistic (``method``, ``alpha``,
        ``n_samples``, ``lag1_autocorrelation``, ``effective_samples``,
        ``needed_effective_samples``) plus ``n_folds`` and ``statistic`` (and, for
        ``"either"``, the out-of-fold quantiles ``t2_quantile``, ``spe_quantile`` and the
        combined limit ``combined_limit``).
    scoring_params_ : dict
        The parameters as at fit: after :meth:`set_params` changes one of them, scoring raises
        a ValueError until the next :meth:`fit`.

    Examples
    --------
    >>> from mola_ts.data import load_tep, TEP_XMEAS, TEP_XMV
    >>> from mola_ts.monitor import PCAMonitor
    >>> cols = TEP_XMEAS[:22] + TEP_XMV
    >>> pca = PCAMonitor(n_components=9, limit="parametric").fit(load_tep(0, "train")[cols])
    >>> round(pca.t2_limit_, 3), round(pca.spe_limit_, 3)
    (22.395, 23.406)
    """

    _scoring_params = ("n_components", "statistic", "limit", "alpha", "validation_fraction",
                       "n_folds")

    def __init__(self, n_components: int | float = 0.9, statistic: str = "either",
                 limit: str = "crossfit", alpha: float = 0.01,
                 validation_fraction: float = 0.3, n_folds: int = 2):
        self.n_components = n_components
        self.statistic = statistic
        self.limit = limit
        self.alpha = alpha
        self.validation_fraction = validation_fraction
        self.n_folds = n_folds

    def _lags(self) -> int:
        return 0

    def _check_params(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if self.limit not in LIMITS:
            raise ValueError(f"limit must be one of {LIMITS}, got {self.limit!r}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5), got {self.alpha!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got "
                             f"{self.validation_fraction!r}")
        folds = self.n_folds
        if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
            raise ValueError(f"n_folds must be an int >= 2, got {folds!r}")
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
            raise TypeError(f"n_components must be an int or a float in (0, 1), got {k!r}")
        if isinstance(k, (float, np.floating)) and not 0 < k < 1:
            raise ValueError(f"a float n_components must lie in (0, 1), got {k!r}")
        if isinstance(k, (int, np.integer)) and k < 1:
            raise ValueError(f"n_components must be >= 1, got {k!r}")

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None) -> PCAMonitor:
        """Fit on in-control data ``X`` (one run, or a list of runs with the same columns).

        With ``limit="crossfit"`` a :class:`~mola_ts.monitor.calibration.LimitSupportWarning`
        says when the out-of-fold statistics carry fewer effective samples than ``10 / alpha``.
        """
        self._check_params()
        lags = self._lags()
        runs = validate_fit_runs(X, min_rows=lags + 3, what_for="a PCA model")
        n_vars = len(runs.columns)
        names = [f"{c}" if j == 0 else f"{c}[t-{j}]" for j in range(lags + 1)
                 for c in runs.columns]
        if self.limit == "validation":
            cuts = [len(v) - int(round(self.validation_fraction * len(v))) for v in runs.values]
            fit_parts = [v[:c] for v, c in zip(runs.values, cuts, strict=True)]
            # held-out rows keep their lag history from the fitted part of the same run
            val_parts = [v[max(0, c - lags):] for v, c in zip(runs.values, cuts, strict=True)
                         if c < len(v)]
        else:
            fit_parts, val_parts = runs.values, []
        mean, scale, eigenvalues, vectors = fit_pca(fit_parts, lags, names)
        n_rows = sum(max(len(v) - lags, 0) for v in fit_parts)
        k = choose_components(self.n_components, eigenvalues)
        if k >= len(names):
            raise ValueError(f"n_components={k} must be smaller than the {len(names)} "
                             "(lag-augmented) variables, or no residual space is left for SPE")
        if k >= n_rows - 1:
            raise ValueError(f"n_components={k} needs more than {k + 1} training rows, X gives "
                             f"{n_rows}")
        self.mean_, self.scale_ = mean, scale
        self.eigenvalues_ = eigenvalues
        self.components_ = vectors[:, :k].copy()
        self.n_components_ = k
        self.n_samples_fit_ = n_rows
        self.feature_names_ = list(runs.columns)
        self.named_features_ = bool(runs.named)
        self.n_features_in_ = n_vars
        if runs.named:
            self.feature_names_in_ = np.asarray(runs.columns, dtype=object)
        for stale in ("calibration_", "oof_scores_"):
            if hasattr(self, stale):
                delattr(self, stale)
        if self.limit == "parametric":
            self.t2_limit_ = t2_limit_f(k, n_rows, self.alpha)
            self.spe_limit_ = spe_limit_jackson_mudholkar(eigenvalues[k:], self.alpha)
        elif self.limit == "validation":
            held = [lagged(v, lags) for v in val_parts if len(v) > lags]
            if not held or sum(len(h) for h in held) < 2:
                raise ValueError("the held-out part of X is too short to set limits; use more "
                                 "data or a larger validation_fraction")
            t2, spe, *_ = self._model_statistics(np.concatenate(held))
            self.t2_limit_ = empirical_limit(t2, self.alpha)
            self.spe_limit_ = empirical_limit(spe, self.alpha)
            self.oof_scores_ = self._score_of(t2, spe)
        else:
            self._crossfit_limits(runs.values, names, k)
        self.threshold_ = {"t2": self.t2_limit_, "spe": self.spe_limit_, "either": 1.0}[
            self.statistic]
        self._remember_scoring_params()
        self._set_training_scores(runs)
        return self

    def _score_of(self, t2: np.ndarray, spe: np.ndarray) -> np.ndarray:
        """The alarm score of T^2 and SPE values (as :meth:`statistics` computes it)."""
        if self.statistic == "t2":
            return t2.copy()
        if self.statistic == "spe":
            return spe.copy()
        with np.errstate(over="ignore"):
            return finite_scores(np.maximum(t2 / self.t2_limit_, spe / self.spe_limit_))

    def _score_min_rows(self) -> int:
        return self._lags() + 1

    def _held_out_scores(self) -> np.ndarray:
        """Out-of-fold (crossfit) or held-out (validation) scores; in-sample when parametric."""
        held = getattr(self, "oof_scores_", None)
        return self.decision_scores_ if held is None else held

    def _crossfit_limits(self, runs: list[np.ndarray], names: list[str], k: int) -> None:
        """Limits from the out-of-fold statistics of ``n_folds`` time-block fold models."""
        lags = self._lags()
        folds = time_block_folds([len(v) for v in runs], int(self.n_folds))
        t2_parts, spe_parts = [], []
        for i, fold in enumerate(folds):
            where = f" in the rows cross-fit fold {i} is fitted on (limit='crossfit')"
            fit_parts = [runs[s.run][s.start:s.stop] for s in fold.fit]
            n_fit = sum(max(len(v) - lags, 0) for v in fit_parts)
            if n_fit - 1 <= k:
                raise ValueError(
                    f"X leaves {n_fit} rows{where}; n_components={k} needs more than {k + 1}: "
                    f"use more data, fewer n_folds (got {self.n_folds}) or "
                    "limit='parametric'")
            mean, scale, eigenvalues, vectors = fit_pca(fit_parts, lags, names, where)
            kept, eig = vectors[:, :k], eigenvalues[:k]
            for s in fold.held_out:
                segment = runs[s.run][s.start:s.stop]
                if len(segment) > lags:  # lag windows stay inside the held-out block
                    t2, spe, *_ = pca_statistics(lagged(segment, lags), mean, scale,
                                                  kept, eig)
                    t2_parts.append(t2)
                    spe_parts.append(spe)
        n_oof = sum(len(p) for p in t2_parts)
        if not any(len(p) > 1 for p in t2_parts):  # no pair of consecutive rows either
            raise ValueError(f"X leaves {n_oof} out-of-fold rows, no two of them consecutive, "
                             f"to set limits with n_folds={self.n_folds} and {lags} lags; use "
                             "more data, fewer n_folds or limit='parametric'")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LimitSupportWarning)
            self._set_crossfit_limits(t2_parts, spe_parts)
        for w in caught:  # shown at the user's call to fit
            warnings.warn(w.message, w.category, stacklevel=4)

    def _set_crossfit_limits(self, t2_parts: list[np.ndarray], spe_parts: list[np.ndarray]
                             ) -> None:
        """The limits and ``calibration_`` from the out-of-fold T^2 and SPE segments."""
        name = type(self).__name__
        if self.statistic == "either":
            q_t2 = empirical_limit(np.concatenate(t2_parts), self.alpha)
            q_spe = empirical_limit(np.concatenate(spe_parts), self.alpha)
            q_t2 = q_t2 if q_t2 > 0 else float(np.finfo(np.float64).tiny)
            q_spe = q_spe if q_spe > 0 else float(np.finfo(np.float64).tiny)
            combined = [finite_scores(np.maximum(t / q_t2, s / q_spe))
                        for t, s in zip(t2_parts, spe_parts, strict=True)]
            c, info = calibrated_limit(combined, self.alpha,
                                       what=f"{name}'s combined T2/SPE statistic")
            self.t2_limit_, self.spe_limit_ = q_t2 * c, q_spe * c
            info.update(t2_quantile=q_t2, spe_quantile=q_spe, combined_limit=c)
        else:
            parts = t2_parts if self.statistic == "t2" else spe_parts
            limit, info = calibrated_limit(parts, self.alpha,
                                           what=f"{name}'s {self.statistic.upper()}")
            # the statistic that does not alarm gets its own out-of-fold quantile, for display
            other = spe_parts if self.statistic == "t2" else t2_parts
            other_limit = empirical_limit(np.concatenate(other), self.alpha)
            self.t2_limit_, self.spe_limit_ = ((limit, other_limit) if self.statistic == "t2"
                                               else (other_limit, limit))
        info.update(n_folds=int(self.n_folds), statistic=self.statistic)
        self.calibration_ = info
        self.oof_scores_ = np.concatenate([
            self._score_of(t, s) for t, s in zip(t2_parts, spe_parts, strict=True)])

    # ------------------------------------------------------------------ scoring
    def _model_statistics(self, lagged_rows: np.ndarray):
        """:func:`pca_statistics` of the fitted model."""
        return pca_statistics(lagged_rows, self.mean_, self.scale_, self.components_,
                               self.eigenvalues_[: self.n_components_])

    def _prepare(self, X) -> tuple[np.ndarray, pd.Index]:
        lags = self._lags()
        series = self._check_X(X, min_rows=lags + 1,
                               what_for=f"{lags} lags plus the scored sample")
        index = series.index if series.index is not None else pd.RangeIndex(len(series.values))
        return series.values, index

    def statistics(self, X) -> pd.DataFrame:
        """``T2``, ``T2_limit``, ``SPE``, ``SPE_limit``, ``score``, ``alarm`` and ``warmup``.

        Exactly (bit for bit) what a fresh :meth:`stream` returns for the whole run. With lags,
        the first ``n_lags`` rows are warm-up: ``warmup = 1``, statistics and score 0, no alarm.
        Every value is finite.
        """
        values, index = self._prepare(X)
        columns, _ = self._stream_step(self._stream_init_state(), values,
                                       np.ones(len(values), dtype=bool))
        return pd.DataFrame(columns, index=index)

    def score_samples(self, X) -> np.ndarray:
        """The monitored score (see the class doc; higher = more abnormal; always finite)."""
        return self.statistics(X)["score"].to_numpy()

    def stream(self, missing: str = "hold", max_hold: int = 10, on_stale: str = "flag"
               ) -> MonitorStream:
        """A :class:`~mola_ts.monitor.stream.MonitorStream` scoring sample by sample.

        Its state is the last ``n_lags`` raw samples (none for :class:`PCAMonitor`); the
        dropout policy (``missing``, ``max_hold``, ``on_stale``) is the stream's. An
        unmonitorable sample gets statistics and score 0 and no alarm; its held values still
        enter the lag history (they stand at their place in time).
        """
        check_is_fitted(self)
        self._check_scoring_params()
        return MonitorStream(self, missing=missing, max_hold=max_hold, on_stale=on_stale)

    # ------------------------------------------------------------------ stream protocol
    def _stream_init_state(self) -> dict:
        """A fresh stream's state: an empty lag history (raw samples, oldest first)."""
        return {"history": np.empty((0, len(self.feature_names_)))}

    def _stream_step(self, state: dict, values: np.ndarray, monitorable: np.ndarray
                     ) -> tuple[dict, dict]:
        """Score raw finite ``values`` after the lag ``history`` in ``state`` (not modified)."""
        lags = self._lags()
        history = state["history"]
        n, h = len(values), len(history)
        full = np.concatenate([history, values]) if h else values
        first = min(max(0, lags - h), n)  # first new row with a complete lag history
        t2, spe = np.zeros(n), np.zeros(n)
        if first < n:
            rows = lagged(full, lags)[h + first - lags:]
            t2[first:], spe[first:], *_ = self._model_statistics(rows)
        warmup = np.zeros(n, dtype=np.int64)
        warmup[:first] = 1
        scored = np.asarray(monitorable, dtype=bool) & (warmup == 0)
        t2[~scored] = 0.0
        spe[~scored] = 0.0
        score = self._score_of(t2, spe)
        alarm = np.where(scored & (score > self.threshold_), 1, 0)
        columns = {"T2": t2, "T2_limit": np.full(n, self.t2_limit_), "SPE": spe,
                   "SPE_limit": np.full(n, self.spe_limit_), "score": score, "alarm": alarm,
                   "warmup": warmup}
        kept = full[max(0, len(full) - lags):] if lags else full[:0]
        return columns, {"history": kept.copy()}

    def _stream_check_state(self, state: dict, n_seen: int) -> dict:
        """A copy of ``state`` after checking its lag history against ``n_seen`` samples."""
        n_vars = len(self.feature_names_)
        expected = (min(int(n_seen), self._lags()), n_vars)
        if not isinstance(state, dict) or "history" not in state:
            raise ValueError(f"the {type(self).__name__} stream state must be a dict with the "
                             f"key 'history', got {state!r:.80}")
        history = np.array(state["history"], dtype=np.float64)
        if history.shape != expected or not np.isfinite(history).all():
            raise ValueError(f"the stream state's history must be {expected[0]} finite samples "
                             f"of {n_vars} variables after {n_seen} samples seen, got shape "
                             f"{history.shape}")
        return {"history": history}

    # ------------------------------------------------------------------ explanations
    def contributions(self, X, statistic: str = "T2") -> pd.DataFrame:
        """Per-variable contributions that sum to the statistic of each sample.

        ``"SPE"``: squared residual of each variable. ``"T2"``: the complete decomposition
        ``c_j = z_j (P Lambda^-1 P^T z)_j``. Lagged copies of a variable are summed into it.
        Warm-up rows (whose statistic is 0) get 0 contributions.
        """
        if statistic not in ("T2", "SPE"):
            raise ValueError(f"statistic must be 'T2' or 'SPE', got {statistic!r}")
        values, index = self._prepare(X)
        lags = self._lags()
        _, _, z, scores, residual = self._model_statistics(lagged(values, lags))
        with np.errstate(over="ignore", invalid="ignore"):
            if statistic == "SPE":
                parts = residual**2
            else:
                parts = z * ((scores / self.eigenvalues_[: self.n_components_])
                             @ self.components_.T)
        n_vars = len(self.feature_names_)
        summed = parts.reshape(len(parts), lags + 1, n_vars).sum(axis=1)
        out = np.zeros((len(values), n_vars))
        out[lags:] = finite_scores(summed)
        return pd.DataFrame(out, index=index, columns=self.feature_names_)


class DPCAMonitor(PCAMonitor):
    """Dynamic PCA: :class:`PCAMonitor` on each sample augmented with its ``n_lags`` predecessors.

    The first ``n_lags`` samples of a run are warm-up (``warmup = 1``, score 0, no alarm); lag
    windows never cross the boundary between runs given as a list, nor between cross-fit
    blocks.

    Parameters
    ----------
    n_lags : int, default=2
        Past samples appended to each sample.
    n_components : int or float, default=0.95
        As in :class:`PCAMonitor`; the default keeps 95 % of the variance of the augmented
        variables (capped below their number).
    n_folds : int, default=3
        As in :class:`PCAMonitor`.
    statistic, limit, alpha, validation_fraction :
        As in :class:`PCAMonitor` (``limit="crossfit"`` by default).
    """

    _scoring_params = PCAMonitor._scoring_params + ("n_lags",)

    def __init__(self, n_lags: int = 2, n_components: int | float = 0.95,
                 statistic: str = "either", limit: str = "crossfit", alpha: float = 0.01,
                 validation_fraction: float = 0.3, n_folds: int = 3):
        self.n_lags = n_lags
        super().__init__(n_components=n_components, statistic=statistic, limit=limit,
                         alpha=alpha, validation_fraction=validation_fraction, n_folds=n_folds)

    def _lags(self) -> int:
        lags = self.n_lags
        if isinstance(lags, bool) or not isinstance(lags, (int, np.integer)) or lags < 0:
            raise ValueError(f"n_lags must be an int >= 0, got {lags!r}")
        return int(lags)
