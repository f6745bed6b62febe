"""Figures (matplotlib) built from plain arrays and DataFrames.

The functions take data, not estimators, so any model family can use them: the monitor's
``statistics(X)`` and ``contributions(X)`` frames, a forecaster's predictions, and so on. Each
returns a :class:`matplotlib.figure.Figure` made without pyplot's global state (safe on a
headless machine); save it with ``fig.savefig(path)``.

- :func:`control_chart`: statistics against their limits, one panel per level, the fault onset
  and the alarms marked.
- :func:`contribution_chart`: per-variable contributions as sorted bars.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["control_chart", "contribution_chart"]


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
        Position (0-based row) of the first faulty sample; a dashed line marks it.
    alarm_column : str or None
        A 0/1 column whose alarms are marked on the last panel (ignored when absent).
    titles : sequence of str, optional
        Panel titles (default: the statistic column names).
    logy : bool
        Logarithmic y axis (statistics span decades once a fault sets in); non-positive values
        are drawn at the axis floor.
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
    if onset is not None and not 0 <= onset < len(stats):
        raise ValueError(f"onset {onset} must be a row position inside the {len(stats)} rows")
    n = len(panels)
    fig = Figure(figsize=figsize or (10, 1.9 * n + 0.8), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    x = stats.index
    for i, (ax, (value_col, limit_col)) in enumerate(zip(axes, panels, strict=True)):
        values = stats[value_col].to_numpy(dtype=float)
        limits = stats[limit_col].to_numpy(dtype=float)
        if logy:
            finite = values[np.isfinite(values) & (values > 0)]
            floor = finite.min() if finite.size else 1e-12
            values = np.where(values > 0, values, floor)
            ax.set_yscale("log")
        ax.plot(x, values, lw=0.8, color="tab:blue", label=value_col)
        ax.plot(x, limits, lw=1.0, color="tab:red", ls="--", label="limit")
        beyond = values > limits
        ax.plot(x[beyond], values[beyond], ".", ms=2.5, color="tab:red")
        if onset is not None:
            ax.axvline(x[onset], color="black", ls=":", lw=1.0,
                       label="fault onset" if i == 0 else None)
        ax.set_ylabel(titles[i] if titles is not None else value_col, fontsize=8)
        ax.tick_params(labelsize=7)
    if alarm_column is not None and alarm_column in stats.columns:
        alarms = stats[alarm_column].to_numpy() == 1
        ax = axes[-1]
        low = ax.get_ylim()[0]
        ax.plot(x[alarms], np.full(int(alarms.sum()), low), "|", color="tab:orange", ms=6,
                label="alarm")
    axes[0].legend(loc="upper left", fontsize=7, ncol=4)
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
    if title:
        ax.set_title(title, fontsize=10)
    return fig
