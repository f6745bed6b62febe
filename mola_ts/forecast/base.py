"""What every forecaster shares: input formats, validation, future timestamps, rolling windows.

A forecaster is fitted on a wide series (rows = time, one column per variable: a DataFrame with a
DatetimeIndex, a Series, or an array) or on Nixtla's long ``unique_id, ds, y`` frame, and
``predict(y_context=None)`` returns the ``horizon`` steps after the end of the series it was
fitted on (or of ``y_context``) with future timestamps, in the layout it was fitted with.
Subclasses implement ``_fit(values, val_values)``, ``_forecast(windows)`` and
``_context_length()``; this class never modifies the user's data.

Probabilistic forecasts (uncertainty spec §4) are implemented here once for every forecaster
whose ``_forecast_distribution(windows)`` returns a :class:`~mola_ts.uncertainty.GaussianMixture`
per window, step and variable: ``predict_distribution``, ``predict_interval`` and
``predict_quantiles`` (sktime's column layouts) and ``predict_windows_distribution``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..data import (
    check_columns_match,
    check_number,
    check_series,
    future_index,
    sliding_windows,
    to_long,
    to_wide,
)
from ..metrics import mse
from ..uncertainty import GaussianMixture
from .covariates import CutoffMixin, covariate_window, fit_covariates, series_covariates
from .frames import check_fh, check_layout, from_periods, standard_scale, to_periods

__all__ = ["BaseForecaster", "LONG_COLUMNS"]

LONG_COLUMNS = ("unique_id", "ds", "y")


def _levels(values, name: str, default) -> list[float]:
    """A float or a sequence of floats in (0, 1) as a list (``coverage`` / ``alpha``)."""
    if values is None:
        values = default
    items = [values] if np.ndim(values) == 0 else list(np.asarray(values, dtype=object).ravel())
    if not items:
        raise ValueError(f"{name} must be a float in (0, 1) or a non-empty list of them, got []")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must hold floats in (0, 1), got {v!r} "
                            f"({type(v).__name__})")
        if not 0.0 < float(v) < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {v!r}")
        out.append(float(v))
    return out


def _take(dist: GaussianMixture, i: int) -> GaussianMixture:
    """Window ``i`` of a batch of per-window mixtures (the leading batch axis)."""
    return GaussianMixture(dist.means[i], dist.variances[i], dist.weights[i],
                           noise_variances=dist.noise_variances[i])


def _check_time_index(index: pd.Index | None, what: str) -> None:
    """Forecasts are placed after the last timestamp: the index must be time-like and ordered.

    A DatetimeIndex (checked for order by ``check_series``) or increasing integer positions;
    anything else (strings, floats, periods) raises a TypeError saying how to convert it.
    """
    if index is None or isinstance(index, pd.DatetimeIndex):
        return
    if pd.api.types.is_integer_dtype(index) and not pd.api.types.is_bool_dtype(index):
        steps = np.diff(np.asarray(index, dtype=np.int64))
        if (steps <= 0).any():
            i = int(np.flatnonzero(steps <= 0)[0])
            raise ValueError(
                f"{what} must increase strictly (integer time positions): position {i + 1} "
                f"holds {index[i + 1]} after {index[i]}; sort the rows or drop duplicates"
            )
        return
    raise TypeError(
        f"{what} must be a DatetimeIndex or integer time positions (forecasts are placed after "
        f"the last one), got {type(index).__name__} of dtype {index.dtype}; convert it with "
        "pd.to_datetime (a PeriodIndex is read as it is) or drop it with "
        "reset_index(drop=True)"
    )


def _is_long(y) -> bool:
    return isinstance(y, pd.DataFrame) and set(LONG_COLUMNS) <= set(y.columns) and \
        len(y.columns) == 3


class BaseForecaster(CutoffMixin, BaseEstimator):
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

    def _forecast_distribution(self, windows: np.ndarray) -> GaussianMixture:
        """Predictive distribution, batch shape (N, horizon, C), of context windows (N, context,
        C), original units. Forecasters without one raise a ValueError saying what to use."""
        raise ValueError(
            f"{type(self).__name__} has no predictive distribution; probabilistic forecasts "
            "come from DirectForecaster and MoLAForecaster fitted with uncertainty='laplace' "
            "(or 'noise')"
        )

    def _check_covariates_supported(self) -> None:
        """Raise a ValueError when this forecaster cannot use covariates (X, calendar)."""
        raise ValueError(
            f"{type(self).__name__} does not use covariates (X or calendar features); "
            "DirectForecaster and MoLAForecaster with the itransformer backbone do"
        )

    # -- helpers -----------------------------------------------------------------------------
    def _interval(self, dist: GaussianMixture, coverage: float):
        """The central interval ``predict_interval`` reports (a calibrated subclass corrects
        it)."""
        return dist.interval(coverage)

    def _quantiles(self, dist: GaussianMixture, alphas):
        return dist.quantiles(alphas)

    def _check_horizon(self) -> None:
        check_number(self.horizon, "horizon", min_val=1)

    def _read(self, y, name: str, *, min_rows: int, what_for: str = "", fitted: bool = False):
        """Validate ``y`` (wide, long or array) into a ValidatedSeries; remember the layout.

        After fit, a frame's columns are matched to the fitted ones by name (reordered when
        only their order differs) when the model was fitted on named columns (a DataFrame or
        a long frame), else by position.
        """
        y, period = from_periods(y)
        long = _is_long(y)
        if long:
            y = to_wide(y)
        else:
            check_layout(y, name, LONG_COLUMNS)
        series = check_series(y, name=name, min_rows=min_rows, what_for=what_for)
        _check_time_index(series.index, f"{name}'s 'ds' column" if long else f"{name}'s index")
        if fitted:
            named = getattr(self, "feature_names_in_", None) is not None or \
                self.input_format_ == "long"
            series = check_columns_match(series, self.columns_, name=name, by_name=named)
        else:
            self.period_freq_ = period
        return series, long

    # -- public API --------------------------------------------------------------------------
    def fit(self, y, y_val=None, *, X=None, X_val=None):
        """Fit on the series ``y`` (validation series ``y_val`` for early stopping, optional).

        Parameters
        ----------
        y : DataFrame (DatetimeIndex, one column per variable), Series, ndarray or long frame
            The training series, in time order. Never modified.
        y_val : same layouts as ``y``, optional
            A validation series (its first ``lookback`` rows serve as history only). When
            omitted, models that early-stop carve it from the end of ``y``
            (``validation_fraction``).
        X, X_val : DataFrame, Series or ndarray, optional
            Past covariates observed alongside ``y`` (and ``y_val``), one row per row; read by
            the model, never forecast (see :mod:`mola_ts.forecast.covariates`). Only the
            iTransformer-based forecasters take them; others raise a ValueError.

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
        self.y_mean_, self.y_scale_ = standard_scale(series.values)
        val = None
        if y_val is not None:
            val, _ = self._read(y_val, "y_val", min_rows=need, what_for=self._rows_reason(),
                                fitted=True)
        cov, cov_val = fit_covariates(self, series, X, val, X_val)
        self._remember_context(series)
        values = series.values if cov is None else np.hstack([series.values, cov])
        val_values = None if val is None else (
            val.values if cov_val is None else np.hstack([val.values, cov_val]))
        self._fit(values, val_values)
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

    def _model_window(self, y_context, X):
        """The window the network reads (targets, then covariates), its index and row count."""
        window, index, n_rows = self._context_from(y_context)
        if X is None and y_context is None and getattr(self, "covariate_context_", None) \
                is not None:
            X = self.covariate_context_
        cov = covariate_window(self, X, index=index, what="predict")
        return (window if cov is None else np.hstack([window, cov])), index, n_rows

    def predict(self, y_context=None, *, X=None, fh=None):
        """Forecast the ``horizon`` steps after the end of the fitted series or of ``y_context``.

        Parameters
        ----------
        y_context : DataFrame, Series, ndarray or long frame, optional
            Recent history (at least the model's context length of rows, same columns as in
            fit). Defaults to the end of the series given to ``fit`` (or of the last
            :meth:`update`).
        X : DataFrame, Series or ndarray, optional
            With a model fitted with covariates and a ``y_context``: the covariates of the
            lookback rows ending at the cutoff (the last ``lookback`` rows are read). Without
            ``y_context`` the stored ones are used.
        fh : int or sequence of int, optional
            Steps ahead to return (1-based, within the fitted horizon); default all.

        Returns
        -------
        DataFrame
            ``horizon`` rows indexed by the future timestamps (or integer positions), one
            column per variable; in the long ``unique_id, ds, y`` layout when the model was
            fitted on a long frame.
        """
        check_is_fitted(self, "context_")
        rows = check_fh(fh, self.horizon)
        window, index, n_rows = self._model_window(y_context, X)
        forecast = self._forecast(window[None].astype(np.float64))[0]
        idx = to_periods(future_index(index, n_rows, self.horizon),
                         getattr(self, "period_freq_", None))
        frame = pd.DataFrame(forecast, index=idx, columns=self.columns_).iloc[rows]
        if self.input_format_ == "long":
            return to_long(frame)
        return frame

    # -- probabilistic forecasts -------------------------------------------------------------
    def _distribution_and_index(self, y_context) -> tuple[GaussianMixture, pd.Index]:
        check_is_fitted(self, "context_")
        window, index, n_rows = self._model_window(y_context, None)
        dist = _take(self._forecast_distribution(window[None].astype(np.float64)), 0)
        return dist, to_periods(future_index(index, n_rows, self.horizon),
                                getattr(self, "period_freq_", None))

    def predict_distribution(self, y_context=None) -> GaussianMixture:
        """Predictive distribution of the ``horizon`` steps after the fitted series (or context).

        Parameters
        ----------
        y_context : DataFrame, Series, ndarray or long frame, optional
            Recent history, as in :meth:`predict`.

        Returns
        -------
        GaussianMixture
            Batch shape ``(horizon, n_variables)`` (rows: future steps, columns: the variables
            in ``columns_`` order), one mixture component per ensemble member, in the original
            units. Its ``mean`` equals ``predict()`` up to float32 rounding.

        Raises
        ------
        ValueError
            When the forecaster was fitted without uncertainty (the message names the
            parameter to set).

        Examples
        --------
        >>> import numpy as np
        >>> from mola_ts.forecast import DirectForecaster
        >>> y = np.sin(np.arange(120) / 5.0)[:, None].repeat(2, axis=1)
        >>> tiny = {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 8}
        >>> model = DirectForecaster(12, 4, backbone_params=tiny, epochs=1,
        ...                          uncertainty="laplace").fit(y)
        >>> dist = model.predict_distribution()
        >>> dist.batch_shape, dist.n_components
        ((4, 2), 1)
        """
        return self._distribution_and_index(y_context)[0]

    def predict_interval(self, coverage=0.9, y_context=None, *, fh=None) -> pd.DataFrame:
        """Central prediction intervals of the next ``horizon`` steps, in sktime's layout.

        Parameters
        ----------
        coverage : float or list of float in (0, 1)
            Nominal coverage(s): the interval of coverage ``c`` runs from the ``(1 - c) / 2``
            to the ``(1 + c) / 2`` quantile of the predictive distribution.
        y_context : DataFrame, Series, ndarray or long frame, optional
            Recent history, as in :meth:`predict`.

        Returns
        -------
        DataFrame
            Indexed by the future timestamps (or integer positions); columns a three-level
            MultiIndex ``(variable, coverage, "lower" | "upper")``, as sktime's
            ``predict_interval``. Always this wide layout, also for a model fitted on a long
            frame (the variables are then the ``unique_id`` values).

        Examples
        --------
        >>> import numpy as np
        >>> import pandas as pd
        >>> from mola_ts.forecast import DirectForecaster
        >>> y = pd.DataFrame({"load": np.sin(np.arange(120) / 5.0)},
        ...                  index=pd.date_range("2024-01-01", periods=120, freq="h"))
        >>> tiny = {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 8}
        >>> model = DirectForecaster(12, 4, backbone_params=tiny, epochs=1,
        ...                          uncertainty="laplace").fit(y)
        >>> intervals = model.predict_interval(coverage=[0.8, 0.9])
        >>> intervals.shape
        (4, 4)
        >>> intervals.index[0]
        Timestamp('2024-01-06 00:00:00')
        >>> [(name, float(c), side) for name, c, side in intervals.columns[:2]]
        [('load', 0.8, 'lower'), ('load', 0.8, 'upper')]
        """
        coverages = _levels(coverage, "coverage", 0.9)
        rows = check_fh(fh, self.horizon)
        dist, index = self._distribution_and_index(y_context)
        columns, data = [], []
        bounds = {c: self._interval(dist, c) for c in coverages}
        for j, name in enumerate(self.columns_):
            for c in coverages:
                for side, values in zip(("lower", "upper"), bounds[c], strict=True):
                    columns.append((name, c, side))
                    data.append(values[:, j])
        return pd.DataFrame(np.column_stack(data), index=index,
                            columns=pd.MultiIndex.from_tuples(columns)).iloc[rows]

    def predict_quantiles(self, alpha=None, y_context=None, *, fh=None) -> pd.DataFrame:
        """Quantiles of the predictive distribution of the next ``horizon`` steps (sktime layout).

        Parameters
        ----------
        alpha : float or list of float in (0, 1), default [0.05, 0.95]
            Quantile levels.
        y_context : DataFrame, Series, ndarray or long frame, optional
            Recent history, as in :meth:`predict`.

        Returns
        -------
        DataFrame
            Indexed by the future timestamps; columns a two-level MultiIndex
            ``(variable, alpha)``, as sktime's ``predict_quantiles``.

        Examples
        --------
        >>> import numpy as np
        >>> from mola_ts.forecast import DirectForecaster
        >>> y = np.sin(np.arange(120) / 5.0)[:, None]
        >>> tiny = {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 8}
        >>> model = DirectForecaster(12, 4, backbone_params=tiny, epochs=1,
        ...                          uncertainty="laplace").fit(y)
        >>> q = model.predict_quantiles(alpha=[0.1, 0.5, 0.9])
        >>> [(name, float(a)) for name, a in q.columns]
        [('x0', 0.1), ('x0', 0.5), ('x0', 0.9)]
        """
        alphas = _levels(alpha, "alpha", [0.05, 0.95])
        rows = check_fh(fh, self.horizon)
        dist, index = self._distribution_and_index(y_context)
        values = self._quantiles(dist, alphas)  # (horizon, C, A)
        columns = [(name, a) for name in self.columns_ for a in alphas]
        data = values.reshape(len(index), -1)  # variable-major, then alpha: the column order
        return pd.DataFrame(data, index=index,
                            columns=pd.MultiIndex.from_tuples(columns)).iloc[rows]

    def predict_windows_distribution(self, y, *, stride: int = 1) -> GaussianMixture:
        """Predictive distributions of every rolling window of ``y`` (the evaluation protocol).

        Windows as in :meth:`predict_windows`; returns a :class:`GaussianMixture` of batch shape
        ``(n_windows, horizon, n_variables)``, ready for
        :func:`mola_ts.metrics.probabilistic_scores` against the windows' targets.
        """
        check_is_fitted(self, "context_")
        ctx = self._context_length()
        series, _ = self._read(y, "y", min_rows=ctx + self.horizon, fitted=True,
                               what_for=self._rows_reason())
        x, _ = sliding_windows(series.values, ctx, self.horizon, stride)
        return self._forecast_distribution(np.ascontiguousarray(x, dtype=np.float64))

    def _series_windows(self, y, X, stride: int):
        """Model windows (N, context, C + covariates) and targets (N, horizon, C) of ``y``."""
        ctx = self._context_length()
        series, _ = self._read(y, "y", min_rows=ctx + self.horizon, fitted=True,
                               what_for=self._rows_reason())
        cov = series_covariates(self, series, X)
        values = series.values if cov is None else np.hstack([series.values, cov])
        x, target = sliding_windows(values, ctx, self.horizon, stride)
        return np.ascontiguousarray(x), target[..., :series.values.shape[1]]

    def predict_windows(self, y, *, stride: int = 1, X=None) -> np.ndarray:
        """Forecasts of every rolling window of ``y`` (the evaluation protocol).

        Window ``i`` reads rows ``[i*stride, i*stride + context)`` and forecasts the next
        ``horizon`` rows. Returns an array (n_windows, horizon, n_variables). ``X``: the
        covariates of every row of ``y`` (a model fitted with ``X``).
        """
        check_is_fitted(self, "context_")
        return self._forecast(self._series_windows(y, X, stride)[0])

    def score(self, y, X=None) -> float:
        """Negative MSE of the rolling-window forecasts of ``y`` (higher is better), on the
        standardised scale: every variable is divided by its std in the series given to
        ``fit`` (``y_scale_``, after its mean ``y_mean_``), as the benchmarks report MSE, so a
        large-valued column does not dominate a grid search."""
        check_is_fitted(self, "context_")
        windows, target = self._series_windows(y, X, 1)
        forecast = self._forecast(windows)
        return -mse((target - self.y_mean_) / self.y_scale_,
                    (forecast - self.y_mean_) / self.y_scale_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.input_tags.allow_nan = False
        tags.target_tags.required = False
        tags.non_deterministic = False
        return tags

