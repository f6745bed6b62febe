"""Bayesian combination of control statistics and the adaptive weight-based fusion (W-BF).

Monitoring spec §4. For a statistic S with limit S_lim and significance alpha::

    P(x|N) = exp(-S / S_lim),   P(x|F) = exp(-S_lim / S),   P(N) = 1 - alpha,  P(F) = alpha
    P(F|x) = P(x|F) P(F) / (P(x|N) P(N) + P(x|F) P(F))

and several statistics i combine into the Bayesian inference combination (BIC)::

    BIC = sum_i w_i P_i(x|F) P_i(F|x) / sum_i w_i P_i(x|F)      (w_i = 1 without weights)

At S = S_lim the fault probability equals alpha, so a BIC above alpha means "beyond the limits".
:class:`OrderWeights` holds the W-BF episode state: blocks that alarm earlier in an episode weigh
more when the block indices are fused into the global index (PFI).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fault_probability", "bayesian_combination", "OrderWeights"]


def fault_probability(stat: np.ndarray, limit: np.ndarray | float, alpha: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(P(x|F), P(F|x))`` of statistic values ``stat`` against ``limit`` (spec §4).

    ``stat`` may be any shape; ``limit`` broadcasts against it (e.g. one limit per column).
    S = 0 gives P(x|F) = P(F|x) = 0; a huge S gives P(F|x) = 1.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    stat = np.asarray(stat, dtype=np.float64)
    limit = np.asarray(limit, dtype=np.float64)
    if np.any(limit <= 0):
        raise ValueError(f"control limits must be > 0, got {limit}")
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        p_x_n = np.exp(-stat / limit)
        p_x_f = np.exp(-limit / stat)
        p_x_f = np.where(stat > 0, p_x_f, 0.0)
        num = p_x_f * alpha
        den = p_x_n * (1.0 - alpha) + num
        p_f_x = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    nan = np.isnan(stat)
    return np.where(nan, np.nan, p_x_f), np.where(nan, np.nan, p_f_x)


def bayesian_combination(p_x_f: np.ndarray, p_f_x: np.ndarray,
                         weights: np.ndarray | None = None) -> np.ndarray:
    """BIC over the last axis: ``sum w P(x|F) P(F|x) / sum w P(x|F)`` (0 when the sum is 0).

    Parameters
    ----------
    p_x_f, p_f_x : ndarray of shape (..., n_statistics)
        Likelihoods under fault and fault probabilities of each statistic.
    weights : ndarray broadcastable to the same shape, optional
        Extra weights (W-BF); all ones by default.
    """
    p_x_f = np.asarray(p_x_f, dtype=np.float64)
    p_f_x = np.asarray(p_f_x, dtype=np.float64)
    if p_x_f.shape != p_f_x.shape:
        raise ValueError(f"p_x_f has shape {p_x_f.shape} but p_f_x has shape {p_f_x.shape}")
    w = np.ones_like(p_x_f) if weights is None else np.broadcast_to(
        np.asarray(weights, dtype=np.float64), p_x_f.shape)
    # einsum sums: the same loop for one row or many (streaming equals batch bit for bit)
    num = np.einsum("...i->...", w * p_x_f * p_f_x)
    den = np.einsum("...i->...", w * p_x_f)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.where(np.isnan(num) | np.isnan(den), np.nan, out)


class OrderWeights:
    """W-BF block weights from the order in which blocks alarm within an episode.

    An episode starts when a block index crosses its limit. The blocks that cross at the first
    alarmed sample get order 1, those crossing first at a later sample the next order, and so on
    (blocks crossing at the same sample share an order). A block keeps its order until the
    episode ends, which happens after ``reset_after`` consecutive samples with no block in alarm.
    Weights: ``exp(-gamma (order - 1))`` for blocks that alarmed in the episode, ``base_weight``
    for the others.

    Parameters
    ----------
    n_blocks : int
    gamma : float
        Decay of the weight with the alarm order (>= 0).
    base_weight : float
        Weight of a block not (yet) in alarm in the current episode (> 0).
    reset_after : int
        In-control samples that end an episode (>= 1).
    """

    def __init__(self, n_blocks: int, gamma: float = 0.5, base_weight: float = 0.1,
                 reset_after: int = 10):
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not base_weight > 0:
            raise ValueError(f"base_weight must be > 0, got {base_weight}")
        if reset_after < 1:
            raise ValueError(f"reset_after must be >= 1, got {reset_after}")
        self.n_blocks = int(n_blocks)
        self.gamma = float(gamma)
        self.base_weight = float(base_weight)
        self.reset_after = int(reset_after)
        self.reset()

    def reset(self) -> None:
        """Start with no episode."""
        self.order = np.zeros(self.n_blocks, dtype=np.int64)  # 0 = not alarmed in the episode
        self.next_order = 1
        self.quiet = 0

    def get_state(self) -> tuple[np.ndarray, int, int]:
        return self.order.copy(), self.next_order, self.quiet

    def set_state(self, order: np.ndarray, next_order: int, quiet: int) -> None:
        self.order = np.array(order, dtype=np.int64)
        self.next_order = int(next_order)
        self.quiet = int(quiet)

    def step(self, alarmed: np.ndarray) -> np.ndarray:
        """Update with one sample's per-block alarm flags; return that sample's weights."""
        alarmed = np.asarray(alarmed, dtype=bool)
        if alarmed.any():
            self.quiet = 0
            new = alarmed & (self.order == 0)
            if new.any():
                self.order[new] = self.next_order
                self.next_order += 1
        else:
            self.quiet += 1
            if self.quiet >= self.reset_after and self.next_order > 1:
                self.order[:] = 0
                self.next_order = 1
        return np.where(self.order > 0, np.exp(-self.gamma * (self.order - 1.0)),
                        self.base_weight)
