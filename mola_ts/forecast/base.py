"""What every forecaster shares: input formats, validation, future timestamps, rolling windows.

A forecaster is fitted on a wide series (rows = time, one column per variable: a DataFrame with a
DatetimeIndex, a Series, or an array) or on Nixtla's long ``unique_id, ds, y`` frame, and
``predict(y_context=None)`` returns the ``horizon`` steps after the end of the series it was
fitted on (or of ``y_context``) with future timestamps, in the layout it was fitted with.
Subclasses implement ``_fit(values, val_values)``, ``_forecast(windows)`` and
``_context_length()``; this class never modifies the user's data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..data import (
    check_columns_match,
    check_series,
    future_index,
    sliding_windows,
    to_long,
    to_wide,
)
from ..metrics import mse

__all__ = ["BaseForecaster", "LONG_COLUMNS"]

LONG_COLUMNS = ("unique_id", "ds", "y")


def _is_long(y) -> bool:
    return isinstance(y, pd.DataFrame) and set(LONG_COLUMNS) <= set(y.columns) and \
        len(y.columns) == 3


class BaseForecaster(BaseEstimator):
    """Base class of the forecasters: ``fit(y)``, ``predict(y_context=None)``, ``score(y)``.

    Subclasses define ``horizon`` (an ``__init__`` parameter) and the hooks ``_fit``,
    ``_forecast`` and ``_context_length``.
    """

    # -- hooks -------------------------------------------------------------------------------
    def _context_length(self) -> int:
        """Rows of history one forecast reads (the lookback)."""
        raise NotImplementedError

    def _min_fit_rows(self) -> int:
        return self._context_length() + self.horizon

    def _fit(self, values: np.ndarray, val_values: np.ndarray | None) -> None:
        raise NotImplementedError

    def _forecast(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts (N, horizon, C) from context windows (N, context, C), original units."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------
    def _check_horizon(self) -> None:
        h = self.horizon
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
            raise ValueError(f"horizon must be a positive integer, got {h!r}")

    def _read(self, y, name: str, *, min_rows: int, what_for: str = "", fitted: bool = False):
        """Validate ``y`` (wide, long or array) into a ValidatedSeries; remember the layout."""
        long = _is_long(y)
        if long:
            y = to_wide(y)
        series = check_series(y, name=name, min_rows=min_rows, what_for=what_for)
        if fitted:
            series = check_columns_match(series, self.columns_, name=name)
        return series, long

    # -- public API --------------------------------------------------------------------------
    def fit(self, y, y_val=None):
        """Fit on the series ``y`` (validation series ``y_val`` for early stopping, optional).

        Parameters
        ----------
        y : DataFrame (DatetimeIndex, one column per variable), Series, ndarray or long frame
            The training series, in time order. Never modified.
        y_val : same layouts as ``y``, optional
            A validation series (its first ``lookback`` rows serve as history only). When
            omitted, models that early-stop carve it from the end of ``y``
            (``validation_fraction``).

        Returns
        -------
        self
        """
        self._check_horizon()
        need = self._min_fit_rows()
        series, long = self._read(y, "y", min_rows=need,
                                  what_for=self._rows_reason())
        self.columns_ = list(series.columns)
        self.n_features_in_ = len(self.columns_)
        if isinstance(y, pd.DataFrame) and not long:
            self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        self.input_format_ = "long" if long else "wide"
        val_values = None
        if y_val is not None:
            val, _ = self._read(y_val, "y_val", min_rows=need, what_for=self._rows_reason(),
                                fitted=True)
            val_values = val.values
        self._remember_context(series)
        self._fit(series.values, val_values)
        return self

    def _rows_reason(self) -> str:
        return f"context {self._context_length()} + horizon {self.horizon}"

    def _remember_context(self, series) -> None:
        ctx = self._context_length()
        self.context_length_ = ctx
        self.context_ = series.values[-ctx:].copy()
        self.last_index_ = series.index[-max(3, ctx):] if series.index is not None else None
        self.n_rows_ = len(series.values)

    def _context_from(self, y_context):
        """Context window (ctx, C) and the index it ends with, from ``y_context`` or fit."""
        ctx = self._context_length()
        if y_context is None:
            return self.context_, self.last_index_, self.n_rows_
        series, _ = self._read(y_context, "y_context", min_rows=ctx,
                               what_for=f"the model reads {ctx} rows of history", fitted=True)
        return series.values[-ctx:], series.index, len(series.values)

    def predict(self, y_context=None):
        """Forecast the ``horizon`` steps after the end of the fitted series or of ``y_context``.

        Parameters
        ----------
        y_context : DataFrame, Series, ndarray or long frame, optional
            Recent history (at least the model's context length of rows, same columns as in
            fit). Defaults to the end of the series given to ``fit``.

        Returns
        -------
        DataFrame
            ``horizon`` rows indexed by the future timestamps (or integer positions), one
            column per variable; in the long ``unique_id, ds, y`` layout when the model was
            fitted on a long frame.
        """
        check_is_fitted(self, "context_")
        window, index, n_rows = self._context_from(y_context)
        forecast = self._forecast(window[None].astype(np.float64))[0]
        idx = future_index(index, n_rows, self.horizon)
        frame = pd.DataFrame(forecast, index=idx, columns=self.columns_)
        if self.input_format_ == "long":
            return to_long(frame)
        return frame

    def predict_windows(self, y, *, stride: int = 1) -> np.ndarray:
        """Forecasts of every rolling window of ``y`` (the evaluation protocol).

        Window ``i`` reads rows ``[i*stride, i*stride + context)`` and forecasts the next
        ``horizon`` rows. Returns an array (n_windows, horizon, n_variables).
        """
        check_is_fitted(self, "context_")
        ctx = self._context_length()
        series, _ = self._read(y, "y", min_rows=ctx + self.horizon, fitted=True,
                               what_for=self._rows_reason())
        x, _ = sliding_windows(series.values, ctx, self.horizon, stride)
        return self._forecast(np.ascontiguousarray(x))

    def score(self, y) -> float:
        """Negative MSE of the rolling-window forecasts of ``y`` (higher is better)."""
        check_is_fitted(self, "context_")
        ctx = self._context_length()
        series, _ = self._read(y, "y", min_rows=ctx + self.horizon, fitted=True,
                               what_for=self._rows_reason())
        _, target = sliding_windows(series.values, ctx, self.horizon)
        return -mse(target, self.predict_windows(y))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.input_tags.allow_nan = False
        tags.target_tags.required = False
        tags.non_deterministic = False
        return tags

