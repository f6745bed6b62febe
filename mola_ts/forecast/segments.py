"""What MoLA makes of its segments after training: the losses per segment in its history, the
segments adaptation never improved, and their fallback (the foundation rolled out recursively).

On a short series the per-segment adaptation can fail to beat its starting point on the
validation rows for every segment: each stops at epoch 0, and the restored adapter is the
foundation itself, which forecasts the first ``segment_length`` steps for *every* segment (the
same values repeated along the horizon). :class:`~mola_ts.forecast.MoLAForecaster` then warns
with :class:`DegenerateSegmentsWarning`. On long series some segments often never improve
(segment 0 starts as the foundation itself; a later one's start can be a good forecast): they
are recorded and reported in a stage line, not warned about. For every such segment the
adapter is compared, on the validation windows, with the foundation rolled forward
(:func:`recursive_rollout`: each forecast segment is appended to the window that forecasts the
next); the one with the lower validation loss forecasts the segment (:func:`segment_losses`).
With covariates the roll-out would need future covariates, so the adapter stays.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from ..training import stage
from ..uncertainty import GaussianMixture

__all__ = ["DegenerateSegmentsWarning", "RolloutMixin", "never_improved",
           "mean_segment_history", "recursive_rollout", "segment_losses",
           "degenerate_message"]


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


def segment_losses(adapted: Callable[[np.ndarray], np.ndarray],
                   step: Callable[[np.ndarray], np.ndarray],
                   scale: Callable[[np.ndarray], np.ndarray], values: np.ndarray,
                   lookback: int, segment_length: int, n_segments: int, *,
                   stride: int = 1, chunk_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment MSE (on the scale ``scale`` maps to) of two forecasts on the sliding windows
    of ``values`` (time, C) every ``stride`` rows: ``adapted`` (windows -> the whole horizon)
    and ``step`` rolled out recursively, ``chunk_size`` windows at a time. Returns (adapted,
    rolled), each of length n_segments.
    """
    span = lookback + segment_length * n_segments
    n_vars = values.shape[1]
    starts = np.arange(0, len(values) - span + 1, max(int(stride), 1))
    sums = np.zeros((2, n_segments))
    for chunk in np.array_split(starts, max(1, -(-len(starts) // chunk_size))):
        blocks = np.stack([values[i:i + span] for i in chunk])
        windows = blocks[:, :lookback]
        target = scale(blocks[:, lookback:].reshape(-1, n_vars)).astype(np.float64)
        for j, forecast in enumerate((adapted(windows),
                                      recursive_rollout(step, windows, n_segments))):
            err = (scale(forecast.reshape(-1, n_vars)).astype(np.float64) - target) ** 2
            sums[j] += err.reshape(len(chunk), n_segments, -1).sum(axis=(0, 2))
    means = sums / (len(starts) * segment_length * n_vars)
    return means[0], means[1]


def degenerate_message(segments: list[int], n_segments: int, *, chosen: list[int],
                       covariates: bool = False, advice: bool = True) -> str:
    """The warning's text: which segments, what was done for each, why and (``advice``) what
    to do; without the advice it is the stage line of a fit where only some never improved."""
    what = "every segment" if len(segments) == n_segments else \
        f"segments {segments} of {n_segments}"
    kept = [k for k in segments if k not in chosen]
    if covariates:
        then = ("with covariates no roll-out is possible (it would need future covariates), so "
                "their adapters, still at their starting point, forecast them")
    else:
        parts = []
        if chosen:
            parts.append(f"the foundation rolled out recursively forecasts {chosen} "
                         "(lower validation loss; rollout_segments_)")
        if kept:
            parts.append(f"their adapters forecast {kept} (lower validation loss than the "
                         "roll-out; rollout_val_loss_ has the roll-out's)")
        then = " and ".join(parts)
    message = (f"MoLA's adaptation never improved {what} over its starting point on the "
               f"validation rows (their best validation loss is still the starting one); {then}")
    if not advice:
        return message
    return (f"{message}. On a short series this means per-segment adaptation has too little "
            "data: give more rows or a larger validation set, raise patience, or use "
            "DirectForecaster")


class RolloutMixin:
    """The segments adaptation never improved, in :class:`~mola_ts.forecast.MoLAForecaster`:
    the warning, the choice between roll-out and adapter on the validation rows, and the
    forecasts (point and distribution: the mixture is shifted so that its mean is the
    roll-out, its spread kept)."""

    def _check_degenerate(self, stale: list[int], val_values: np.ndarray | None) -> None:
        """Warn when no segment improved (a degenerate fit: the symptom of a short series);
        when some did, the others are recorded (``unimproved_segments_``) with a stage line:
        segment 0 starts as the foundation itself, and a later segment's starting point can
        be the better forecast on validation (on hourly data with a daily period, the first
        segment repeated)."""
        self.unimproved_segments_ = list(stale)
        self.rollout_segments_, self.rollout_val_loss_ = [], None
        if stale and not self.n_covariates_ and val_values is not None:
            adapted, self.rollout_val_loss_ = segment_losses(
                lambda w: super(RolloutMixin, self)._forecast(w), self.foundation_._forecast,
                self._to_scaled, val_values, self.lookback, self.segment_length,
                self.n_segments_, stride=self.validation_stride)
            self.rollout_segments_ = [k for k in stale
                                      if self.rollout_val_loss_[k] <= adapted[k]]
        if not stale:
            return
        every = len(stale) == self.n_segments_
        message = degenerate_message(stale, self.n_segments_, chosen=self.rollout_segments_,
                                     covariates=bool(self.n_covariates_), advice=every)
        if every:
            warnings.warn(message, DegenerateSegmentsWarning, stacklevel=6)
        else:
            stage(message, self.verbose)

    def _rolled_out(self, out: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """``out`` (N, H, C) with the roll-out in the segments that use it."""
        stale = getattr(self, "rollout_segments_", None)  # None: a file from before it
        if not stale:
            return out
        s = self.segment_length
        rolled = recursive_rollout(self.foundation_._forecast, windows, max(stale) + 1)
        out = np.array(out, dtype=np.float64)
        for k in stale:
            out[:, k * s:(k + 1) * s] = rolled[:, k * s:(k + 1) * s]
        return out

    def _forecast(self, windows: np.ndarray) -> np.ndarray:
        out = super()._forecast(windows)
        # with heads of their own the forecast is the distribution's mean, rolled out there
        return out if self._own_heads() else self._rolled_out(out, windows)

    def _forecast_distribution(self, windows: np.ndarray) -> GaussianMixture:
        dist = super()._forecast_distribution(windows)
        mean = dist.mean
        shift = self._rolled_out(mean, windows) - mean
        if not shift.any():
            return dist
        return GaussianMixture(dist.means + shift[..., None], dist.variances, dist.weights,
                               noise_variances=dist.noise_variances)
