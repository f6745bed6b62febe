"""Conversions between the wide layout (one column per variable) and Nixtla's long layout.

Long layout: columns ``unique_id`` (series name), ``ds`` (timestamp) and ``y`` (value), one row
per series and time step. The estimators work on the wide layout; these helpers convert at the
boundary and never modify their input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["to_wide", "to_long"]

_LONG = ("unique_id", "ds", "y")


def to_wide(long: pd.DataFrame, *, id_col: str = "unique_id", time_col: str = "ds",
            value_col: str = "y") -> pd.DataFrame:
    """Pivot a long frame into a wide one (index = ``ds``, one column per ``unique_id``).

    Every series must cover the same timestamps; a missing (series, time) pair or a duplicated
    one is an error, never silently filled or dropped.
    """
    if not isinstance(long, pd.DataFrame):
        raise TypeError(f"long must be a DataFrame, got {type(long).__name__}")
    missing = [c for c in (id_col, time_col, value_col) if c not in long.columns]
    if missing:
        raise ValueError(f"long is missing the columns {missing}; it has {list(long.columns)}")
    for col in (id_col, time_col):
        absent = np.flatnonzero(long[col].isna().to_numpy())
        if len(absent):
            raise ValueError(f"long has {len(absent)} missing values in {col!r}, first in row "
                             f"{absent[0]} (label {long.index[absent[0]]!r})")
    dup = long.duplicated([id_col, time_col])
    if dup.any():
        raise ValueError(f"long has {int(dup.sum())} duplicated ({id_col}, {time_col}) pairs")
    wide = long.pivot(index=time_col, columns=id_col, values=value_col).sort_index()
    holes = int(wide.isna().sum().sum()) - int(long[value_col].isna().sum())
    if holes > 0:
        raise ValueError(
            f"the series in long do not share their timestamps: {holes} (series, time) pairs "
            "are absent; align them first"
        )
    wide.columns = [str(c) for c in wide.columns]
    wide.columns.name = None
    if not isinstance(wide.index, pd.DatetimeIndex) and pd.api.types.is_datetime64_any_dtype(
            long[time_col]):
        wide.index = pd.DatetimeIndex(wide.index)
    return wide


def to_long(wide: pd.DataFrame, *, id_col: str = "unique_id", time_col: str = "ds",
            value_col: str = "y") -> pd.DataFrame:
    """Melt a wide frame (index = time) into the long ``unique_id, ds, y`` layout."""
    if not isinstance(wide, pd.DataFrame):
        raise TypeError(f"wide must be a DataFrame, got {type(wide).__name__}")
    if isinstance(wide.columns, pd.MultiIndex):
        raise ValueError(f"wide has {wide.columns.nlevels} levels of column names; give one "
                         "level (one column per series)")
    clash = [c for c in wide.columns if c in (time_col, value_col)]
    if clash:
        raise ValueError(f"wide has columns named {clash}, which the long layout uses for "
                         f"{time_col!r} / {value_col!r}; rename them")
    frame = wide.copy()
    frame.index = frame.index.rename(time_col)
    long = frame.reset_index().melt(id_vars=time_col, var_name=id_col, value_name=value_col)
    return long[[id_col, time_col, value_col]].reset_index(drop=True)
