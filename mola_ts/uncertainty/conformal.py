"""Conformal correction of a predictive distribution's central intervals.

Knows nothing of forecasting: it calibrates a batch of :class:`GaussianMixture` predictions
whose batch shape is ``(n, steps, variables)`` (a forecaster's windows; a monitor passes its
quantities as one step). The nonconformity score of an observation ``y`` is the central level
the predictive needs to cover it, ``s = |2 F(y) - 1|`` (``F`` its CDF), so a corrected interval
keeps the mixture's shape and only moves its level:

- **split** (``method="split"``): on held-out predictions, per step the scores pooled over the
  variables (over the steps too when there are fewer than ``min_windows`` windows, as on a short
  validation split; ``pooling_`` says which), the corrected level for nominal coverage ``c`` is
  the ``ceil((n + 1) c)``-th smallest score, and the interval is the mixture's central interval
  at that level. On exchangeable data it covers at least ``c`` (Vovk et al.; Lei et al. 2018).
- **adaptive** (``method="adaptive"``): adaptive conformal inference (Gibbs and Candès, 2021):
  the miscoverage ``alpha_t`` used for each tracked coverage and step follows the realised
  errors, ``alpha <- alpha + gamma (1 - c - err)``, fed through :meth:`ConformalCalibrator.observe`
  as the true values arrive; long-run coverage holds under any drift.
- **choosing between them on held-out data** (:func:`choose_method`, the forecasters'
  ``conformal="auto"``): calibrate both on the first half of the held-out windows (time order),
  walk the second half as ``update`` would (:meth:`ConformalCalibrator.walk`), and keep the
  method whose coverage there is closer to nominal (mean absolute error over the tracked
  coverages; split on a tie). The choice never sees the data the intervals are used on.

MAPIE (the scikit-learn-compatible conformal library) calibrates point regressors with
residual scores (``mapie.regression``, its time-series ``TimeSeriesRegressor`` with EnbPI and
ACI); the score here is the mixture's own level, which it does not offer, so MAPIE is the test
oracle of the split quantile (same width for a constant-variance Gaussian), not a dependency.
"""

from __future__ import annotations

import math

import numpy as np

from mola_ts.uncertainty.distribution import GaussianMixture

__all__ = ["ConformalCalibrator", "conformity_scores", "choose_method", "CONFORMAL_METHODS",
           "TRACKED"]

CONFORMAL_METHODS = ("split", "adaptive")
#: the coverages the adaptive method tracks from the start (others are added when asked for)
TRACKED = (0.5, 0.8, 0.9, 0.95)
_TOP = 1.0 - 1e-12  # the largest level used (a level of 1 is an infinite interval)


def conformity_scores(dist: GaussianMixture, y) -> np.ndarray:
    """``|2 F(y) - 1|``: the central level of ``dist`` whose interval just reaches ``y``."""
    return np.abs(2.0 * dist.cdf(y) - 1.0)


def _conformal_level(sorted_scores: np.ndarray, coverage: float) -> float:
    n = len(sorted_scores)
    k = math.ceil((n + 1) * coverage)
    if k < 1:
        return 0.0
    return _TOP if k > n else min(float(sorted_scores[k - 1]), _TOP)


