"""Monitoring figures: control charts, the grid of every monitoring level, contributions."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._axes import _date_axis

__all__ = ["control_chart", "monitor_chart", "contribution_chart", "LEVEL_TITLES"]

#: Column titles of the monitoring levels in :func:`monitor_chart`.
LEVEL_TITLES: dict[str, str] = {
    "T2": "Hotelling T²",
    "W": "quantile CUSUM W",
    "SPE": "SPE",
    "index": "block index $P_b$",
}


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
