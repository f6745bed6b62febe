"""The user's frames on their way into and out of a forecaster: period indexes, misnamed long
frames, the scale ``score`` is measured on, and the steps ``fh`` selects.

This module owns the small conversions :class:`~mola_ts.forecast.BaseForecaster` applies before
validation and after forecasting:

- a ``PeriodIndex`` (e.g. statsmodels' quarterly macro data) is read through
  ``to_timestamp()`` and the forecasts are given back as periods (:func:`from_periods`,
  :func:`to_periods`);
- a frame with non-numeric columns that is not the long ``unique_id, ds, y`` layout gets an
  error naming both layouts (:func:`check_layout`);
- ``score`` standardises every variable with the mean and std of the series given to ``fit``
  (:func:`standard_scale`), so one large-valued column does not dominate a grid search;
- ``predict(fh=...)`` keeps the rows of the steps asked for (:func:`check_fh`).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

__all__ = ["from_periods", "to_periods", "check_layout", "standard_scale", "check_fh"]


def from_periods(y):
    """``y`` with a PeriodIndex read as timestamps (a shallow copy; others unchanged), and the
    period frequency (None when ``y`` had no PeriodIndex)."""
    index = getattr(y, "index", None)
    if not isinstance(y, (pd.DataFrame, pd.Series)) or not isinstance(index, pd.PeriodIndex):
        return y, None
    out = y.copy(deep=False)
    out.index = index.to_timestamp()
    return out, index.freqstr


def to_periods(index: pd.Index, freq: str | None) -> pd.Index:
    """Future timestamps back as periods of ``freq`` (None: ``index`` unchanged)."""
    if freq is None or not isinstance(index, pd.DatetimeIndex):
        return index
    return index.to_period(freq)


def check_layout(y, name: str, long_columns: tuple[str, ...]) -> None:
    """Refuse a frame that is neither wide (numeric columns) nor the long layout, saying both.

    A wide frame holds one numeric column per variable with the time in the index; a long
    frame holds exactly the columns ``unique_id, ds, y``. A frame with a date or label column
    under another name is almost always a long frame with other column names.
    """
    if not isinstance(y, pd.DataFrame):
        return
    odd = {str(c): str(d) for c, d in y.dtypes.items()
           if not pd.api.types.is_numeric_dtype(d) or pd.api.types.is_bool_dtype(d)}
    if not odd:
        return
    wanted = ", ".join(long_columns)
    extra = ""
    if set(long_columns) <= {str(c) for c in y.columns}:
        others = [str(c) for c in y.columns if str(c) not in long_columns][:5]
        extra = f"; it has the long columns plus {others}: drop those"
    shown = dict(list(odd.items())[:5])
    raise TypeError(
        f"{name} has non-numeric columns {shown}: a long frame needs exactly the columns "
        f"{wanted} (series id, timestamp, value; rename yours, e.g. "
        f"df.rename(columns={{...}})){extra}; a wide frame needs one numeric column per "
        "variable with the time in the index"
    )


def standard_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-variable mean and std of ``values`` (a constant variable gets std 1)."""
    top = np.abs(values).max(axis=0)
    top = np.where(top > 0, top, 1.0)
    unit = values / top  # std without overflow for values near float64's range
    mean = unit.mean(axis=0) * top
    scale = unit.std(axis=0) * top
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return mean, scale


def check_fh(fh, horizon: int) -> np.ndarray:
    """0-based rows of the steps ``fh`` (1-based steps ahead, within ``1 .. horizon``).

    ``fh`` is an int (one step), a sequence of ints, a range or sktime-like relative steps;
    None means every step. Steps must be unique; they are returned in the order given.
    """
    if fh is None:
        return np.arange(horizon)
    items = [fh] if np.ndim(fh) == 0 else list(np.asarray(fh, dtype=object).ravel())
    if not items:
        raise ValueError("fh must name at least one step ahead (1 .. horizon), got []")
    steps = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"fh must hold int steps ahead (1 .. {horizon}), got {v!r} "
                            f"({type(v).__name__})")
        if not 1 <= int(v) <= horizon:
            raise ValueError(f"fh steps must lie in 1 .. {horizon} (the fitted horizon), got "
                             f"{int(v)}; refit with a larger horizon for further steps")
        steps.append(int(v))
    if len(set(steps)) != len(steps):
        raise ValueError(f"fh holds repeated steps: {steps}")
    return np.asarray(steps) - 1
