"""Figures (matplotlib) built from plain arrays and DataFrames.

The functions take data, not estimators, so any model family can use them: a forecaster's
predictions and intervals, the monitor's ``statistics(X)`` and ``contributions(X)`` frames, the
routing statistics of :func:`mola_ts.nn.collect_aux`, the ``results.csv`` of a benchmark. Each
returns a :class:`matplotlib.figure.Figure` made without pyplot's global state (safe on a
headless machine); save it with ``fig.savefig(path)``. In Jupyter, after ``%matplotlib inline``
(or any pyplot import), a figure that ends a cell is shown.

- :func:`forecast_chart`: history, forecast, actual values and prediction intervals, one panel
  per variable.
- :func:`control_chart`: chosen statistics against their limits, one panel each, with the fault
  onset and the alarms.
- :func:`monitor_chart`: every level of a multi-block monitor at once: per-block T^2, W, SPE or
  block index as a grid, the global index below.
- :func:`contribution_chart`: per-variable contributions as sorted bars.
- :func:`routing_heatmap`: which experts the routers use, per layer and per expert, token or
  segment.
- :func:`benchmark_chart`: grouped bars from a benchmark's ``results.csv``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

__all__ = [
    "forecast_chart",
    "control_chart",
    "monitor_chart",
    "contribution_chart",
    "routing_heatmap",
    "benchmark_chart",
    "BENCHMARK_LAYOUTS",
    "LEVEL_TITLES",
]

#: Column titles of the monitoring levels in :func:`monitor_chart`.
LEVEL_TITLES: dict[str, str] = {
    "T2": "Hotelling T²",
    "W": "quantile CUSUM W",
    "SPE": "SPE",
    "index": "block index $P_b$",
}
_MAX_PANELS = 12
_LONG_COLUMNS = ("unique_id", "ds", "y")


# ---------------------------------------------------------------------------------- helpers


def _to_numpy(values: Any) -> np.ndarray:
    """A float array from an array-like, a pandas object or a (CPU or GPU) torch tensor."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def _date_axis(ax: Axes, index: pd.Index) -> None:
    """Compact date ticks for a DatetimeIndex axis (no-op otherwise)."""
    if isinstance(index, pd.DatetimeIndex):
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _draw_statistic(ax: Axes, x: pd.Index, values: np.ndarray, limits: np.ndarray, *,
                    label: str, logy: bool, onset: int | None, onset_label: str | None) -> None:
    """One control-chart panel: the statistic, its limit, the points beyond it, the onset."""
    values = np.asarray(values, dtype=float)
    limits = np.asarray(limits, dtype=float)
    if logy:
        # floor: the 1st percentile of the positive values (a few near-zero in-control values
        # would otherwise stretch the axis over decades), kept a decade below the limit
        finite = values[np.isfinite(values) & (values > 0)]
        floor = np.percentile(finite, 1) if finite.size else 1e-12
        lowest_limit = np.nanmin(limits) if np.isfinite(limits).any() else np.nan
        if np.isfinite(lowest_limit) and lowest_limit > 0:
            floor = min(floor, lowest_limit / 10)
        values = np.maximum(values, floor)  # NaN stays NaN
        ax.set_yscale("log")
    ax.plot(x, values, lw=0.8, color="tab:blue", label=label)
    ax.plot(x, limits, lw=1.0, color="tab:red", ls="--", label="limit")
    beyond = values > limits
    ax.plot(x[beyond], values[beyond], ".", ms=2.5, color="tab:red", label="beyond limit")
    if onset is not None:
        ax.axvline(x[onset], color="black", ls=":", lw=1.0, label=onset_label)
    ax.tick_params(labelsize=7)


def _mark_alarms(ax: Axes, x: pd.Index, alarms: np.ndarray) -> None:
    low = ax.get_ylim()[0]
    ax.plot(x[alarms], np.full(int(alarms.sum()), low), "|", color="tab:orange", ms=6,
            label="alarm")


def _check_onset(onset: int | None, n_rows: int) -> None:
    if onset is not None and not 0 <= onset < n_rows:
        raise ValueError(f"onset {onset} must be a row position inside the {n_rows} rows")


# ---------------------------------------------------------------------------------- forecast


