"""Point, probabilistic and detection metrics.

Detection metrics follow the monitoring spec §5 (Tennessee Eastman protocol): in a test run the
fault enters after sample ``onset`` (160), i.e. samples ``onset+1 ..`` (1-based) are faulty.

- FDR (fault detection rate): share of the faulty samples that raise an alarm.
- FAR (false alarm rate): share of in-control samples that raise an alarm.
- Detection delay: 1-based index of the first alarm at or after sample ``onset + 1`` that starts
  a run of at least ``run`` consecutive alarms, minus ``onset``; in samples (x 3 min for TEP).
  A fault caught at its first faulty sample has delay 1. NaN when no such run exists.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "mse",
    "mae",
    "fault_detection_rate",
    "false_alarm_rate",
    "detection_delay",
]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("y_true is empty")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} NaN/inf values")
    return y_true, y_pred


def mse(y_true, y_pred) -> float:
    """Mean squared error over every element (windows, steps and variates alike)."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean((y_true - y_pred) ** 2))


def mae(y_true, y_pred) -> float:
    """Mean absolute error over every element."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def _alarms(alarms) -> np.ndarray:
    arr = np.asarray(alarms)
    if arr.ndim != 1:
        raise ValueError(f"alarms must be 1-D, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("alarms must be boolean or 0/1")
        arr = arr.astype(bool)
    return arr


def fault_detection_rate(alarms, onset: int = 160) -> float:
    """Share of samples after ``onset`` (the faulty ones) that raise an alarm."""
    arr = _alarms(alarms)
    if not 0 <= onset < len(arr):
        raise ValueError(f"onset {onset} must lie inside the {len(arr)} samples")
    return float(arr[onset:].mean())


def false_alarm_rate(alarms, start: int = 0, stop: int | None = None) -> float:
    """Share of in-control samples ``alarms[start:stop]`` that raise an alarm.

    For TEP: ``false_alarm_rate(alarms_d00_te, start=160)`` (samples 161..960 of the normal
    test run) or ``false_alarm_rate(alarms_dNN_te, stop=160)`` (before a fault enters).
    """
    arr = _alarms(alarms)[start:stop]
    if arr.size == 0:
        raise ValueError(f"no samples between start={start} and stop={stop}")
    return float(arr.mean())


def detection_delay(alarms, onset: int = 160, run: int = 3) -> float:
    """Samples from the fault onset to the first alarm that starts a run of ``run`` alarms."""
    arr = _alarms(alarms)
    if run < 1:
        raise ValueError(f"run must be >= 1, got {run}")
    after = arr[onset:].astype(np.int64)
    if after.size < run:
        return float("nan")
    window_sums = np.convolve(after, np.ones(run, dtype=np.int64), mode="valid")
    hits = np.flatnonzero(window_sums == run)
    return float(hits[0] + 1) if hits.size else float("nan")
