"""Forecast charts: recent history, the forecast, its prediction intervals and the actual values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._axes import MAX_PANELS, _date_axis, _to_numpy

__all__ = ["forecast_chart"]

_LONG_COLUMNS = ("unique_id", "ds", "y")


def _is_long(frame: pd.DataFrame) -> bool:
    return set(_LONG_COLUMNS) <= set(frame.columns) and len(frame.columns) == 3


def _as_frame(data: Any, name: str, *, index: pd.Index | None = None,
              columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A wide float DataFrame from a wide or long DataFrame, a Series or a 1-D/2-D array.

    Arrays get ``index`` (default 0..n-1) and ``columns`` (default "0", "1", ...)."""
    if isinstance(data, pd.DataFrame):
        if _is_long(data):
            from ..data import to_wide

            data = to_wide(data)
        frame = data.copy()
        frame.columns = [str(c) for c in frame.columns]
        return frame.astype(float)
    if isinstance(data, pd.Series):
        return data.to_frame(str(data.name) if data.name is not None else "y").astype(float)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__len__"):
        raise TypeError(f"{name} must be a DataFrame, Series or array, got "
                        f"{type(data).__name__}")
    values = _to_numpy(data)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (time, variables), got shape "
                         f"{values.shape}")
    if columns is not None and len(columns) != values.shape[1]:
        raise ValueError(f"{name} has {values.shape[1]} columns, expected {len(columns)} "
                         f"({list(columns)[:5]})")
    if index is not None and len(index) != len(values):
        raise ValueError(f"{name} has {len(values)} rows, expected {len(index)}")
    return pd.DataFrame(values, index=index if index is not None else pd.RangeIndex(len(values)),
                        columns=list(columns) if columns is not None else
                        [str(j) for j in range(values.shape[1])])


def _interval_bounds(intervals: Any, forecast: pd.DataFrame, columns: Sequence[str]
                     ) -> dict[float | None, tuple[pd.DataFrame, pd.DataFrame]]:
    """``{coverage: (lower, upper)}`` aligned with ``forecast``, from sktime's layout or arrays."""
    out: dict[float | None, tuple[pd.DataFrame, pd.DataFrame]] = {}
    if isinstance(intervals, pd.DataFrame):
        cols = intervals.columns
        if not (isinstance(cols, pd.MultiIndex) and cols.nlevels == 3):
            raise ValueError("intervals as a DataFrame must have sktime's three column levels "
                             "(variable, coverage, 'lower'/'upper'); got columns "
                             f"{list(cols)[:4]}")
        if len(intervals) != len(forecast):
            raise ValueError(f"intervals has {len(intervals)} rows, the forecast "
                             f"{len(forecast)}")
        names = {str(v): v for v in cols.get_level_values(0).unique()}
        for coverage in cols.get_level_values(1).unique():
            bounds = []
            for side in ("lower", "upper"):
                parts = {}
                for c in columns:
                    key = (names.get(c), coverage, side)
                    if key not in cols:
                        raise ValueError(f"intervals has no column {(c, coverage, side)}")
                    parts[c] = intervals[key].to_numpy(dtype=float)
                bounds.append(pd.DataFrame(parts, index=forecast.index))
            out[float(coverage)] = (bounds[0], bounds[1])
    elif isinstance(intervals, Mapping):
        for coverage, pair in intervals.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"intervals[{coverage!r}] must be a (lower, upper) pair")
            bounds = []
            for side, values in zip(("lower", "upper"), pair, strict=True):
                labels = list(forecast.columns)
                if not isinstance(values, (pd.DataFrame, pd.Series)) and len(columns) == 1:
                    shape = np.shape(values)
                    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
                        labels = list(columns)  # one drawn variable: bounds of it alone
                frame = _as_frame(values, f"intervals[{coverage!r}] {side}", index=forecast.index,
                                  columns=labels)
                if isinstance(values, (pd.DataFrame, pd.Series)):
                    missing = [c for c in columns if c not in frame.columns]
                    if missing:
                        raise ValueError(f"intervals[{coverage!r}] {side} has no column "
                                         f"{missing}")
                    if len(frame) != len(forecast):
                        raise ValueError(f"intervals[{coverage!r}] {side} has {len(frame)} "
                                         f"rows, the forecast {len(forecast)}")
                    frame.index = forecast.index
                bounds.append(frame[list(columns)])
            out[None if coverage is None else float(coverage)] = (bounds[0], bounds[1])
    else:
        raise TypeError("intervals must be a DataFrame in sktime's layout or a mapping "
                        f"{{coverage: (lower, upper)}}, got {type(intervals).__name__}")
    for coverage, (lower, upper) in out.items():
        crossed = int((lower.to_numpy() > upper.to_numpy()).sum())
        if crossed:
            raise ValueError(f"intervals at coverage {coverage}: the lower bound exceeds the "
                             f"upper bound at {crossed} points")
    return out


