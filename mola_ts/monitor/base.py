"""What every monitor shares: input checks, the alarm rule and the detection-metric helpers.

Sign convention (like pyod): ``score_samples`` is higher for more abnormal samples,
``decision_function = score_samples - threshold_`` is positive exactly where ``predict`` raises
an alarm (1); 0 means no alarm. Every score is finite: samples a monitor cannot score yet (its
warm-up: the first ``window - 1`` of a MOLA run, the first ``order`` of a residual monitor's,
the first ``n_lags`` of a dynamic PCA's) are flagged ``warmup = 1``, scored 0 and never alarm.

pyod's habits (``docs/conventions.md`` has the table): after ``fit``, ``decision_scores_`` holds
``score_samples`` of the training data and ``labels_`` its alarms (1 = alarm, as pyod's 1 =
outlier); ``fit_predict(X)`` returns ``labels_``; ``predict_proba(X)`` returns pyod's two
columns ``[P(normal), P(fault)]`` from the calibrated fault probability of
:meth:`MonitorMixin.predict_fault_probability`. One difference on purpose: pyod's
``decision_function`` is the raw score, ours is ``score_samples - threshold_`` (scikit-learn's
outlier detectors centre theirs too), so its sign alone says alarm or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ..data import FAULT_ONSET, ValidatedSeries, check_columns_match, check_series
from ..metrics import detection_delay, false_alarm_rate, fault_detection_rate

__all__ = ["MonitorMixin", "FitRuns", "validate_fit_runs", "check_finite_scale",
           "check_random_state"]


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


def check_random_state(value) -> None:
    """Raise a TypeError unless ``value`` is an int, a NumPy RandomState or Generator, or None.

    The seed itself is drawn at fit (:func:`mola_ts.training.resolve_seed`); only an int makes
    two fits give the same model.
    """
    if value is None or isinstance(value, (np.random.RandomState, np.random.Generator)):
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"random_state must be an int, a numpy RandomState or Generator, or "
                        f"None; got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"random_state must be a non-negative int, got {value}")


#: (coverage, prior_fault, tail_fraction) of the fault calibration fitted with the monitor
_DEFAULT_CALIBRATION = (0.9, None, None)
#: the default tail: the top 10 % of the held-out scores, or the top 11 of fewer than 110
_TAIL_FRACTION, _TAIL_VALUES = 0.1, 11


def _normalized(value):
    """A parameter value in its JSON form (tuples as lists, numpy scalars as Python numbers)."""
    if isinstance(value, (np.random.RandomState, np.random.Generator)):
        return f"<{type(value).__name__}>"  # the seed drawn from it is ``seed_``
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalized(v) for k, v in value.items()}
    return value


class MonitorMixin:
    """``decision_function``, ``predict`` and detection metrics from ``score_samples``."""

    #: statistics columns copied into ``predict_fault_probability``'s frame
    _probability_columns: tuple[str, ...] = ("score",)
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

    # -- pyod's habits -----------------------------------------------------------------------
    def _score_min_rows(self) -> int:
        """Rows ``score_samples`` needs (a shorter training run is all warm-up: scores 0)."""
        return 1

    def _set_training_scores(self, runs: FitRuns) -> None:
        """``decision_scores_``, ``labels_`` and the default fault calibration (end of fit).

        Each run is scored on its own (its first rows are warm-up, as in any scored run), with
        the final model: in-sample scores, so ``labels_`` alarms less often than ``alpha``,
        which the threshold was set for on out-of-fold (or held-out) scores.
        """
        parts = []
        for values, index in zip(runs.values, runs.indices, strict=True):
            if len(values) < self._score_min_rows():
                parts.append(np.zeros(len(values)))
                continue
            X = pd.DataFrame(values, index=index, columns=runs.columns) if runs.named else values
            parts.append(self.score_samples(X))
        self.decision_scores_ = np.concatenate(parts)
        self.labels_ = np.where(self.decision_scores_ > self.threshold_, 1, 0)
        self._fault_calibration = self._new_fault_calibration(*_DEFAULT_CALIBRATION,
                                                              lenient=True)

    def fit_predict(self, X, y=None) -> np.ndarray:
        """Fit on ``X`` and return the alarms of its rows (``labels_``; 1 = alarm), as pyod.

        ``X`` may be one run or a list of runs; the labels of a list are concatenated.
        """
        return self.fit(X).labels_

    def _held_out_scores(self) -> np.ndarray:
        """Scores of in-control samples the model was not fitted on (the probability's basis).

        Monitors with cross-fitted or held-out limits return those scores; the default (a
        parametric limit, where there are none) is the in-sample ``decision_scores_``.
        """
        return self.decision_scores_

    def _new_fault_calibration(self, coverage: float, prior: float | None,
                               tail_fraction: float | None, *, lenient: bool = False):
        """A FaultProbability fitted on the held-out scores (``lenient``: or, when the scores
        are too few, the reason as a string, raised when a probability is asked for)."""
        from ..uncertainty import FaultProbability

        held = np.asarray(self._held_out_scores(), dtype=np.float64)
        held = held[np.isfinite(held)]
        prior = self.alpha if prior is None else prior
        if tail_fraction is None:
            tail_fraction = min(max(_TAIL_FRACTION, _TAIL_VALUES / max(len(held), 1)), 0.9)
        try:
            return FaultProbability(prior_fault=prior, coverage=coverage,
                                    tail_fraction=tail_fraction).fit(held)
        except ValueError as exc:
            if not lenient:
                raise
            return f"the fault probability's tail model of the in-control scores: {exc}"

    def _calibration_for(self, coverage: float, prior: float | None,
                         tail_fraction: float | None):
        check_is_fitted(self)
        if (coverage, prior, tail_fraction) == _DEFAULT_CALIBRATION:
            calibration = getattr(self, "_fault_calibration", None)
            if calibration is None:  # a file written before pyod's attributes
                calibration = self._new_fault_calibration(coverage, prior, tail_fraction)
            if isinstance(calibration, str):
                raise ValueError(calibration)
            return calibration
        return self._new_fault_calibration(coverage, prior, tail_fraction)

    def predict_fault_probability(self, X, *, coverage: float = 0.9,
                                  prior_fault: float | None = None,
                                  tail_fraction: float | None = None) -> pd.DataFrame:
        """Calibrated probability of fault per sample with its credible band (uncertainty §4).

        A :class:`~mola_ts.uncertainty.FaultProbability` (a generalised-Pareto tail of the
        in-control scores and a Bayes factor against the prior ``prior_fault``, default
        ``alpha``) is fitted on the in-control scores behind the threshold: out-of-fold with
        ``limit="crossfit"``, held out with a validation or hold-out limit, the in-sample
        ``decision_scores_`` with a parametric limit. Its tail is the top ``tail_fraction`` of
        those scores (None: the top 10 %, or the top 11 scores when there are fewer than 110).
        The default settings' model is fitted with the monitor; others on each call.

        Returns
        -------
        DataFrame
            Indexed like ``X``: ``score`` (MOLA: ``PFI`` too), ``p_value`` (the in-control
            tail probability of the score), ``fault_probability`` and its band
            ``fault_probability_lower`` / ``_upper`` (the ``coverage`` credible interval over
            the tail fit). Warm-up rows get p-value 1 and probability 0.

        Raises
        ------
        ValueError
            When the in-control scores are too few for the tail model (the message says how
            many are needed).
        """
        calibration = self._calibration_for(coverage, prior_fault, tail_fraction)
        stats = self.statistics(X)
        score = stats["score"].to_numpy(dtype=np.float64)
        out = pd.DataFrame({c: stats[c].to_numpy() for c in self._probability_columns},
                           index=stats.index)
        point, lower, upper = calibration.fault_probability(score)
        warm = stats["warmup"].to_numpy() == 1
        out["p_value"] = np.where(warm, 1.0, calibration.tail_probability(score))
        out["fault_probability"] = np.where(warm, 0.0, point)
        out["fault_probability_lower"] = np.where(warm, 0.0, lower)
        out["fault_probability_upper"] = np.where(warm, 0.0, upper)
        return out

    def predict_proba(self, X) -> np.ndarray:
        """pyod's ``predict_proba``: columns ``[P(normal), P(fault)]`` per sample.

        ``P(fault)`` is ``predict_fault_probability(X)["fault_probability"]`` (the prior is
        ``alpha``); the two columns sum to 1. Alarms (:meth:`predict`) follow ``threshold_``,
        not ``P(fault) > 0.5``: the two are different operating points.

        Returns
        -------
        ndarray of shape (n_samples, 2)
        """
        p = self.predict_fault_probability(X)["fault_probability"].to_numpy(dtype=np.float64)
        return np.column_stack([1.0 - p, p])

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
        saved = state.get("scoring_params_")
        if saved is not None and isinstance(saved.get("random_state"), str):
            # a generator's seed is saved as the int it gave (the saved random_state)
            state["scoring_params_"] = {**saved, "random_state": int(self.seed_)}
        return state

    def _restore_state(self, state: dict) -> None:
        super()._restore_state(state)
        if self.named_features_:
            self.feature_names_in_ = np.asarray(self.feature_names_, dtype=object)
        if hasattr(self, "decision_scores_"):  # files written before pyod's attributes lack it
            self._fault_calibration = self._new_fault_calibration(*_DEFAULT_CALIBRATION,
                                                                  lenient=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = False
        tags.requires_fit = True
        return tags
