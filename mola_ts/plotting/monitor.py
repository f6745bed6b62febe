"""Monitoring figures: control charts, the grid of every monitoring level, contributions."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._axes import _date_axis, _tidy_ticks, _time_coordinates

__all__ = ["control_chart", "monitor_chart", "contribution_chart", "LEVEL_TITLES",
           "OFF_SCALE_FACTOR"]

#: Column titles of the monitoring levels in :func:`monitor_chart`.
LEVEL_TITLES: dict[str, str] = {
    "T2": "Hotelling T²",
    "W": "quantile CUSUM W",
    "SPE": "SPE",
    "index": "block index $P_b$",
}


#: A value beyond this many times the panel's scale (its largest finite limit) is off scale.
OFF_SCALE_FACTOR = 1e6
_OFF_SCALE_LABEL = "off scale (inf or huge), at the axis edge"
_SHARED_LABELS = ("beyond limit", _OFF_SCALE_LABEL, "fault onset", "alarm")


def _panel_scale(values: np.ndarray, limits: np.ndarray) -> float:
    """The size against which a value is off scale: the largest finite non-zero limit, else the
    median finite non-zero value, else 1."""
    for candidates in (limits, values):
        finite = np.abs(candidates[np.isfinite(candidates)])
        finite = finite[finite > 0]
        if finite.size:
            return float(finite.max() if candidates is limits else np.median(finite))
    return 1.0


def _on_scale(values: np.ndarray, limits: np.ndarray, logy: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The values to draw, and the masks of those pulled to the top and to the bottom.

    ``+-inf`` and finite values beyond ``OFF_SCALE_FACTOR`` times the panel's scale (1e300 from
    an overflowing statistic) would blank the panel or squash every other point; they are drawn
    at the edge of the axis instead and marked. On a log axis, values at or below zero sit on
    the axis floor (a decade under the limit at most); NaN stays NaN (not drawn).
    """
    bound = OFF_SCALE_FACTOR * _panel_scale(values, limits)
    with np.errstate(invalid="ignore"):
        high = values > bound
        low = values < -bound
    kept = values[np.isfinite(values) & ~high & ~low]
    shown_limits = limits[np.isfinite(limits) & (np.abs(limits) <= bound)]
    drawn = values.copy()
    if logy:
        # floor: the 1st percentile of the positive values (a few near-zero in-control values
        # would otherwise stretch the axis over decades), kept a decade below the limit
        positive = kept[kept > 0]
        floor = float(np.percentile(positive, 1)) if positive.size else 1e-12
        positive_limits = shown_limits[shown_limits > 0]
        if positive_limits.size:
            floor = min(floor, float(positive_limits.min()) / 10)
        reference = np.concatenate([positive, positive_limits])
        top = float(reference.max()) * 3 if reference.size else max(floor * 10, 1.0)
        drawn[low] = floor
        drawn = np.maximum(drawn, floor)  # NaN stays NaN
    else:
        reference = np.concatenate([kept, shown_limits])
        highest = float(reference.max()) if reference.size else 1.0
        lowest = float(reference.min()) if reference.size else 0.0
        margin = 0.1 * (highest - lowest) or 0.1 * abs(highest) or 1.0
        top, bottom = highest + margin, lowest - margin
        drawn[low] = bottom
    drawn[high] = top
    return drawn, high, low


def _draw_statistic(ax: Axes, x: pd.Index | np.ndarray, values: np.ndarray, limits: np.ndarray,
                    *, label: str, logy: bool, onset: int | None, onset_label: str | None
                    ) -> None:
    """One control-chart panel: the statistic, its limit, the points beyond it, the onset."""
    values = np.asarray(values, dtype=float)
    limits = np.asarray(limits, dtype=float)
    drawn, high, low = _on_scale(values, limits, logy)
    if logy:
        ax.set_yscale("log")
    ax.plot(x, drawn, lw=0.8, color="tab:blue", label=label)
    ax.plot(x, limits, lw=1.0, color="tab:red", ls="--", label="limit")
    with np.errstate(invalid="ignore"):
        beyond = values > limits
    ax.plot(x[beyond], drawn[beyond], ".", ms=2.5, color="tab:red", label="beyond limit")
    if high.any() or low.any():
        ax.plot(x[high], drawn[high], "^", ms=4, color="tab:purple", label=_OFF_SCALE_LABEL)
        ax.plot(x[low], drawn[low], "v", ms=4, color="tab:purple", label="_off_scale_low")
    if onset is not None:
        ax.axvline(x[onset], color="black", ls=":", lw=1.0, label=onset_label)
    _tidy_ticks(ax, logy=logy)


