"""Shared pieces of the figures: array conversion, the time axis, tidy ticks, the panel limit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

#: Most panels (or heatmaps) one figure draws.
MAX_PANELS = 12
#: The x axes a time chart offers: the frame's own index, sample numbers, hours from the start.
TIME_AXES = ("index", "samples", "hours")


def _to_numpy(values: Any) -> np.ndarray:
    """A float array from an array-like, a pandas object or a (CPU or GPU) torch tensor."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def _date_axis(ax: Axes, index: pd.Index, max_ticks: int = 8) -> None:
    """Compact date ticks for a DatetimeIndex axis (no-op otherwise)."""
    if isinstance(index, pd.DatetimeIndex):
        locator = mdates.AutoDateLocator(minticks=3, maxticks=max_ticks)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _time_coordinates(index: pd.Index, time_axis: str, name: str = "stats"
                      ) -> tuple[pd.Index | np.ndarray, str | None]:
    """The x values of a time chart and the x-axis label (None: the index speaks for itself).

    ``"index"``: the index itself (dates get compact date ticks); ``"samples"``: the row
    position 0, 1, ... (e.g. a TEP run's sample number); ``"hours"``: hours since the first row
    of a DatetimeIndex, or the hours of a TimedeltaIndex.
    """
    if not isinstance(time_axis, str) or time_axis not in TIME_AXES:
        raise ValueError(f"time_axis must be one of {list(TIME_AXES)}, got {time_axis!r}")
    if time_axis == "index":
        return index, None
    if time_axis == "samples":
        return np.arange(len(index), dtype=float), "sample"
    if isinstance(index, pd.DatetimeIndex):
        elapsed = index - index[0] if len(index) else pd.TimedeltaIndex([])
    elif isinstance(index, pd.TimedeltaIndex):
        elapsed = index
    else:
        raise ValueError(f"time_axis='hours' needs a DatetimeIndex or TimedeltaIndex; {name} has "
                         f"a {type(index).__name__}: use time_axis='samples' or 'index'")
    return np.asarray(elapsed / pd.Timedelta(hours=1), dtype=float), "hours from the start"


def _tidy_ticks(ax: Axes, *, logy: bool, x_bins: int | None = None) -> None:
    """Few, small tick labels that cannot overlap on a short panel.

    A log axis labels its decades only (at most about five); one spanning less than a decade
    and a half gets three plain-number ticks instead of matplotlib's crowded minor labels
    (``1.1x10^0``, ``1.125x10^0``, ...). ``x_bins`` caps the ticks of a numeric x axis.
    """
    ax.tick_params(which="both", labelsize=7)
    if logy:
        low, high = ax.get_ylim()
        if low > 0 and high / low < 10 ** 1.5:
            ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
            ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        else:
            ax.yaxis.set_major_locator(LogLocator(base=10.0, numticks=5))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    if x_bins is not None:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=x_bins))
