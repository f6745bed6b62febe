"""The long-term forecasting protocol (Time-Series-Library) and sliding windows.

Splits (forecasting spec §3; each later split starts ``lookback`` rows early so that its first
window has history):

- ``"ett_hour"`` (ETTh1/ETTh2): train [0, 8640), val [8640 - L, 11520), test [11520 - L, 14400).
- ``"ett_minute"`` (ETTm1/ETTm2): the same borders times 4.
- ``"ratio"`` (everything else): n_train = int(0.7 n), n_test = int(0.2 n), n_val the rest;
  train [0, n_train), val [n_train - L, n_train + n_val), test [n - n_test - L, n).

The scaler is fitted on the train rows only and applied to every split; metrics are computed on
the scaled data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler

from .registry import get_dataset_info
from .validation import check_number, check_series

__all__ = [
    "SPLIT_RULES",
    "LTSFSplit",
    "ltsf_borders",
    "ltsf_split",
    "n_windows",
    "sliding_windows",
    "WindowDataset",
]

SPLIT_RULES = ("ett_hour", "ett_minute", "ratio")
_INT = (int, np.integer)


def _real_2d(values, name: str = "values") -> np.ndarray:
    """``values`` as a 2-D array of real numbers (no copy when it already is one)."""
    values = np.asarray(values)
    if values.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (time, variables), got shape {values.shape}")
    return values
_ETT_HOUR = (12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24)  # 8640 train, 2880 val, 2880 test rows


def ltsf_borders(n_rows: int, rule: str, lookback: int) -> dict[str, tuple[int, int]]:
    """Row borders ``{"train": (a, b), "val": (a, b), "test": (a, b)}`` of the LTSF protocol."""
    if rule not in SPLIT_RULES:
        raise ValueError(f"rule must be one of {SPLIT_RULES}, got {rule!r}")
    n_rows = check_number(n_rows, "n_rows", min_val=0)
    lookback = check_number(lookback, "lookback", min_val=1)
    if rule in ("ett_hour", "ett_minute"):
        factor = 1 if rule == "ett_hour" else 4
        n_train, n_val, n_test = (part * factor for part in _ETT_HOUR)
        end = n_train + n_val + n_test
        if n_rows < end:
            raise ValueError(f"the {rule} split needs at least {end} rows, the data has {n_rows}")
        borders = {
            "train": (0, n_train),
            "val": (n_train - lookback, n_train + n_val),
            "test": (n_train + n_val - lookback, end),
        }
    else:
        n_train = int(n_rows * 0.7)
        n_test = int(n_rows * 0.2)
        n_val = n_rows - n_train - n_test
        borders = {
            "train": (0, n_train),
            "val": (n_train - lookback, n_train + n_val),
            "test": (n_rows - n_test - lookback, n_rows),
        }
    if borders["val"][0] < 0:
        raise ValueError(f"lookback {lookback} is longer than the train split of {n_rows} rows")
    return borders


@dataclass
class LTSFSplit:
    """Scaled train/val/test frames of one dataset, the train-only scaler and the borders."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    scaler: StandardScaler
    borders: dict[str, tuple[int, int]]
    lookback: int
    rule: str

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The three scaled splits as float32 arrays."""
        return tuple(f.to_numpy(dtype=np.float32) for f in (self.train, self.val, self.test))


def ltsf_split(data: pd.DataFrame | str, rule: str | None = None, lookback: int | None = None,
               *, scale: bool = True, **load_kwargs) -> LTSFSplit:
    """Split a dataset by the LTSF protocol and scale it with a train-only StandardScaler.

    Parameters
    ----------
    data : DataFrame or str
        A wide frame (rows in time order) or a registered dataset name, which is loaded (extra
        keyword arguments go to :func:`mola_ts.data.load_dataset`).
    rule : {"ett_hour", "ett_minute", "ratio"}, optional
        Defaults to the registry's rule for a named dataset, else ``"ratio"``.
    lookback : int, optional
        Defaults to the registry's lookback for a named dataset, else 96.
    """
    if isinstance(data, str):
        from .loaders import load_dataset

        info = get_dataset_info(data)
        rule = rule or info.split
        lookback = lookback or info.lookback
        data = load_dataset(info.name, **load_kwargs)
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a DataFrame or a dataset name, got {type(data).__name__}")
    rule = rule or "ratio"
    lookback = 96 if lookback is None else check_number(lookback, "lookback", min_val=1)
    # dtype, NaN/inf, duplicated or unsorted timestamps: named errors; values is a copy
    values = check_series(data, name="data").values
    borders = ltsf_borders(len(data), rule, lookback)
    scaler = StandardScaler()
    train_a, train_b = borders["train"]
    scaler.fit(values[train_a:train_b])
    scaled = scaler.transform(values) if scale else values.copy()
    frame = pd.DataFrame(scaled, index=data.index, columns=data.columns)
    parts = {name: frame.iloc[a:b] for name, (a, b) in borders.items()}
    return LTSFSplit(parts["train"], parts["val"], parts["test"], scaler, borders, lookback, rule)


def n_windows(n_rows: int, lookback: int, horizon: int, stride: int = 1) -> int:
    """Number of windows with start i such that i + lookback + horizon <= n_rows."""
    n_rows = check_number(n_rows, "n_rows", min_val=0)
    lookback = check_number(lookback, "lookback", min_val=1)
    horizon = check_number(horizon, "horizon", min_val=0)
    stride = check_number(stride, "stride", min_val=1)
    span = n_rows - lookback - horizon
    return 0 if span < 0 else span // stride + 1


def sliding_windows(values: np.ndarray, lookback: int, horizon: int, stride: int = 1
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Read-only views ``(x, y)`` of shapes (N, lookback, C) and (N, horizon, C).

    ``values``: a 2-D array of real numbers (time, variables); ``lookback`` and ``stride`` are
    integers >= 1, ``horizon`` >= 0.
    """
    values = _real_2d(values)
    count = n_windows(len(values), lookback, horizon, stride)
    if count == 0:
        raise ValueError(
            f"a series of {len(values)} rows is too short for lookback {lookback} + "
            f"horizon {horizon}"
        )
    full = np.lib.stride_tricks.sliding_window_view(values, lookback + horizon, axis=0)
    full = full[: count * stride : stride].transpose(0, 2, 1)  # (N, L + H, C)
    return full[:, :lookback], full[:, lookback:]