def _mark_alarms(ax: Axes, x: pd.Index | np.ndarray, alarms: np.ndarray) -> None:
    low = ax.get_ylim()[0]
    ax.plot(x[alarms], np.full(int(alarms.sum()), low), "|", color="tab:orange", ms=6,
            label="alarm")


def _figure_legend(fig: Figure, axes: Sequence[Axes], first_label: str | None = None) -> None:
    """One legend below the panels: every entry of ``axes[0]``, plus the shared markers (beyond
    limit, off scale, onset, alarm) that only other panels have; the alarms last."""
    handles, labels = axes[0].get_legend_handles_labels()
    if first_label is not None and labels:
        labels[0] = first_label
    for ax in axes[1:]:
        for handle, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab in _SHARED_LABELS and lab not in labels:
                handles.append(handle)
                labels.append(lab)
    if "alarm" in labels:
        i = labels.index("alarm")
        handles.append(handles.pop(i))
        labels.append(labels.pop(i))
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6),
               fontsize=8)


def _check_onset(onset: int | None, n_rows: int) -> None:
    if onset is not None and not 0 <= onset < n_rows:
        raise ValueError(f"onset {onset} must be a row position inside the {n_rows} rows")


def _pairs(stats: pd.DataFrame) -> list[tuple[str, str]]:
    return [(c, f"{c}_limit") for c in stats.columns if f"{c}_limit" in stats.columns]


