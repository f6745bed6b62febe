"""Non-neural baselines: seasonal naive and a statsmodels exponential-smoothing forecaster.

Both follow the same estimator API as the neural models and forecast every variable on its
own. They are the sanity floor of the benchmark and the sensible choice for short series.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..data import check_number
from ..persistence import SaveLoadMixin
from .base import BaseForecaster

__all__ = ["SeasonalNaiveForecaster", "ClassicalForecaster", "infer_season_length"]

_SEASONS = {"h": 24, "min": 0, "D": 7, "B": 5, "W": 52, "M": 12, "MS": 12, "ME": 12, "Q": 4,
            "QS": 4, "QE": 4}


def infer_season_length(index) -> int:
    """A natural season for a DatetimeIndex: 24 for hourly, 7 for daily, 52 for weekly data,
    12 for monthly, 4 for quarterly, one day of steps for sub-hourly; else 1."""
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 3:
        return 1
    offset = index.freq
    if offset is None:
        try:
            offset = pd.DatetimeIndex(index, freq="infer").freq  # no string round-trip
        except ValueError:
            return 1
    if offset is None:
        return 1
    base = offset.rule_code.split("-")[0]
    if base == "min":
        return max(1, (24 * 60) // offset.n)
    if base == "h":
        return max(1, 24 // offset.n)
    if base == "D" and offset.n == 7:
        return 52  # weekly data given as 7-day steps
    return _SEASONS.get(base, 1)


def _time_index(y):
    """The time index of a wide frame, or the sorted unique ``ds`` of a long one."""
    if isinstance(y, pd.DataFrame) and "ds" in y.columns and "unique_id" in y.columns:
        return pd.DatetimeIndex(np.sort(pd.unique(pd.to_datetime(y["ds"]))))
    index = getattr(y, "index", None)
    return index.to_timestamp() if isinstance(index, pd.PeriodIndex) else index


class SeasonalNaiveForecaster(SaveLoadMixin, BaseForecaster):
    """Repeat the last season: ``y[T + h] = y[T + h - m * ceil(h / m)]``.

    Parameters
    ----------
    horizon : int
        Steps forecast.
    season_length : int, optional
        m; None infers it from the DatetimeIndex in fit (24 for hourly data, ...; 1, i.e. the
        last value, when unknown).

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.forecast import SeasonalNaiveForecaster
    >>> y = np.tile(np.arange(4.0), 5)
    >>> SeasonalNaiveForecaster(horizon=6, season_length=4).fit(y).predict()["x0"].tolist()
    [0.0, 1.0, 2.0, 3.0, 0.0, 1.0]
    """

    def __init__(self, horizon: int = 96, *, season_length: int | None = None):
        self.horizon = horizon
        self.season_length = season_length

    def _context_length(self) -> int:
        if hasattr(self, "season_length_"):
            return self.season_length_
        if self.season_length is None:
            return 1
        return check_number(self.season_length, "season_length", min_val=1)

    def _min_fit_rows(self) -> int:
        return self._context_length()

    def fit(self, y, y_val=None, *, X=None, X_val=None):
        """Record the season length and the last season of ``y`` (``y_val`` is ignored; ``X``
        is refused: no covariates)."""
        if self.season_length is None:
            self.season_length_ = infer_season_length(_time_index(y))
        else:
            self.season_length_ = check_number(self.season_length, "season_length", min_val=1)
        return super().fit(y, X=X, X_val=X_val)

    def _fit(self, values, val_values) -> None:
        pass

    def _forecast(self, windows: np.ndarray) -> np.ndarray:
        m = self.season_length_
        steps = (np.arange(self.horizon) % m) + windows.shape[1] - m
        return windows[:, steps, :].astype(np.float64)


class ClassicalForecaster(SaveLoadMixin, BaseForecaster):
    """Exponential smoothing (statsmodels ETS) per variable, for short series.

    The smoothing parameters are estimated once per variable on the training series; a
    forecast from any context re-runs the filter with those parameters on the last
    ``lookback`` rows (initial states from the context, statsmodels' heuristic) and projects
    ``horizon`` steps. Additive errors and trend (damped by default); additive seasonality
    when ``season_length`` > 1 and the context holds at least two seasons.

    Parameters
    ----------
    horizon : int
        Steps forecast.
    lookback : int
        Rows of history each forecast reads (at least 10).
    trend : bool
        Additive trend component.
    damped_trend : bool
        Damp the trend (recommended for long horizons).
    season_length : int, optional
        Seasonal period; None infers it from the DatetimeIndex (and drops seasonality when
        the lookback is shorter than two seasons).

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.forecast import ClassicalForecaster
    >>> y = np.arange(60.0) + np.random.default_rng(0).normal(size=60)
    >>> ClassicalForecaster(horizon=4, lookback=30, season_length=1).fit(y).predict().shape
    (4, 1)
    """

    def __init__(self, horizon: int = 24, *, lookback: int = 96, trend: bool = True,
                 damped_trend: bool = True, season_length: int | None = None):
        self.horizon = horizon
        self.lookback = lookback
        self.trend = trend
        self.damped_trend = damped_trend
        self.season_length = season_length

    def _context_length(self) -> int:
        return check_number(self.lookback, "lookback", min_val=10)

    def fit(self, y, y_val=None, *, X=None, X_val=None):
        """Estimate the smoothing parameters of every variable on ``y`` (``y_val`` ignored;
        ``X`` is refused: no covariates)."""
        if self.season_length is None:
            m = infer_season_length(_time_index(y))
        else:
            m = check_number(self.season_length, "season_length", min_val=1)
        self.season_length_ = m if m > 1 and self._context_length() >= 2 * m else 1
        return super().fit(y, X=X, X_val=X_val)

    def _model(self, series: np.ndarray):
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        seasonal = self.season_length_ > 1
        return ETSModel(series, error="add", trend="add" if self.trend else None,
                        damped_trend=bool(self.trend and self.damped_trend),
                        seasonal="add" if seasonal else None,
                        seasonal_periods=self.season_length_ if seasonal else None,
                        initialization_method="heuristic")

    def _fit(self, values: np.ndarray, val_values) -> None:
        params = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels convergence chatter
            for j in range(values.shape[1]):
                result = self._model(values[:, j]).fit(disp=False)
                params.append(np.asarray(result.params, dtype=np.float64))
        self.params_ = np.stack(params)

    def _forecast(self, windows: np.ndarray) -> np.ndarray:
        n, _, channels = windows.shape
        out = np.empty((n, self.horizon, channels))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(n):
                for j in range(channels):
                    model = self._model(windows[i, :, j])
                    out[i, :, j] = model.smooth(self.params_[j]).forecast(self.horizon)
        return out
