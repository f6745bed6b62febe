"""PCA and dynamic PCA monitors: Hotelling T^2 and SPE (Q) with parametric or held-out limits.

:class:`PCAMonitor` follows the classical recipe (Yin et al., J. Process Control 2012; spec §6):
z-score each variable with the training mean and std (ddof = 1), eigen-decompose the correlation
matrix, keep ``k`` components; ``T^2 = sum_i t_i^2 / lambda_i`` over the kept scores and
``SPE = ||z - P P^T z||^2``. Limits are either parametric (T^2: ``k(n-1)(n+1)/(n(n-k))
F_{1-alpha}(k, n-k)``; SPE: Jackson-Mudholkar over the discarded eigenvalues) or the
(1 - alpha) empirical quantiles over the held-out last ``validation_fraction`` of each run (the
model is then fitted on the rest). :class:`DPCAMonitor` does the same on variables augmented with
``n_lags`` past samples (Ku et al., 1995).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ..persistence import SaveLoadMixin
from .base import MonitorMixin, check_finite_scale, validate_fit_runs
from .charts import empirical_limit, spe_limit_jackson_mudholkar, t2_limit_f

__all__ = ["PCAMonitor", "DPCAMonitor"]

_STATISTICS = ("t2", "spe", "either")
_LIMITS = ("parametric", "validation")


def _lagged(values: np.ndarray, n_lags: int) -> np.ndarray:
    """Rows ``[x_t, x_{t-1}, .., x_{t-l}]`` for t = l .. n-1 (shape (n - l, c (l + 1)))."""
    if n_lags == 0:
        return values
    n = len(values)
    return np.concatenate([values[n_lags - j: n - j] for j in range(n_lags + 1)], axis=1)


class PCAMonitor(MonitorMixin, SaveLoadMixin, BaseEstimator):
    """Principal component analysis monitor with T^2, SPE or both.

    Sign convention: higher scores are more abnormal. With ``statistic="t2"`` or ``"spe"`` the
    score is that statistic and ``threshold_`` its limit; with ``"either"`` the score is
    ``max(T2 / T2_limit, SPE / SPE_limit)`` and ``threshold_ = 1`` (an alarm when either
    statistic exceeds its limit). :meth:`predict` is 1 (alarm) where the score exceeds
    ``threshold_``.

    Parameters
    ----------
    n_components : int or float, default=9
        Retained components ``k``; a float in (0, 1) keeps the fewest components whose
        eigenvalues explain at least that share of the total variance.
    statistic : {"either", "t2", "spe"}, default="either"
    limit : {"parametric", "validation"}, default="parametric"
        Parametric limits (F distribution and Jackson-Mudholkar) from a model fitted on all of
        ``X``, or empirical (1 - alpha) quantiles over the held-out last ``validation_fraction``
        of each run, the model being fitted on the rest.
    alpha : float, default=0.01
        Significance of each limit.
    validation_fraction : float, default=0.3
        Used by ``limit="validation"`` only.

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
    scoring_params_ : dict
        The parameters as at fit: after :meth:`set_params` changes one of them, scoring raises
        a ValueError until the next :meth:`fit`.

    Examples
    --------
    >>> from mola_ts.data import load_tep, TEP_XMEAS, TEP_XMV
    >>> from mola_ts.monitor import PCAMonitor
    >>> cols = TEP_XMEAS[:22] + TEP_XMV
    >>> pca = PCAMonitor(n_components=9).fit(load_tep(0, "train")[cols])
    >>> round(pca.t2_limit_, 3), round(pca.spe_limit_, 3)
    (22.395, 23.406)
    """

    _scoring_params = ("n_components", "statistic", "limit", "alpha", "validation_fraction")

    def __init__(self, n_components: int | float = 9, statistic: str = "either",
                 limit: str = "parametric", alpha: float = 0.01,
                 validation_fraction: float = 0.3):
        self.n_components = n_components
        self.statistic = statistic
        self.limit = limit
        self.alpha = alpha
        self.validation_fraction = validation_fraction

    def _lags(self) -> int:
        return 0

    def _check_params(self) -> None:
        if self.statistic not in _STATISTICS:
            raise ValueError(f"statistic must be one of {_STATISTICS}, got {self.statistic!r}")
        if self.limit not in _LIMITS:
            raise ValueError(f"limit must be one of {_LIMITS}, got {self.limit!r}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5), got {self.alpha!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got "
                             f"{self.validation_fraction!r}")
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
            raise TypeError(f"n_components must be an int or a float in (0, 1), got {k!r}")
        if isinstance(k, (float, np.floating)) and not 0 < k < 1:
            raise ValueError(f"a float n_components must lie in (0, 1), got {k!r}")
        if isinstance(k, (int, np.integer)) and k < 1:
            raise ValueError(f"n_components must be >= 1, got {k!r}")

    def fit(self, X, y=None) -> PCAMonitor:
        """Fit on in-control data ``X`` (one run, or a list of runs with the same columns)."""
        self._check_params()
        lags = self._lags()
        runs = validate_fit_runs(X, min_rows=lags + 3, what_for="a PCA model")
        n_vars = len(runs.columns)
        if self.limit == "validation":
            cuts = [len(v) - int(round(self.validation_fraction * len(v))) for v in runs.values]
            fit_parts = [v[:c] for v, c in zip(runs.values, cuts, strict=True)]
            # held-out rows keep their lag history from the fitted part of the same run
            val_parts = [v[max(0, c - lags):] for v, c in zip(runs.values, cuts, strict=True)
                         if c < len(v)]
        else:
            fit_parts, val_parts = runs.values, []
        rows = [_lagged(v, lags) for v in fit_parts if len(v) > lags]
        data = np.concatenate(rows) if rows else np.empty((0, n_vars * (lags + 1)))
        if len(data) < 3:
            raise ValueError(f"X leaves {len(data)} rows to fit the PCA model; at least 3 are "
                             "needed")
        names = [f"{c}" if j == 0 else f"{c}[t-{j}]" for j in range(lags + 1)
                 for c in runs.columns]
        with np.errstate(over="ignore", invalid="ignore"):
            mean = data.mean(axis=0)
            scale = data.std(axis=0, ddof=1)
        check_finite_scale(mean, scale, names, "")
        z = (data - mean) / scale
        corr = z.T @ z / (len(z) - 1)
        eigenvalues, vectors = np.linalg.eigh(corr)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, vectors = np.clip(eigenvalues[order], 0.0, None), vectors[:, order]
        k = self.n_components
        if isinstance(k, (float, np.floating)):
            share = np.cumsum(eigenvalues) / eigenvalues.sum()
            k = int(np.searchsorted(share, k) + 1)
        k = int(k)
        if k >= z.shape[1]:
            raise ValueError(f"n_components={k} must be smaller than the {z.shape[1]} "
                             "(lag-augmented) variables, or no residual space is left for SPE")
        if k >= len(z) - 1:
            raise ValueError(f"n_components={k} needs more than {k + 1} training rows, X gives "
                             f"{len(z)}")
        self.mean_, self.scale_ = mean, scale
        self.eigenvalues_ = eigenvalues
        self.components_ = vectors[:, :k].copy()
        self.n_components_ = k
        self.n_samples_fit_ = len(z)
        self.feature_names_ = list(runs.columns)
        self.named_features_ = bool(runs.named)
        self.n_features_in_ = n_vars
        if runs.named:
            self.feature_names_in_ = np.asarray(runs.columns, dtype=object)
        if self.limit == "parametric":
            self.t2_limit_ = t2_limit_f(k, len(z), self.alpha)
            self.spe_limit_ = spe_limit_jackson_mudholkar(eigenvalues[k:], self.alpha)
        else:
            held = [_lagged(v, lags) for v in val_parts if len(v) > lags]
            if not held or sum(len(h) for h in held) < 2:
                raise ValueError("the held-out part of X is too short to set limits; use more "
                                 "data or a larger validation_fraction")
            t2, spe, _, _ = self._raw(np.concatenate(held))
            self.t2_limit_ = empirical_limit(t2, self.alpha)
            self.spe_limit_ = empirical_limit(spe, self.alpha)
        self.threshold_ = {"t2": self.t2_limit_, "spe": self.spe_limit_, "either": 1.0}[
            self.statistic]
        self._remember_scoring_params()
        return self

    def _raw(self, lagged_rows: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """T^2, SPE, standardised rows and residuals of already lag-augmented rows.

        A finite sample so far from the training data that a statistic overflows float64 gets
        an infinite statistic (an alarm), never NaN (which would read as "no alarm").
        """
        with np.errstate(over="ignore", invalid="ignore"):
            z = (lagged_rows - self.mean_) / self.scale_
            scores = z @ self.components_
            t2 = np.sum(scores**2 / self.eigenvalues_[: self.n_components_], axis=1)
            residual = z - scores @ self.components_.T
            spe = np.sum(residual**2, axis=1)
        t2 = np.where(np.isnan(t2), np.inf, t2)
        spe = np.where(np.isnan(spe), np.inf, spe)
        return t2, spe, z, residual

    def _prepare(self, X) -> tuple[np.ndarray, pd.Index]:
        lags = self._lags()
        series = self._check_X(X, min_rows=lags + 1,
                               what_for=f"{lags} lags plus the scored sample")
        index = series.index if series.index is not None else pd.RangeIndex(len(series.values))
        return series.values, index

    def statistics(self, X) -> pd.DataFrame:
        """``T2``, ``T2_limit``, ``SPE``, ``SPE_limit``, ``score`` and ``alarm`` per sample.

        With lags, the first ``n_lags`` rows are NaN (no alarm).
        """
        values, index = self._prepare(X)
        lags = self._lags()
        n = len(values)
        t2 = np.full(n, np.nan)
        spe = np.full(n, np.nan)
        t2[lags:], spe[lags:], _, _ = self._raw(_lagged(values, lags))
        if self.statistic == "t2":
            score = t2
        elif self.statistic == "spe":
            score = spe
        else:
            score = np.maximum(t2 / self.t2_limit_, spe / self.spe_limit_)
        alarm = np.where(~np.isnan(score) & (score > self.threshold_), 1, 0)
        return pd.DataFrame({"T2": t2, "T2_limit": self.t2_limit_, "SPE": spe,
                             "SPE_limit": self.spe_limit_, "score": score, "alarm": alarm},
                            index=index)

    def score_samples(self, X) -> np.ndarray:
        """The monitored score (see the class doc; higher = more abnormal)."""
        return self.statistics(X)["score"].to_numpy()

    def contributions(self, X, statistic: str = "T2") -> pd.DataFrame:
        """Per-variable contributions that sum exactly to the statistic of each sample.

        ``"SPE"``: squared residual of each variable. ``"T2"``: the complete decomposition
        ``c_j = z_j (P Lambda^-1 P^T z)_j``. Lagged copies of a variable are summed into it.
        """
        if statistic not in ("T2", "SPE"):
            raise ValueError(f"statistic must be 'T2' or 'SPE', got {statistic!r}")
        values, index = self._prepare(X)
        lags = self._lags()
        _, _, z, residual = self._raw(_lagged(values, lags))
        if statistic == "SPE":
            parts = residual**2
        else:
            p = self.components_
            parts = z * ((z @ p / self.eigenvalues_[: self.n_components_]) @ p.T)
        n_vars = len(self.feature_names_)
        summed = parts.reshape(len(parts), lags + 1, n_vars).sum(axis=1)
        out = np.full((len(values), n_vars), np.nan)
        out[lags:] = summed
        return pd.DataFrame(out, index=index, columns=self.feature_names_)


class DPCAMonitor(PCAMonitor):
    """Dynamic PCA: :class:`PCAMonitor` on each sample augmented with its ``n_lags`` predecessors.

    The first ``n_lags`` samples of a run are not scored (NaN, no alarm); lag windows never
    cross the boundary between runs given as a list.

    Parameters
    ----------
    n_lags : int, default=2
        Past samples appended to each sample.
    n_components : int or float, default=0.9
        As in :class:`PCAMonitor`; the default keeps 90 % of the variance of the augmented
        variables.
    statistic, limit, alpha, validation_fraction :
        As in :class:`PCAMonitor`.
    """

    _scoring_params = PCAMonitor._scoring_params + ("n_lags",)

    def __init__(self, n_lags: int = 2, n_components: int | float = 0.9,
                 statistic: str = "either", limit: str = "parametric", alpha: float = 0.01,
                 validation_fraction: float = 0.3):
        self.n_lags = n_lags
        super().__init__(n_components=n_components, statistic=statistic, limit=limit,
                         alpha=alpha, validation_fraction=validation_fraction)

    def _lags(self) -> int:
        lags = self.n_lags
        if isinstance(lags, bool) or not isinstance(lags, (int, np.integer)) or lags < 0:
            raise ValueError(f"n_lags must be an int >= 0, got {lags!r}")
        return int(lags)
