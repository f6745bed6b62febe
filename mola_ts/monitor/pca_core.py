"""The numerical core of the PCA monitors: lag augmentation, the PCA fit and T^2 / SPE.

Pure functions on arrays, used by :class:`~mola_ts.monitor.pca.PCAMonitor` and its folds.
"""

from __future__ import annotations

import numpy as np

from .base import check_finite_scale
from .calibration import finite_scores

__all__ = ["STATISTICS", "LIMITS", "lagged", "fit_pca", "pca_statistics", "choose_components"]

STATISTICS = ("either", "t2", "spe")
LIMITS = ("crossfit", "parametric", "validation")


def lagged(values: np.ndarray, n_lags: int) -> np.ndarray:
    """Rows ``[x_t, x_{t-1}, .., x_{t-l}]`` for t = l .. n-1 (shape (n - l, c (l + 1)))."""
    if n_lags == 0:
        return values
    n = len(values)
    return np.concatenate([values[n_lags - j: n - j] for j in range(n_lags + 1)], axis=1)


def fit_pca(parts: list[np.ndarray], lags: int, names: list[str], where: str = ""
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardisation and eigen-decomposition of the lag rows of the contiguous ``parts``.

    Lag windows are built inside each part, never across two. Returns the mean, the scale
    (ddof = 1), the eigenvalues (decreasing, >= 0) and the eigenvectors (columns).
    ``where`` names the rows in error messages (e.g. " in cross-fit fold 2's rows").
    """
    rows = [lagged(v, lags) for v in parts if len(v) > lags]
    data = np.concatenate(rows) if rows else np.empty((0, len(names)))
    if len(data) < 3:
        raise ValueError(f"X leaves {len(data)} rows{where} to fit the PCA model; at least 3 "
                         "are needed")
    with np.errstate(over="ignore", invalid="ignore"):
        mean = data.mean(axis=0)
        scale = data.std(axis=0, ddof=1)
    check_finite_scale(mean, scale, names, where)
    z = (data - mean) / scale
    corr = z.T @ z / (len(z) - 1)
    eigenvalues, vectors = np.linalg.eigh(corr)
    order = np.argsort(eigenvalues)[::-1]
    return mean, scale, np.clip(eigenvalues[order], 0.0, None), vectors[:, order]


def pca_statistics(lagged_rows: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                    components: np.ndarray, kept_eigenvalues: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise T^2, SPE, standardised rows, scores and residuals (finite statistics).

    Two-operand ``einsum`` contractions (numpy's own loops, no BLAS) on C-contiguous rows make
    each row's result independent of how many rows are scored together (numpy picks its
    summation kernel from the memory layout, so a Fortran-ordered batch is copied first). A
    statistic that overflows float64 is clipped to ``SCORE_CEILING``, so it still alarms and
    is never NaN.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.ascontiguousarray((lagged_rows - mean) / scale)
        scores = np.einsum("ni,ji->nj", z, np.ascontiguousarray(components.T))
        t2 = np.einsum("nk->n", scores**2 / kept_eigenvalues)
        residual = z - np.einsum("nk,jk->nj", scores, components)
        spe = np.einsum("ni,ni->n", residual, residual)
    return finite_scores(t2), finite_scores(spe), z, scores, residual


def choose_components(n_components, eigenvalues: np.ndarray) -> int:
    """``k`` from an int, or from a variance share (capped so that SPE keeps a residual)."""
    if isinstance(n_components, (float, np.floating)):
        total = eigenvalues.sum()
        share = np.cumsum(eigenvalues) / total if total > 0 else np.ones(len(eigenvalues))
        k = int(np.searchsorted(share, n_components) + 1)
        return max(1, min(k, len(eigenvalues) - 1))
    return int(n_components)