class ConformalCalibrator:
    """Split or adaptive conformal correction of central intervals (module docstring).

    Parameters
    ----------
    method : {"split", "adaptive"}
    min_windows : int
        Below this many calibration windows the steps are pooled too.
    gamma : float
        Step size of the adaptive method.

    Attributes
    ----------
    scores_ : list of ndarray
        Sorted calibration scores per step (one shared array when pooled over steps).
    pooling_ : str
        "variables" or "steps and variables".
    alpha_ : dict
        Adaptive method: coverage -> miscoverage per step, updated by :meth:`observe`.
    """

    def __init__(self, method: str = "split", *, min_windows: int = 100, gamma: float = 0.01):
        self.method = method
        self.min_windows = min_windows
        self.gamma = gamma

    def fit(self, scores) -> ConformalCalibrator:
        """Calibrate on scores of shape ``(n_windows, steps, variables)`` (NaN: left out)."""
        if self.method not in CONFORMAL_METHODS:
            raise ValueError(f"method must be one of {CONFORMAL_METHODS}, got {self.method!r}")
        if not (isinstance(self.gamma, (int, float)) and 0 < self.gamma < 1):
            raise ValueError(f"gamma must be a float in (0, 1), got {self.gamma!r}")
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 3 or scores.shape[0] == 0:
            raise ValueError(f"scores must have shape (n_windows >= 1, steps, variables), got "
                             f"{scores.shape}")
        self.n_windows_, self.n_steps_ = scores.shape[0], scores.shape[1]
        pooled = self.n_windows_ < self.min_windows
        self.pooling_ = "steps and variables" if pooled else "variables"
        groups = [scores] if pooled else [scores[:, h] for h in range(self.n_steps_)]
        self.scores_ = [np.sort(g[np.isfinite(g)].ravel()) for g in groups]
        if any(len(s) == 0 for s in self.scores_):
            raise ValueError("a step has no finite calibration score")
        self.alpha_ = {c: np.full(self.n_steps_, 1.0 - c) for c in TRACKED} \
            if self.method == "adaptive" else {}
        return self

    def _step_scores(self, h: int) -> np.ndarray:
        return self.scores_[0] if len(self.scores_) == 1 else self.scores_[h]

    def levels(self, coverage: float) -> np.ndarray:
        """The corrected central level of every step for nominal ``coverage``, shape (steps,)."""
        c = float(coverage)
        if not 0 < c < 1:
            raise ValueError(f"coverage must lie in (0, 1), got {coverage!r}")
        if self.method == "adaptive":
            alpha = self.alpha_.setdefault(c, np.full(self.n_steps_, 1.0 - c))
            targets = np.clip(1.0 - alpha, 0.0, 1.0)
        else:
            targets = np.full(self.n_steps_, c)
        return np.array([_conformal_level(self._step_scores(h), t) if t < 1 else _TOP
                         for h, t in enumerate(targets)])

    def interval(self, dist: GaussianMixture, coverage: float = 0.9
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Corrected central interval of ``dist`` (batch ``(..., steps, variables)``)."""
        level = self.levels(coverage)[:, None]  # (steps, 1): broadcast over the variables
        return dist.ppf((1.0 - level) / 2.0), dist.ppf((1.0 + level) / 2.0)

    def quantiles(self, dist: GaussianMixture, alphas) -> np.ndarray:
        """Corrected quantiles: level ``a < 0.5`` is the lower end of the corrected central
        interval of coverage ``1 - 2a``, ``a > 0.5`` the upper end of ``2a - 1``, 0.5 the
        median. Shape ``batch_shape + (len(alphas),)``."""
        out = []
        for a in np.asarray(alphas, dtype=np.float64).ravel():
            if a == 0.5:
                out.append(dist.ppf(0.5))
                continue
            lo, hi = self.interval(dist, abs(1.0 - 2.0 * a))
            out.append(lo if a < 0.5 else hi)
        return np.stack(out, axis=-1)

    def observe(self, scores) -> None:
        """Adaptive method: realised scores of shape ``(steps, variables)`` (NaN where a step
        is not realised yet) update every tracked coverage's miscoverage per step."""
        if self.method != "adaptive":
            return
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape[0] != self.n_steps_ or scores.ndim != 2:
            raise ValueError(f"scores must have shape ({self.n_steps_}, variables), got "
                             f"{scores.shape}")
        seen = np.isfinite(scores).any(axis=1)
        for c, alpha in self.alpha_.items():
            err = (scores > self.levels(c)[:, None]).astype(float)
            err = np.where(np.isfinite(scores), err, np.nan)
            miss = np.nanmean(np.where(seen[:, None], err, 0.0), axis=1)
            alpha[seen] += self.gamma * ((1.0 - c) - miss[seen])

    def walk(self, scores, coverages=TRACKED) -> dict[float, np.ndarray]:
        """Forecast consecutive windows (one row apart, time order) as ``update`` would and
        return coverage -> corrected levels, shape ``(n_windows, steps)``.

        ``scores`` has shape ``(n_windows, steps, variables)``. Window ``i`` gets the current
        levels; then the row after its context arrives, which realises step ``h`` of window
        ``i - h``, and :meth:`observe` learns from it (split: the levels stay fixed). Mutates
        the calibrator like the same updates would.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 3 or scores.shape[1] != self.n_steps_:
            raise ValueError(f"scores must have shape (n_windows, {self.n_steps_}, variables), "
                             f"got {scores.shape}")
        n = scores.shape[0]
        coverages = [float(c) for c in coverages]
        levels = {c: np.empty((n, self.n_steps_)) for c in coverages}
        steps = np.arange(self.n_steps_)
        for i in range(n):
            for c in coverages:
                levels[c][i] = self.levels(c)
            if self.method == "adaptive":
                rows = np.full(scores.shape[1:], np.nan)
                ok = i - steps >= 0
                rows[ok] = scores[i - steps[ok], steps[ok]]
                self.observe(rows)
        return levels


def choose_method(scores, *, coverages=TRACKED, min_windows: int = 100,
                  gamma: float = 0.01) -> tuple[str, dict[str, float]]:
    """Split or adaptive, chosen on held-out windows alone (module docstring).

    ``scores`` (``(n_windows, steps, variables)``, consecutive windows in time order) is cut in
    two halves; each method is calibrated on the first and walked over the second. Returns the
    chosen method and each method's mean absolute coverage error on the second half.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 3 or scores.shape[0] < 4:
        raise ValueError("choosing a conformal method needs scores of shape (n_windows >= 4, "
                         f"steps, variables), got {scores.shape}")
    half = scores.shape[0] // 2
    held = scores[half:]
    seen = np.isfinite(held)
    errors = {}
    for method in CONFORMAL_METHODS:
        cal = ConformalCalibrator(method, min_windows=min_windows, gamma=gamma)
        levels = cal.fit(scores[:half]).walk(held, coverages)
        errors[method] = float(np.mean([
            abs(float(np.mean((held <= levels[c][:, :, None])[seen])) - c) for c in levels]))
    chosen = "adaptive" if errors["adaptive"] < errors["split"] else "split"
    return chosen, errors
