"""Explanations of a monitor's alarm: which variables drive a statistic.

:func:`mola_contributions` gives MOLA's per-variable contributions: the squared reconstruction
error of each variable at the last sample of its window (sums to the block's SPE), or integrated
gradients of a block's code T^2 with respect to the window (sums to ``T2(window) -
T2(baseline)`` up to the quadrature error; baseline = the all-zero window, i.e. the training mean
of the levels, or zero residuals). Both are over the model's inputs: standardised levels, or
scaled one-step residuals in the residual design.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .olae import OLAE

__all__ = ["mola_contributions", "t2_integrated_gradients"]


def t2_integrated_gradients(weights: dict, t2_mean: np.ndarray, t2_precision: np.ndarray,
                            windows: np.ndarray, hidden_size: int, n_steps: int = 32
                            ) -> np.ndarray:
    """Integrated gradients (``n_steps`` midpoint steps from 0) of one network's code T^2
    with respect to ``windows`` (n, w, variables), summed over the window: (n, variables)."""
    n, w, n_vars = windows.shape
    module = OLAE(n_vars, hidden_size, len(t2_mean), w).double()
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    mean, precision = torch.from_numpy(t2_mean), torch.from_numpy(t2_precision)
    x = torch.from_numpy(np.ascontiguousarray(windows))
    total = torch.zeros_like(x)
    for step in range(n_steps):
        point = (x * ((step + 0.5) / n_steps)).requires_grad_(True)
        d = module.encode(point) - mean
        t2 = torch.einsum("ni,ij,nj->n", d, precision, d)
        (grad,) = torch.autograd.grad(t2.sum(), point)
        total += grad
    return (x * total / n_steps).sum(dim=1).numpy()


def mola_contributions(monitor, X, statistic: str = "SPE", n_steps: int = 32) -> pd.DataFrame:
    """Per-variable contributions of a fitted MOLAMonitor, one row per sample of ``X``.

    ``statistic="SPE"``: each variable's squared reconstruction error at the last sample of
    its window; ``"T2"``: integrated gradients of its block's code T^2. Warm-up rows (no full
    window yet) are 0. An ensemble's contributions are its networks' mean.
    """
    if statistic not in ("SPE", "T2"):
        raise ValueError(f"statistic must be 'SPE' or 'T2', got {statistic!r}")
    if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
    series = monitor._check_X(X, min_rows=1, what_for="contributions")
    with np.errstate(over="ignore", invalid="ignore"):
        z = (series.values - monitor.mean_) / monitor.scale_
    core = monitor._final_core()
    inputs = monitor._inputs(core, z)
    windows = monitor._windows(inputs)
    out = np.zeros(z.shape)
    first = len(z) - len(windows)
    for block in core["blocks"]:
        win = np.ascontiguousarray(windows[:, :, block.columns])
        total = np.zeros((len(win), len(block.columns)))
        for net in block.networks:
            if statistic == "SPE":
                recon = net.exact.decode(net.exact.encode(win))
                total += (win[:, -1] - recon[:, -1]) ** 2
            else:
                total += t2_integrated_gradients(net.weights, net.t2_mean, net.t2_precision,
                                                 win, monitor.hidden_size, n_steps)
        out[first:, block.columns] = total / len(block.networks)
    index = series.index if series.index is not None else pd.RangeIndex(len(z))
    return pd.DataFrame(out, index=index, columns=monitor.feature_names_)
