"""Cross-fitting folds in time blocks, for out-of-fold statistics of autocorrelated runs.

A monitor's control limit must come from statistics of samples the model never saw (monitoring
spec §1.3, §7). :func:`time_block_folds` cuts the concatenated training runs into ``n_folds``
contiguous time blocks; fold k's model is fitted on every other block and scores block k, so
each sample's statistic is out of fold, and the pooled out-of-fold values set the limit. The
final model is then fitted on everything. Blocks are contiguous (never shuffled): shuffling an
autocorrelated series would leak each sample's neighbours into its own model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Segment", "CrossFitFold", "time_block_folds"]


@dataclass(frozen=True)
class Segment:
    """Rows ``start:stop`` of run ``run`` (a contiguous stretch of one training run)."""

    run: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class CrossFitFold:
    """One fold: the segments a fold model is fitted on and the segments it scores."""

    fit: tuple[Segment, ...]
    held_out: tuple[Segment, ...]


def time_block_folds(run_lengths, n_folds: int) -> list[CrossFitFold]:
    """Split runs of the given lengths into ``n_folds`` contiguous time blocks.

    The runs are laid end to end and cut into ``n_folds`` blocks of (nearly) equal row counts;
    a block that spans a run boundary is two segments. Fold ``k`` holds out block ``k`` and fits
    on the rest (the rest of a run split by the held-out block is two segments, so that lagged
    features or windows never bridge the gap).

    Examples
    --------
    >>> [f.held_out for f in time_block_folds([10], 2)]
    [(Segment(run=0, start=0, stop=5),), (Segment(run=0, start=5, stop=10),)]
    """
    lengths = [int(n) for n in run_lengths]
    if not lengths or min(lengths) < 0:
        raise ValueError(f"run_lengths must be a non-empty list of lengths >= 0, got {lengths}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an int >= 2, got {n_folds!r}")
    total = sum(lengths)
    if total < n_folds:
        raise ValueError(f"{total} rows cannot be cut into n_folds={n_folds} time blocks")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    edges = np.linspace(0, total, n_folds + 1).round().astype(int)

    def segments(lo: int, hi: int) -> list[Segment]:
        """The global rows [lo, hi) as per-run segments."""
        out = []
        for r, n in enumerate(lengths):
            a, b = max(lo, offsets[r]), min(hi, offsets[r] + n)
            if b > a:
                out.append(Segment(r, int(a - offsets[r]), int(b - offsets[r])))
        return out

    folds = []
    for k in range(n_folds):
        held = segments(edges[k], edges[k + 1])
        fit = segments(0, edges[k]) + segments(edges[k + 1], total)
        folds.append(CrossFitFold(tuple(fit), tuple(held)))
    return folds