def _is_long(frame: pd.DataFrame) -> bool:
    return set(_LONG_COLUMNS) <= set(frame.columns) and len(frame.columns) == 3


def _as_frame(data: Any, name: str, *, index: pd.Index | None = None,
              columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A wide float DataFrame from a wide or long DataFrame, a Series or a 1-D/2-D array.

    Arrays get ``index`` (default 0..n-1) and ``columns`` (default "0", "1", ...)."""
    if isinstance(data, pd.DataFrame):
        if _is_long(data):
            from .data import to_wide

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
        from .data import future_index

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
    if len(chosen) > _MAX_PANELS:
        raise ValueError(f"{len(chosen)} variables would make {len(chosen)} panels; choose at "
                         f"most {_MAX_PANELS} with columns=[...]")
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


# ---------------------------------------------------------------------------------- monitoring


def _pairs(stats: pd.DataFrame) -> list[tuple[str, str]]:
    return [(c, f"{c}_limit") for c in stats.columns if f"{c}_limit" in stats.columns]


def control_chart(stats: pd.DataFrame, panels: Sequence[tuple[str, str]] | None = None, *,
                  onset: int | None = None, alarm_column: str | None = "alarm",
                  titles: Sequence[str] | None = None, logy: bool = True,
                  title: str | None = None, figsize: tuple[float, float] | None = None
                  ) -> Figure:
    """Control chart: each statistic against its limit, one panel per level.

    Parameters
    ----------
    stats : DataFrame
        One row per sample (its index is the x axis): statistic columns and limit columns.
    panels : sequence of (statistic column, limit column), optional
        What to draw, top to bottom. By default every column ``c`` that has a ``c_limit``
        column.
    onset : int, optional
        Position (0-based row) of the first faulty sample; a dotted line marks it.
    alarm_column : str or None
        A 0/1 column whose alarms are marked on the last panel (ignored when absent).
    titles : sequence of str, optional
        Panel titles (default: the statistic column names).
    logy : bool
        Logarithmic y axis (statistics span decades once a fault sets in); non-positive values
        are drawn at the axis floor.
    title : str, optional
        Figure title.
    figsize : (float, float), optional
        Default: 10 wide, 1.9 per panel.

    Returns
    -------
    Figure

    See Also
    --------
    monitor_chart : every level of every block of a multi-block monitor in one grid.
    """
    if not isinstance(stats, pd.DataFrame):
        raise TypeError(f"stats must be a DataFrame, got {type(stats).__name__}")
    panels = list(panels) if panels is not None else _pairs(stats)
    if not panels:
        raise ValueError("no (statistic, limit) columns to draw: pass panels=[(col, limit_col)]")
    for value_col, limit_col in panels:
        missing = [c for c in (value_col, limit_col) if c not in stats.columns]
        if missing:
            raise ValueError(f"stats has no column {missing}; it has {list(stats.columns)[:10]}")
    if titles is not None and len(titles) != len(panels):
        raise ValueError(f"titles has {len(titles)} entries for {len(panels)} panels")
    _check_onset(onset, len(stats))
    n = len(panels)
    fig = Figure(figsize=figsize or (10, 1.9 * n + 0.8), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    x = stats.index
    for i, (ax, (value_col, limit_col)) in enumerate(zip(axes, panels, strict=True)):
        _draw_statistic(ax, x, stats[value_col].to_numpy(dtype=float),
                        stats[limit_col].to_numpy(dtype=float), label=value_col, logy=logy,
                        onset=onset, onset_label="fault onset" if i == 0 else None)
        ax.set_ylabel(titles[i] if titles is not None else value_col, fontsize=8)
    if alarm_column is not None and alarm_column in stats.columns:
        _mark_alarms(axes[-1], x, stats[alarm_column].to_numpy() == 1)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(axes) > 1:  # one legend for all panels; the alarms are drawn on the last one
        labels[0] = "statistic"
        for handle, lab in zip(*axes[-1].get_legend_handles_labels(), strict=True):
            if lab == "alarm":
                handles.append(handle)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    _date_axis(axes[-1], x)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _monitor_blocks(stats: pd.DataFrame, levels: Sequence[str]) -> list[str]:
    """Block names ``b`` with a ``b.<level>`` column, in column order."""
    pattern = re.compile(r"^(.+)\.(" + "|".join(re.escape(lev) for lev in levels) + r")$")
    blocks: list[str] = []
    for col in stats.columns:
        match = pattern.match(str(col))
        if match and match.group(1) not in blocks:
            blocks.append(match.group(1))
    return blocks


def monitor_chart(stats: pd.DataFrame, *, levels: Sequence[str] = ("T2", "W", "index"),
                  blocks: Sequence[str] | None = None, global_column: str | None = "PFI",
                  onset: int | None = None, alarm_column: str | None = "alarm",
                  logy: bool = True, title: str | None = None,
                  figsize: tuple[float, float] | None = None) -> Figure:
    """Every monitoring level at once: a grid of blocks x levels, the global index below.

    Made for :meth:`mola_ts.monitor.MOLAMonitor.statistics`, whose columns are ``b.T2``,
    ``b.W``, ``b.SPE``, ``b.index`` for every block ``b`` (each with a ``_limit`` column), then
    ``PFI``, ``PFI_limit`` and ``alarm``. Any frame with the same naming works.

    Parameters
    ----------
    stats : DataFrame
        One row per sample; ``<block>.<level>`` and ``<block>.<level>_limit`` columns.
    levels : sequence of str
        Grid columns, left to right (any of ``"T2"``, ``"W"``, ``"SPE"``, ``"index"``, or
        another suffix present in ``stats``).
    blocks : sequence of str, optional
        Grid rows, top to bottom (default: every block found in ``stats``).
    global_column : str or None
        The fused statistic drawn across the bottom row with its ``_limit`` (None: no row).
    onset : int, optional
        Position (0-based row) of the first faulty sample, marked in every panel.
    alarm_column : str or None
        A 0/1 column whose alarms are marked on the bottom row (ignored when absent).
    logy : bool
        Logarithmic y axes.
    title : str, optional
        Figure title.
    figsize : (float, float), optional
        Default: 3.4 wide per level, 1.4 high per row.

    Returns
    -------
    Figure
    """
    if not isinstance(stats, pd.DataFrame):
        raise TypeError(f"stats must be a DataFrame, got {type(stats).__name__}")
    levels = [levels] if isinstance(levels, str) else list(levels)
    if not levels:
        raise ValueError("levels must name at least one level")
    blocks = _monitor_blocks(stats, levels) if blocks is None else list(blocks)
    if not blocks:
        raise ValueError(f"stats has no '<block>.<level>' columns for levels {levels}; it has "
                         f"{list(stats.columns)[:10]}")
    needed = [f"{b}.{lev}{suffix}" for b in blocks for lev in levels for suffix in ("", "_limit")]
    if global_column is not None:
        needed += [global_column, f"{global_column}_limit"]
    missing = [c for c in needed if c not in stats.columns]
    if missing:
        raise ValueError(f"stats has no column {missing[:6]}; it has {list(stats.columns)[:10]}")
    _check_onset(onset, len(stats))
    n_rows = len(blocks) + (global_column is not None)
    n_cols = len(levels)
    fig = Figure(figsize=figsize or (3.4 * n_cols + 1.0, 1.4 * n_rows + 1.0),
                 layout="constrained")
    grid = fig.add_gridspec(n_rows, n_cols)
    x = stats.index
    first: Axes | None = None
    axes: list[Axes] = []
    for r, block in enumerate(blocks):
        for c, level in enumerate(levels):
            ax = fig.add_subplot(grid[r, c], sharex=first)
            first = first or ax
            col = f"{block}.{level}"
            _draw_statistic(ax, x, stats[col].to_numpy(dtype=float),
                            stats[f"{col}_limit"].to_numpy(dtype=float), label="statistic",
                            logy=logy, onset=onset, onset_label="fault onset")
            if r == 0:
                ax.set_title(LEVEL_TITLES.get(level, level), fontsize=9)
            if c == 0:
                ax.set_ylabel(block, fontsize=8)
            if r < n_rows - 1:
                ax.tick_params(labelbottom=False)
            axes.append(ax)
    if global_column is not None:
        ax = fig.add_subplot(grid[n_rows - 1, :], sharex=first)
        _draw_statistic(ax, x, stats[global_column].to_numpy(dtype=float),
                        stats[f"{global_column}_limit"].to_numpy(dtype=float),
                        label=global_column, logy=logy, onset=onset, onset_label="fault onset")
        ax.set_ylabel(global_column, fontsize=8)
        if alarm_column is not None and alarm_column in stats.columns:
            _mark_alarms(ax, x, stats[alarm_column].to_numpy() == 1)
        axes.append(ax)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    _date_axis(axes[-1], x)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def contribution_chart(contributions: pd.Series | pd.DataFrame, *, top: int | None = 15,
                       title: str | None = None, figsize: tuple[float, float] = (8, 4)
                       ) -> Figure:
    """Bar chart of per-variable contributions, largest first.

    Parameters
    ----------
    contributions : Series (variable -> contribution) or DataFrame (rows = samples)
        A DataFrame is averaged over its rows (NaN rows ignored), e.g. the samples in alarm.
    top : int or None
        Show only the ``top`` largest (None: all).
    title : str, optional
        Axes title.
    figsize : (float, float)
        Figure size in inches.

    Returns
    -------
    Figure
    """
    if isinstance(contributions, pd.DataFrame):
        values = contributions.mean(axis=0, skipna=True)
    elif isinstance(contributions, pd.Series):
        values = contributions.astype(float)
    else:
        raise TypeError("contributions must be a pandas Series or DataFrame, got "
                        f"{type(contributions).__name__}")
    values = values.dropna().sort_values(ascending=False)
    if values.empty:
        raise ValueError("contributions holds no finite values to draw")
    if top is not None:
        values = values.iloc[:top]
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(values)), values.to_numpy(), color="tab:blue")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels([str(v) for v in values.index], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("contribution")
    ax.grid(axis="y", alpha=0.3, lw=0.5)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# ---------------------------------------------------------------------------------- routing

_STAT_LABELS = {"load": "share of tokens routed to the expert",
                "mean_gate": "mean gate of the expert", "active": "active experts"}


def _layer_matrix(layers: Mapping[str, Mapping[str, Any]], statistic: str, max_tokens: int
                  ) -> tuple[np.ndarray, list[str], list[str], str]:
    """Rows = layers; columns = experts (load, mean_gate) or tokens (active)."""
    rows, names = [], []
    for name, stats in layers.items():
        if statistic not in stats:
            raise ValueError(f"layer {name!r} has no statistic {statistic!r}; it has "
                             f"{sorted(stats)}")
        values = _to_numpy(stats[statistic]).reshape(-1)
        rows.append(values[:max_tokens] if statistic == "active" else values)
        names.append(name)
    width = max(len(r) for r in rows)
    matrix = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        matrix[i, :len(r)] = r
    xlabel = "token" if statistic == "active" else "expert"
    return matrix, names, [str(j) for j in range(width)], xlabel


def _matrix_panel(name: str, data: Any) -> tuple[np.ndarray, list[str], list[str], str, str]:
    if isinstance(data, pd.DataFrame):
        return (data.to_numpy(dtype=float), [str(i) for i in data.index],
                [str(c) for c in data.columns], str(data.columns.name or ""),
                str(data.index.name or ""))
    matrix = _to_numpy(data)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {matrix.shape}")
    return (matrix, [str(i) for i in range(matrix.shape[0])],
            [str(j) for j in range(matrix.shape[1])], "", "")


def routing_heatmap(routing: Any, *, statistic: str = "load", max_tokens: int = 256,
                    label: str | None = None, xlabel: str | None = None,
                    ylabel: str | None = None, annotate: bool | None = None,
                    cmap: str = "viridis", title: str | None = None,
                    figsize: tuple[float, float] | None = None) -> Figure:
    """Heatmap of the routing: which experts are used, per layer and per expert/token/segment.

    Parameters
    ----------
    routing : AuxReport, mapping, DataFrame, ndarray or tensor
        - the report of :func:`mola_ts.nn.collect_aux` (or its ``layers`` mapping, layer name
          -> statistics): one heatmap, a row per layer; the columns are the experts for
          ``statistic="load"`` or ``"mean_gate"`` and the tokens for ``"active"``. Layers with
          fewer experts than others (layer-wise allocation) leave blank cells;
        - a 2-D matrix (array, tensor or DataFrame, whose index and columns label the axes):
          one heatmap, e.g. gates of segments x experts;
        - a mapping name -> 2-D matrix: one heatmap per entry on a shared colour scale, e.g.
          the per-segment gates of every adapted layer.
    statistic : {"load", "mean_gate", "active"}
        For layer statistics: share of tokens with a non-zero gate per expert, mean gate per
        expert, or the number of active experts per token.
    max_tokens : int
        Tokens shown for ``statistic="active"`` (the first ones).
    label : str, optional
        Colour-bar label (default: what the statistic is; "gate" for matrices).
    xlabel, ylabel : str, optional
        Axis labels (defaults from the input).
    annotate : bool, optional
        Write the value in every cell (default: when the heatmap has at most 160 cells).
    cmap : str
        Matplotlib colour map.
    title : str, optional
        Figure title.
    figsize : (float, float), optional
        Default from the matrix sizes.

    Returns
    -------
    Figure

    Examples
    --------
    >>> import numpy as np
    >>> gates = np.array([[0.7, 0.3, 0.0], [0.1, 0.1, 0.8]])
    >>> fig = routing_heatmap(gates, xlabel="expert", ylabel="segment")
    >>> len(fig.axes)  # the heatmap and its colour bar
    2
    """
    if statistic not in _STAT_LABELS:
        raise ValueError(f"statistic must be one of {sorted(_STAT_LABELS)}, got {statistic!r}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) \
            or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    layers = getattr(routing, "layers", None)  # an AuxReport
    if isinstance(layers, Mapping) and hasattr(routing, "loss"):
        routing = layers
    # panels: (title, matrix, row labels, column labels, xlabel, ylabel)
    panels: list[tuple[str, np.ndarray, list[str], list[str], str, str]] = []
    default_label = "gate"
    if isinstance(routing, Mapping):
        if not routing:
            raise ValueError("routing is empty")
        values = list(routing.values())
        if all(isinstance(v, Mapping) for v in values):
            matrix, rows, cols, xl = _layer_matrix(routing, statistic, int(max_tokens))
            panels.append(("", matrix, rows, cols, xl, "layer"))
            default_label = _STAT_LABELS[statistic]
        elif any(isinstance(v, Mapping) for v in values):
            raise TypeError("routing mixes layer statistics and matrices")
        else:
            for name, data in routing.items():
                matrix, rows, cols, xl, yl = _matrix_panel(f"routing[{name!r}]", data)
                panels.append((str(name), matrix, rows, cols, xl, yl))
    elif isinstance(routing, (pd.DataFrame, list, tuple)) or hasattr(routing, "__array__") \
            or hasattr(routing, "detach"):
        matrix, rows, cols, xl, yl = _matrix_panel("routing", routing)
        panels.append(("", matrix, rows, cols, xl, yl))
    else:
        raise TypeError("routing must be an AuxReport, a mapping of layer statistics or of "
                        f"matrices, or a 2-D matrix; got {type(routing).__name__}")
    if len(panels) > _MAX_PANELS:
        raise ValueError(f"{len(panels)} heatmaps: pass at most {_MAX_PANELS}")
    finite = np.concatenate([p[1][np.isfinite(p[1])] for p in panels])
    if finite.size == 0:
        raise ValueError("routing holds no finite values to draw")
    vmin, vmax = float(finite.min()), float(finite.max())
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    n = len(panels)
    n_cols = 2 if n == 4 else min(n, 3)
    n_rows_grid = -(-n // n_cols)
    biggest_rows = max(p[1].shape[0] for p in panels)
    biggest_cols = max(p[1].shape[1] for p in panels)
    cell_w = 0.45 if biggest_cols <= 16 else max(6.0 / biggest_cols, 0.03)
    panel_w = min(max(cell_w * biggest_cols + 1.8, 3.2), 12.0)
    panel_h = min(max(0.32 * biggest_rows + 1.0, 1.8), 8.0)
    fig = Figure(figsize=figsize or (panel_w * n_cols + 1.2, panel_h * n_rows_grid + 0.5),
                 layout="constrained")
    axes = fig.subplots(n_rows_grid, n_cols, squeeze=False).ravel()
    palette = colormaps[cmap]
    image = None
    for ax, (name, matrix, rows, cols, xl, yl) in zip(axes, panels, strict=False):
        masked = np.ma.masked_invalid(matrix)
        image = ax.imshow(masked, aspect="auto", cmap=palette, vmin=vmin, vmax=vmax,
                          interpolation="nearest")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=7)
        if len(cols) <= 32:
            ax.set_xticks(range(len(cols)))
            ax.set_xticklabels(cols, fontsize=7)
        else:
            ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(xlabel if xlabel is not None else xl, fontsize=8)
        ax.set_ylabel(ylabel if ylabel is not None else yl, fontsize=8)
        if name:
            ax.set_title(name, fontsize=9)
        show = annotate if annotate is not None else matrix.size <= 160
        if show:
            integral = np.all(np.isnan(matrix) | (matrix == np.round(matrix)))
            for (i, j), value in np.ndenumerate(matrix):
                if not np.isfinite(value):
                    continue
                shade = (value - vmin) / (vmax - vmin)
                ax.text(j, i, f"{value:.0f}" if integral else f"{value:.2f}", ha="center",
                        va="center", fontsize=7, color="white" if shade < 0.6 else "black")
    for ax in axes[n:]:
        ax.set_visible(False)
    bar = fig.colorbar(image, ax=list(axes[:n]), shrink=0.9)
    if np.all(finite == np.round(finite)):  # counts (active experts): integer ticks
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    bar.set_label(label if label is not None else default_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ---------------------------------------------------------------------------------- benchmarks

#: How :func:`benchmark_chart` draws the ``results.csv`` of each benchmark command, recognised
#: by its columns: the metric, the x groups, the bar colours (hue), the panels and rows dropped.
BENCHMARK_LAYOUTS: dict[str, dict[str, Any]] = {
    # mola-ts bench forecast: MSE per horizon and model, one panel per dataset
    "forecast": {"columns": {"dataset", "horizon", "model", "mse"}, "metric": "mse",
                 "x": "horizon", "hue": "model", "panel": "dataset",
                 "drop": {"model": ["mola-foundation"]}},
    # mola-ts demo tep: fault detection rate per fault and model
    "tep": {"columns": {"fault", "model", "fdr"}, "metric": "fdr", "x": "fault",
            "hue": "model", "panel": None, "drop": {"fault": [0]}},
    # mola-ts bench lora: forward+backward time per router and implementation
    "lora": {"columns": {"impl", "router", "tokens", "fwd_bwd_ms"}, "metric": "fwd_bwd_ms",
             "x": "router", "hue": "impl", "panel": "tokens", "drop": {}},
    # mola-ts bench kernels (GPU): forward+backward time per size and method
    "kernels": {"columns": {"plan", "d", "tokens", "method", "fwd_bwd_ms"},
                "metric": "fwd_bwd_ms", "x": "tokens", "hue": "method", "panel": ["plan", "d"],
                "drop": {}},
    # mola-ts bench uncertainty: CRPS per method (and dataset when present)
    "uncertainty": {"columns": {"method", "crps"}, "metric": "crps", "x": "dataset",
                    "hue": "method", "panel": None, "drop": {}},
}


def _layout_for(frame: pd.DataFrame) -> dict[str, Any]:
    for layout in BENCHMARK_LAYOUTS.values():
        if layout["columns"] <= set(frame.columns):
            return layout
    return {}


def benchmark_chart(results: pd.DataFrame | str | os.PathLike, metric: str | None = None, *,
                    x: str | None = None, hue: str | None = None,
                    panel: str | Sequence[str] | None = None, logy: bool = False,
                    title: str | None = None, figsize: tuple[float, float] | None = None
                    ) -> Figure:
    """Grouped bar chart of a benchmark's results (one bar per row).

    The ``results.csv`` of ``mola-ts bench forecast``, ``mola-ts demo tep``, ``mola-ts bench
    lora``, ``mola-ts bench kernels`` (GPU timings) and ``mola-ts bench uncertainty`` are
    recognised by their columns (:data:`BENCHMARK_LAYOUTS`), so ``benchmark_chart(path)`` is
    enough; any argument given overrides the recognised layout.

    Parameters
    ----------
    results : DataFrame or path of a CSV file
        One row per measurement.
    metric : str, optional
        Column drawn as bar heights.
    x : str, optional
        Column whose values form the groups along the x axis (None: one group).
    hue : str, optional
        Column whose values get one bar colour each (None: one colour).
    panel : str or sequence of str, optional
        Column(s) splitting the rows into panels (None: one panel).
    logy : bool
        Logarithmic y axis (timings spanning decades).
    title : str, optional
        Figure title.
    figsize : (float, float), optional
        Default from the number of groups and panels.

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        When two rows share the same panel, x and hue values (add the column that tells them
        apart as ``panel``, or filter the rows first), or a named column is absent.
    """
    frame = pd.read_csv(results) if isinstance(results, (str, os.PathLike)) else results
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"results must be a DataFrame or a CSV path, got "
                        f"{type(results).__name__}")
    layout = _layout_for(frame)
    explicit = metric is not None
    metric = metric if explicit else layout.get("metric")
    if metric is None:
        raise ValueError("the results' columns match no known benchmark layout "
                         f"({sorted(BENCHMARK_LAYOUTS)}); give metric=, x= and hue=")
    if not explicit or layout.get("metric") == metric:
        x = x if x is not None else layout.get("x")
        hue = hue if hue is not None else layout.get("hue")
        panel = panel if panel is not None else layout.get("panel")
        for column, dropped in layout.get("drop", {}).items():
            if column in frame.columns:
                frame = frame[~frame[column].isin(dropped)]
    if x is not None and x not in frame.columns:
        x = None if layout.get("x") == x else x  # an optional layout column (uncertainty)
    panels = [] if panel is None else ([panel] if isinstance(panel, str) else list(panel))
    for column in [metric, x, hue, *panels]:
        if column is not None and column not in frame.columns:
            raise ValueError(f"results has no column {column!r}; it has {list(frame.columns)}")
    frame = frame[np.isfinite(pd.to_numeric(frame[metric], errors="coerce"))]
    if frame.empty:
        raise ValueError(f"results has no finite {metric!r} values to draw")
    keys = [c for c in [*panels, x, hue] if c is not None]
    if keys and frame.duplicated(keys).any():
        raise ValueError(f"several rows share the same {keys}; add the column that tells them "
                         "apart as panel=, or filter the rows first")
    hues = list(dict.fromkeys(frame[hue])) if hue is not None else [None]
    colours = colormaps["tab10" if len(hues) <= 10 else "tab20"]
    groups = list(frame.groupby(panels, sort=False)) if panels else [((), frame)]
    n = len(groups)
    if n > _MAX_PANELS:
        raise ValueError(f"{n} panels: filter the rows or choose another panel column")
    n_x = max((sub[x].nunique() if x is not None else 1) for _, sub in groups)
    width_each = min(max(0.25 * n_x * len(hues) + 1.5, 4.0), 14.0)
    n_cols = max(1, min(n, 3, int(16.0 // width_each)))  # at most about 16 inches wide
    n_rows = -(-n // n_cols)
    fig = Figure(figsize=figsize or (width_each * n_cols + 1.5, 2.8 * n_rows + 0.4),
                 layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (key, sub) in zip(axes, groups, strict=False):
        xs = list(dict.fromkeys(sub[x])) if x is not None else [None]
        if x is not None and all(isinstance(v, (int, float, np.number)) for v in xs):
            xs = sorted(xs)
        width = 0.8 / len(hues)
        for j, h in enumerate(hues):
            rows = sub if h is None else sub[sub[hue] == h]
            heights = []
            for value in xs:
                match = rows if value is None else rows[rows[x] == value]
                heights.append(float(match[metric].iloc[0]) if len(match) else np.nan)
            positions = np.arange(len(xs)) + (j - (len(hues) - 1) / 2) * width
            ax.bar(positions, heights, width * 0.95, color=colours(j % colours.N),
                   label=None if h is None else str(h))
        ticks = ["" if v is None else str(v) for v in xs]
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(ticks, fontsize=7,
                           rotation=30 if sum(map(len, ticks)) > 60 else 0)
        if x is not None:
            ax.set_xlabel(x, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3, lw=0.5)
        if logy:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        if panels:
            parts = key if isinstance(key, tuple) else (key,)
            ax.set_title(", ".join(f"{c} = {v}" for c, v in zip(panels, parts, strict=True)),
                         fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    if hue is not None:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title=hue,
                   title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
