"""What MoLA makes of its segments after training: the losses per segment in its history, the
segments adaptation never improved, and their fallback (the foundation rolled out recursively).

On a short series the per-segment adaptation can fail to beat its starting point on the
validation rows for every segment: each stops at epoch 0, and the restored adapter is the
foundation itself, which forecasts the first ``segment_length`` steps for *every* segment (the
same values repeated along the horizon). :class:`~mola_ts.forecast.MoLAForecaster` then warns
with :class:`DegenerateSegmentsWarning` and forecasts those segments by rolling the foundation
forward (:func:`recursive_rollout`: each forecast segment is appended to the window that
forecasts the next), which is the sound forecast a one-segment model can give. With covariates
the roll-out would need future covariates, so only the warning is given.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["DegenerateSegmentsWarning", "never_improved", "mean_segment_history",
           "recursive_rollout", "degenerate_message"]


class DegenerateSegmentsWarning(UserWarning):
    """MoLA's adaptation never improved some segments over the foundation's starting point."""


def never_improved(best_losses: np.ndarray, initial_losses: np.ndarray) -> list[int]:
    """Segments whose best validation loss is still the one they started from."""
    best = np.asarray(best_losses, dtype=np.float64)
    start = np.asarray(initial_losses, dtype=np.float64)
    return [int(k) for k in np.flatnonzero(best >= start)]


def mean_segment_history(history: list[dict], stop_epochs: np.ndarray | None,
                         n_segments: int) -> list[dict]:
    """The adaptation history with ``train_loss`` as the mean over the segments trained in each
    epoch (the objective sums them), on the scale of ``val_loss`` (the mean over segments).

    ``stop_epochs[k]`` is the 0-based epoch after which segment ``k`` stopped (-1: never).
    """
    stops = np.full(n_segments, -1) if stop_epochs is None else np.asarray(stop_epochs)
    out = []
    for record in history:
        e = int(record["epoch"]) - 1
        active = n_segments - int(((stops >= 0) & (stops < e)).sum())
        row = dict(record)
        row["train_loss"] = float(record["train_loss"]) / max(active, 1)
        out.append(row)
    return out


def recursive_rollout(step: Callable[[np.ndarray], np.ndarray], windows: np.ndarray,
                      n_segments: int) -> np.ndarray:
    """``n_segments`` segments forecast by ``step`` (windows (N, L, C) -> (N, S, C)) fed back.

    Segment 0 is ``step(windows)``; segment k is ``step`` of the window ending with segment
    k - 1. Returns (N, n_segments * S, C).
    """
    lookback = windows.shape[1]
    window = windows
    outs = []
    for _ in range(n_segments):
        forecast = step(window)
        outs.append(forecast)
        window = np.concatenate([window, forecast], axis=1)[:, -lookback:]
    return np.concatenate(outs, axis=1)


def degenerate_message(segments: list[int], n_segments: int, *, fallback: bool) -> str:
    """The warning's text: which segments, why it happens and what to do."""
    what = "every segment" if len(segments) == n_segments else \
        f"segments {segments} of {n_segments}"
    then = ("their forecasts come from the foundation rolled out recursively "
            "(rollout_segments_)" if fallback else
            "with covariates no roll-out is possible (it would need future covariates), so "
            "these segments repeat the foundation's first segment")
    return (
        f"MoLA's adaptation never improved {what} over the foundation on the validation rows "
        f"(their best validation loss is still the starting one); {then}. The series is "
        "probably too short for per-segment adaptation: give more rows or a larger "
        "validation set, raise patience, or use DirectForecaster"
    )
