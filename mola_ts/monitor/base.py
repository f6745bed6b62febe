"""What every monitor shares: input checks, the alarm rule and the detection-metric helpers.

Sign convention (like pyod): ``score_samples`` is higher for more abnormal samples,
``decision_function = score_samples - threshold_`` is positive exactly where ``predict`` raises
an alarm (1); 0 means no alarm. Every score is finite: samples a monitor cannot score yet (its
warm-up: the first ``window - 1`` of a MOLA run, the first ``order`` of a residual monitor's,
the first ``n_lags`` of a dynamic PCA's) are flagged ``warmup = 1``, scored 0 and never alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ..data import FAULT_ONSET, ValidatedSeries, check_columns_match, check_series
from ..metrics import detection_delay, false_alarm_rate, fault_detection_rate

__all__ = ["MonitorMixin", "FitRuns", "validate_fit_runs", "check_finite_scale"]


@dataclass
class FitRuns:
    """Validated training runs: float64 copies, their indices and the shared column names."""

    values: list[np.ndarray]
    indices: list[pd.Index | None]
    columns: list[str]
    named: bool  # True when the columns came from a DataFrame


def validate_fit_runs(X, *, min_rows: int, what_for: str) -> FitRuns:
    """Check ``X`` (one run, or a list/tuple of runs with the same columns) for ``fit``.

    The concatenated runs must hold at least ``min_rows`` rows; each run is checked by
    :func:`mola_ts.data.check_series` (NaN, inf, dtype, shape, sorted unique timestamps).
    """
    # a list holding any DataFrame, Series or 2-D array is a list of runs; a list of numbers or
    # of 1-D rows is one run (a nested list of rows)
    is_runs = isinstance(X, (list, tuple)) and len(X) > 0 and any(
        isinstance(run, (pd.DataFrame, pd.Series))
        or (isinstance(run, np.ndarray) and run.ndim == 2) for run in X)
    runs = list(X) if is_runs else [X]
    checked: list[ValidatedSeries] = []
    for i, run in enumerate(runs):
        name = "X" if len(runs) == 1 else f"X[{i}]"
        checked.append(check_series(run, name=name, min_rows=1))
    columns = checked[0].columns
    named = checked[0].index is not None
    for i, series in enumerate(checked[1:], start=1):
        if series.values.shape[1] != len(columns):
            raise ValueError(f"X[{i}] has {series.values.shape[1]} columns, X[0] has "
                             f"{len(columns)}; every run must have the same columns")
        # runs with column names must agree by name (and order); an array is matched by position
        if named and series.index is not None and series.columns != columns:
            raise ValueError(f"X[{i}] has the columns {series.columns[:5]}..., X[0] has "
                             f"{columns[:5]}...; every run must have the same columns in the "
                             "same order")
    total = sum(len(s.values) for s in checked)
    if total < min_rows:
        raise ValueError(f"X has {total} rows; at least {min_rows} are needed ({what_for}) "
                         f"(n_samples={total})")
    return FitRuns([s.values for s in checked], [s.index for s in checked], columns,
                   named=named)


def check_finite_scale(mean: np.ndarray, scale: np.ndarray, columns: list[str], what: str
                       ) -> None:
    """Raise when a column is constant or too large to standardise in float64.

    ``what`` names the data the mean and standard deviation ``scale`` came from.
    """
    overflow = ~np.isfinite(mean) | np.isinf(scale)
    # constant up to rounding: the standard deviation of identical values is a few ulps of the
    # mean, not 0, and would blow the standardised values up to noise
    with np.errstate(invalid="ignore"):
        flat = ~(scale > 64 * np.finfo(np.float64).eps * np.abs(mean))
    constant = [columns[j] for j in np.flatnonzero(~overflow & flat)]
    if constant:
        raise ValueError(f"X has constant columns{what} {constant[:8]}; drop them (they carry no "
                         "information to monitor)")
    huge = [columns[j] for j in np.flatnonzero(overflow)]
    if huge:
        raise ValueError(f"X has columns{what} whose mean or standard deviation overflows "
                         f"float64 {huge[:8]}; rescale them")


def _normalized(value):
    """A parameter value in its JSON form (tuples as lists, numpy scalars as Python numbers)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalized(v) for k, v in value.items()}
    return value


class MonitorMixin:
    """``decision_function``, ``predict`` and detection metrics from ``score_samples``."""

    #: parameters whose value at fit time the fitted state depends on (checked when scoring)
    _scoring_params: tuple[str, ...] = ()
    _refit_hint = "call fit again"

    def _remember_scoring_params(self) -> None:
        params = self.get_params(deep=False)
        self.scoring_params_ = {k: _normalized(params[k]) for k in self._scoring_params}

    def _check_scoring_params(self) -> None:
        """Raise when a parameter the fitted state depends on was changed by set_params."""
        check_is_fitted(self)
        saved = getattr(self, "scoring_params_", None)
        if saved is None:  # a model saved before this check existed
            return
        # read the attributes directly: get_params inspects the signature on every call,
        # which a stream pays on every sample
        params = {k: getattr(self, k) for k in saved}
        changed = [k for k, v in saved.items() if _normalized(params[k]) != v]
        if changed:
            raise ValueError(
                f"{type(self).__name__}: {changed} changed since fit ("
                + ", ".join(f"{k}={saved[k]!r} -> {params[k]!r}" for k in changed[:4])
                + f"); the fitted state still follows the old values: {self._refit_hint}")

    def _check_X(self, X, *, min_rows: int, what_for: str) -> ValidatedSeries:
        check_is_fitted(self)
        self._check_scoring_params()
        series = check_series(X, name="X", min_rows=min_rows, what_for=what_for)
        return check_columns_match(series, self.feature_names_, name="X",
                                   owner=type(self).__name__,
                                   by_name=self.named_features_)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - threshold_``: > 0 exactly where an alarm is raised."""
        return self.score_samples(X) - self.threshold_

    def predict(self, X) -> np.ndarray:
        """Alarms: 1 where the score exceeds ``threshold_``, else 0 (also for unscored samples)."""
        scores = self.decision_function(X)
        # an infinite score (a statistic that overflowed) alarms; NaN (unscored) does not
        return np.where(~np.isnan(scores) & (scores > 0), 1, 0)

    def detection_scores(self, X, onset: int = FAULT_ONSET, run: int = 3) -> dict[str, float]:
        """FDR, FAR before ``onset`` and detection delay of one test run (spec §5).

        ``fdr``: share of alarms among samples ``onset+1 ..``; ``far_before_onset``: share of
        alarms among the first ``onset`` samples; ``delay_samples``: samples from the onset to
        the first alarm starting a run of ``run`` alarms (NaN if none).
        """
        alarms = self.predict(X)
        return {
            "fdr": fault_detection_rate(alarms, onset),
            "far_before_onset": false_alarm_rate(alarms, stop=onset),
            "delay_samples": detection_delay(alarms, onset, run),
        }

    # persistence hooks (SaveLoadMixin, next in the MRO of every monitor)
    def _state_to_save(self) -> dict:
        state = super()._state_to_save()
        state.pop("feature_names_in_", None)  # object array; rebuilt from feature_names_
        return state

    def _restore_state(self, state: dict) -> None:
        super()._restore_state(state)
        if self.named_features_:
            self.feature_names_in_ = np.asarray(self.feature_names_, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = False
        tags.requires_fit = True
        return tags