def control_chart(stats: pd.DataFrame, panels: Sequence[tuple[str, str]] | None = None, *,
                  onset: int | None = None, alarm_column: str | None = "alarm",
                  titles: Sequence[str] | None = None, logy: bool = True,
                  time_axis: str = "index", title: str | None = None,
                  figsize: tuple[float, float] | None = None) -> Figure:
    """Control chart: each statistic against its limit, one panel per level.

    Every value is drawn: ``+inf`` or a value more than :data:`OFF_SCALE_FACTOR` times the
    panel's largest limit (an overflowing statistic) sits at the top of the axis with a marker
    (the legend's "off scale" entry) instead of blanking the panel.

    Parameters
    ----------
    stats : DataFrame
        One row per sample: statistic columns and limit columns.
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
    time_axis : {"index", "samples", "hours"}
        The x axis: the index of ``stats`` (dates for a DatetimeIndex), the sample number
        (row position from 0), or the hours since the first row (needs a DatetimeIndex or a
        TimedeltaIndex). The TEP loader's index is an invented calendar (2000-01-01, every 3
        minutes): ``"hours"`` or ``"samples"`` tell the truth.
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

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> t2 = np.r_[np.ones(30), np.full(20, np.inf)]  # an overflowing statistic
    >>> stats = pd.DataFrame({"T2": t2, "T2_limit": 10.0})
    >>> fig = control_chart(stats, onset=30, time_axis="samples")
    >>> bool(np.isfinite(fig.axes[0].lines[0].get_ydata()).all())
    True
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
    x, xlabel = _time_coordinates(stats.index, time_axis)
    n = len(panels)
    fig = Figure(figsize=figsize or (10, 1.9 * n + 0.8), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, (value_col, limit_col)) in enumerate(zip(axes, panels, strict=True)):
        _draw_statistic(ax, x, stats[value_col].to_numpy(dtype=float),
                        stats[limit_col].to_numpy(dtype=float), label=value_col, logy=logy,
                        onset=onset, onset_label="fault onset" if i == 0 else None)
        ax.set_ylabel(titles[i] if titles is not None else value_col, fontsize=8)
    if alarm_column is not None and alarm_column in stats.columns:
        _mark_alarms(axes[-1], x, stats[alarm_column].to_numpy() == 1)
    # one legend for all panels (named "statistic" when there are several)
    _figure_legend(fig, axes, "statistic" if n > 1 else None)
    if xlabel is None:
        _date_axis(axes[-1], stats.index)
    else:
        axes[-1].set_xlabel(xlabel, fontsize=8)
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
                  logy: bool = True, time_axis: str = "index", title: str | None = None,
                  figsize: tuple[float, float] | None = None) -> Figure:
    """Every monitoring level at once: a grid of blocks x levels, the global index below.

    Made for :meth:`mola_ts.monitor.MOLAMonitor.statistics`, whose columns are ``b.T2``,
    ``b.W``, ``b.SPE``, ``b.index`` for every block ``b`` (each with a ``_limit`` column), then
    ``PFI``, ``PFI_limit`` and ``alarm``. Any frame with the same naming works. By default the
    grid shows the levels that MOLA fuses into its block index by default (T², W) and the index
    itself; pass ``levels=("T2", "W", "SPE", "index")`` to add the SPE column (fused only
    with ``use_spe=True``, reported always).

    The panels share their x axis; only the bottom row carries x tick labels, and every axis
    keeps a few small tick labels (decades on log axes) so that none overlap. Values that are
    ``+inf`` or off scale are drawn at the top of their axis and marked, as in
    :func:`control_chart`.

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
    time_axis : {"index", "samples", "hours"}
        The x axis: the index of ``stats``, the sample number (row position from 0) or the
        hours since the first row (see :func:`control_chart`).
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
    x, xlabel = _time_coordinates(stats.index, time_axis)
    dates = xlabel is None and isinstance(stats.index, pd.DatetimeIndex)
    n_rows = len(blocks) + (global_column is not None)
    n_cols = len(levels)
    fig = Figure(figsize=figsize or (3.4 * n_cols + 1.0, 1.4 * n_rows + 1.0),
                 layout="constrained")
    grid = fig.add_gridspec(n_rows, n_cols)
    first: Axes | None = None
    axes: list[Axes] = []
    bottom: list[Axes] = []  # the axes whose x tick labels are shown
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
            else:
                bottom.append(ax)
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
        bottom = [ax]
    # the x ticks are shared by every panel: few enough for the narrowest labelled one
    max_ticks = 8 if global_column is not None else 6
    if dates:
        _date_axis(axes[-1], stats.index, max_ticks=max_ticks)
    else:
        axes[-1].xaxis.set_major_locator(MaxNLocator(nbins=max_ticks - 1))
    for ax in bottom:
        if xlabel is not None:
            ax.set_xlabel(xlabel, fontsize=8)
    fig.align_ylabels(axes)
    _figure_legend(fig, [axes[-1], *axes[:-1]])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def contribution_chart(contributions: pd.Series | pd.DataFrame, *, top: int | None = 15,
                       descriptions: Mapping[str, str] | None = None, title: str | None = None,
                       figsize: tuple[float, float] | None = None) -> Figure:
    """Bar chart of per-variable contributions, largest first.

    Parameters
    ----------
    contributions : Series (variable -> contribution) or DataFrame (rows = samples)
        A DataFrame is averaged over its rows (NaN rows ignored), e.g. the samples in alarm.
    top : int or None
        Show only the ``top`` largest (None: all).
    descriptions : mapping of str to str, optional
        Text shown after each variable's tag in its bar label (``"XMEAS(9): Reactor
        temperature"``), e.g. :data:`mola_ts.data.TEP_DESCRIPTIONS`; variables it does not
        name keep their tag alone.
    title : str, optional
        Axes title.
    figsize : (float, float), optional
        Figure size in inches (default 8 x 4, taller with descriptions).

    Returns
    -------
    Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from mola_ts.data import TEP_DESCRIPTIONS
    >>> shares = pd.Series({"XMEAS(9)": 3.0, "XMV(10)": 1.0})
    >>> fig = contribution_chart(shares, descriptions=TEP_DESCRIPTIONS)
    >>> [label.get_text() for label in fig.axes[0].get_xticklabels()]
    ['XMEAS(9): Reactor temperature', 'XMV(10): Reactor cooling water flow']
    """
    if isinstance(contributions, pd.DataFrame):
        values = contributions.mean(axis=0, skipna=True)
    elif isinstance(contributions, pd.Series):
        values = contributions.astype(float)
    else:
        raise TypeError("contributions must be a pandas Series or DataFrame, got "
                        f"{type(contributions).__name__}")
    if descriptions is not None and not isinstance(descriptions, Mapping):
        raise TypeError("descriptions must be a mapping of variable name -> text, got "
                        f"{type(descriptions).__name__}")
    values = values.dropna().sort_values(ascending=False)
    if values.empty:
        raise ValueError("contributions holds no finite values to draw")
    if top is not None:
        values = values.iloc[:top]
    labels = []
    for name in values.index:
        text = descriptions.get(name, descriptions.get(str(name))) if descriptions else None
        labels.append(f"{name}: {text}" if text else str(name))
    if figsize is None:
        figsize = (8, 4) if descriptions is None else (8, 5.5)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(values)), values.to_numpy(), color="tab:blue")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_ylabel("contribution")
    ax.grid(axis="y", alpha=0.3, lw=0.5)
    if title:
        ax.set_title(title, fontsize=10)
    return fig