class WindowDataset(torch.utils.data.Dataset):
    """Lazy sliding windows over a (time, variables) array: item i is (x_i, y_i) float32.

    The series is stored once; windows are slices, so memory does not grow with the number of
    windows. ``values`` must be a 2-D array of finite real numbers (the training data of a
    network: NaN or inf would only surface later as a NaN loss).
    """

    def __init__(self, values: np.ndarray, lookback: int, horizon: int, stride: int = 1):
        values = _real_2d(values)
        with np.errstate(over="ignore"):
            values = np.asarray(values, dtype=np.float32)
        finite = np.isfinite(values)
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1))
            raise ValueError(
                f"values holds {int((~finite).sum())} NaN or infinite values (in float32), "
                f"first in row {rows[0]}"
            )
        self.series = torch.from_numpy(np.ascontiguousarray(values))
        self.lookback = check_number(lookback, "lookback", min_val=1)
        self.horizon = check_number(horizon, "horizon", min_val=0)
        self.stride = check_number(stride, "stride", min_val=1)
        self._count = n_windows(len(values), self.lookback, self.horizon, self.stride)
        if self._count == 0:
            raise ValueError(
                f"a series of {len(values)} rows is too short for lookback {lookback} + "
                f"horizon {horizon}"
            )

    def __len__(self) -> int:
        return self._count

    def get_batch(self, indices: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``indices`` stacked into (B, lookback, C) and (B, horizon, C) in one gather."""
        starts = torch.as_tensor(indices, dtype=torch.long) * self.stride
        offsets = torch.arange(self.lookback + self.horizon)
        block = self.series[starts[:, None] + offsets[None, :]]
        return block[:, : self.lookback], block[:, self.lookback :]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(i, bool) or not isinstance(i, _INT):
            raise TypeError(f"window index must be an integer, got {type(i).__name__}")
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(i)
        start = i * self.stride
        mid = start + self.lookback
        return self.series[start:mid], self.series[mid : mid + self.horizon]