def forecast_chart(history: Any, forecast: Any, *, truth: Any = None, intervals: Any = None,
                   columns: str | int | Sequence[str | int] | None = None,
                   history_length: int | None = None, title: str | None = None,
                   figsize: tuple[float, float] | None = None) -> Figure:
    """Forecast chart: recent history, the forecast, its intervals and the actual values.

    Parameters
    ----------
    history : DataFrame, Series, ndarray or long ``unique_id, ds, y`` frame
        The series the forecast continues (rows = time).
    forecast : DataFrame, Series, ndarray or long frame
        The ``H`` forecast rows, e.g. ``model.predict()``. An array is placed after
        ``history`` (future timestamps for a DatetimeIndex) with the history's columns.
    truth : same layouts, optional
        The actual values over the forecast window (an array gets the forecast's index).
    intervals : DataFrame or mapping, optional
        Prediction intervals, either in sktime's column layout (three levels: variable,
        coverage, ``"lower"``/``"upper"``; what ``predict_interval`` returns) or a mapping
        ``{coverage: (lower, upper)}`` of arrays shaped like the forecast (or DataFrames with
        its columns). Wider intervals are drawn lighter.
    columns : str, int or sequence of them, optional
        Variables to draw (names, or positions in the forecast's columns); default all, at
        most 12.
    history_length : int, optional
        History rows shown before the forecast (default ``4 * H``, at most the whole history).
    title : str, optional
        Figure title.
    figsize : (float, float), optional
        Default: 10 wide, 2.2 per panel.

    Returns
    -------
    Figure
        One panel per variable, the forecast start marked by a dotted line.

    Examples
    --------
    >>> import numpy as np
    >>> history = np.sin(np.arange(100) / 6.0)
    >>> forecast = np.sin(np.arange(100, 120) / 6.0)
    >>> fig = forecast_chart(history, forecast, intervals={0.9: (forecast - 0.3, forecast + 0.3)})
    >>> len(fig.axes)
    1
    """
    past = _as_frame(history, "history")
    if len(past) == 0:
        raise ValueError("history has no rows")
    if isinstance(forecast, (pd.DataFrame, pd.Series)):
        future = _as_frame(forecast, "forecast")
    else:
        from ..data import future_index

        n_steps = len(_to_numpy(forecast))
        index = future_index(past.index, len(past), n_steps)
        future = _as_frame(forecast, "forecast", index=index, columns=list(past.columns))
    horizon = len(future)
    if horizon == 0:
        raise ValueError("forecast has no rows")
    if columns is None:
        chosen = list(future.columns)
    else:
        wanted = [columns] if isinstance(columns, (str, int, np.integer)) else list(columns)
        chosen = []
        for c in wanted:
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                if not 0 <= c < len(future.columns):
                    raise ValueError(f"column position {c} is outside the forecast's "
                                     f"{len(future.columns)} columns")
                chosen.append(future.columns[c])
            elif str(c) in future.columns:
                chosen.append(str(c))
            else:
                raise ValueError(f"forecast has no column {c!r}; it has "
                                 f"{list(future.columns)[:10]}")
    if not chosen:
        raise ValueError("columns selects no variable")
    if len(chosen) > MAX_PANELS:
        raise ValueError(f"{len(chosen)} variables would make {len(chosen)} panels; choose at "
                         f"most {MAX_PANELS} with columns=[...]")
    missing = [c for c in chosen if c not in past.columns]
    if missing:
        raise ValueError(f"history has no column {missing}; it has {list(past.columns)[:10]}")
    actual = None
    if truth is not None:
        if isinstance(truth, (pd.DataFrame, pd.Series)):
            actual = _as_frame(truth, "truth")
        else:
            actual = _as_frame(truth, "truth", index=future.index, columns=list(future.columns))
        absent = [c for c in chosen if c not in actual.columns]
        if absent:
            raise ValueError(f"truth has no column {absent}")
    bounds = {} if intervals is None else _interval_bounds(intervals, future, chosen)
    if history_length is None:
        history_length = 4 * horizon
    if isinstance(history_length, bool) or not isinstance(history_length, (int, np.integer)) \
            or history_length < 1:
        raise ValueError(f"history_length must be a positive int, got {history_length!r}")
    past = past.iloc[-int(history_length):]

    n = len(chosen)
    fig = Figure(figsize=figsize or (10, 2.2 * n + 0.8), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    covers = sorted(bounds, key=lambda c: -1.0 if c is None else c, reverse=True)
    shades = np.linspace(0.18, 0.4, max(len(covers), 1))
    for ax, col in zip(axes, chosen, strict=True):
        ax.plot(past.index, past[col].to_numpy(), color="0.2", lw=1.0, label="history")
        if actual is not None:
            ax.plot(actual.index, actual[col].to_numpy(), color="black", lw=1.0, ls="--",
                    label="actual")
        for shade, coverage in zip(shades, covers, strict=False):
            lower, upper = bounds[coverage]
            label = "interval" if coverage is None else f"{coverage:.0%} interval"
            ax.fill_between(future.index, lower[col].to_numpy(), upper[col].to_numpy(),
                            color="tab:blue", alpha=float(shade), lw=0, label=label)
        ax.plot(future.index, future[col].to_numpy(), color="#08306b", lw=1.5,
                label="forecast")  # darker than the interval bands it is drawn on
        ax.axvline(future.index[0], color="0.5", ls=":", lw=1.0)
        ax.set_ylabel(col, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, lw=0.5)
    _date_axis(axes[-1], future.index)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
