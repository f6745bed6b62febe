"""Conformal correction of the neural forecasters' intervals (the ``conformal`` parameter).

This module owns :class:`CalibratedMixin`, the part of
:class:`~mola_ts.forecast.neural.NeuralForecaster` that calibrates the predictive mixture's
central intervals on the validation windows after the fit, with
:class:`~mola_ts.uncertainty.conformal.ConformalCalibrator`:

- ``conformal="auto"`` (default when there is a predictive distribution): "split" or
  "adaptive", whichever covers the second half of the validation windows closer to nominal when
  calibrated on the first half (:func:`~mola_ts.uncertainty.conformal.choose_method`), then
  calibrated on all of them; ``conformal_.method`` is the choice, ``conformal_.selection_`` the
  two coverage errors;
- ``conformal="split"``: split conformal on the validation windows, per horizon step pooled
  over the variables (and over the steps too when there are fewer than 100 validation windows;
  ``conformal_.pooling_`` says which);
- ``conformal="adaptive"``: the same start, then adaptive conformal inference learns from the
  realised values passed through ``update(y_new)``;
- ``conformal=None``: the mixture's own intervals.

``predict_interval`` and ``predict_quantiles`` give the corrected values; ``predict_distribution``
stays the raw mixture (its CRPS and NLL are the model's own).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..data import sliding_windows
from ..uncertainty.conformal import ConformalCalibrator, choose_method, conformity_scores
from .fitting import INFERENCE_BATCH

__all__ = ["CalibratedMixin", "CONFORMAL"]

#: values of the ``conformal`` parameter
CONFORMAL = (None, "auto", "split", "adaptive")


class CalibratedMixin:
    """Conformal correction of ``predict_interval`` / ``predict_quantiles`` (module docstring).

    Needs ``_forecast_distribution`` (the raw mixture of windows in data units),
    ``_context_length`` and ``horizon``; the ``conformal`` parameter is optional (absent: None).
    """

    def _conformal(self) -> str | None:
        value = getattr(self, "conformal", None)
        if value not in CONFORMAL:
            raise ValueError(f"conformal must be one of {CONFORMAL}, got {value!r}")
        return value

    def _window_scores(self, values: np.ndarray) -> np.ndarray:
        """Conformity scores of every window of ``values``, shape (n_windows, horizon, C)."""
        x, y = sliding_windows(values, self._context_length(), self.horizon)
        out = []
        for first in range(0, len(x), INFERENCE_BATCH):
            rows = slice(first, first + INFERENCE_BATCH)
            dist = self._forecast_distribution(np.asarray(x[rows], dtype=np.float64))
            out.append(conformity_scores(dist, y[rows]))
        return np.concatenate(out)

    def _fit_conformal(self, train_values: np.ndarray, val_values: np.ndarray | None) -> None:
        self.conformal_ = None
        method = self._conformal()
        if method is None or self._uncertainty() is None:
            return
        if val_values is None or len(val_values) < self._context_length() + self.horizon:
            warnings.warn(
                f"conformal={method!r} calibrates on validation windows and there are none "
                "(give y_val or a validation_fraction > 0): the intervals are the mixture's own",
                UserWarning, stacklevel=4)
            return
        scores = self._window_scores(val_values)
        selection = None
        if method == "auto":
            if len(scores) < 4:
                warnings.warn(
                    f"conformal='auto' chooses between split and adaptive on the validation "
                    f"windows and there are {len(scores)} (at least 4 are needed): split conformal "
                    "is used; give a longer y_val to choose", UserWarning, stacklevel=4)
                method = "split"
            else:
                method, selection = choose_method(scores)
        self.conformal_ = ConformalCalibrator(method).fit(scores)
        if selection is not None:
            self.conformal_.selection_ = selection
        # the adaptive method scores forecasts made before an update: keep their history
        tail = self._context_length() + self.horizon - 1
        self.conformal_history_ = np.array(train_values[-tail:], dtype=np.float64)

    def calibrate(self, y_val):
        """(Re)calibrate the conformal correction on the windows of ``y_val`` (e.g. after
        :meth:`sub_ensemble`, which drops the ensemble's calibration); returns self."""
        series, _ = self._read(y_val, "y_val", min_rows=self._context_length() + self.horizon,
                               fitted=True)
        history = getattr(self, "conformal_history_", None)
        self._fit_conformal(self.context_ if history is None else history, series.values)
        return self

    def _interval(self, dist, coverage: float):
        cal = getattr(self, "conformal_", None)
        return dist.interval(coverage) if cal is None else cal.interval(dist, coverage)

    def _quantiles(self, dist, alphas):
        cal = getattr(self, "conformal_", None)
        return dist.quantiles(alphas) if cal is None else cal.quantiles(dist, alphas)

    def _observe_realised(self, previous_context: np.ndarray, new_values: np.ndarray) -> None:
        """Adaptive conformal: score the forecasts the new rows realise, oldest row first."""
        cal = getattr(self, "conformal_", None)
        if cal is None or cal.method != "adaptive":
            return
        ctx, horizon = self._context_length(), self.horizon
        history = getattr(self, "conformal_history_", previous_context)
        series = np.concatenate([history, np.asarray(new_values, dtype=np.float64)])
        start = len(history)  # the first new row
        ends = np.arange(max(ctx, start - horizon + 1), len(series))  # forecasts made at e
        windows = np.stack([series[e - ctx:e] for e in ends])
        dist = self._forecast_distribution(windows)
        target = np.full((len(ends), horizon, series.shape[1]), np.nan)
        for i, e in enumerate(ends):
            seen = series[e:e + horizon]
            target[i, :len(seen)] = seen
        scores = conformity_scores(dist, np.nan_to_num(target))
        scores[np.isnan(target)] = np.nan
        for p in range(start, len(series)):  # each new row realises step p - e of forecast e
            rows = np.full((horizon, series.shape[1]), np.nan)
            for i, e in enumerate(ends):
                if 0 <= p - e < horizon:
                    rows[p - e] = scores[i, p - e]
            cal.observe(rows)
        self.conformal_history_ = series[-(ctx + horizon - 1):].copy()
