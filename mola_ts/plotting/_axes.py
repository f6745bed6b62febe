"""Shared pieces of the figures: array conversion, the time axis, the panel limit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.axes import Axes

#: Most panels (or heatmaps) one figure draws.
MAX_PANELS = 12


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

