"""Control charts and their limits: Hotelling T^2, SPE, the quantile CUSUM and control limits.

Everything here is plain numpy and row-wise: a statistic of one sample never depends on how many
other samples are scored with it, so streaming (one sample at a time) and batch scoring give
bit-identical results (``np.einsum`` without BLAS is used for that reason).

- :func:`fit_t2` / :func:`t2_statistic`: T^2 = (z - m)^T S^-1 (z - m) with the mean and
  covariance of reference data (monitoring spec §3).
- :class:`QuantileCUSUM`: the nonparametric multivariate CUSUM of spec §3 (in the style of Qiu,
  2008) on bin indicators of the reference quantiles, with its running state.
- :func:`empirical_limit`, :func:`kde_limit`: the (1 - alpha) quantile of a statistic over a
  validation stream (spec §3).
- :func:`t2_limit_f`, :func:`spe_limit_jackson_mudholkar`: the parametric PCA limits of Yin et al.
  (2012), spec §6.
- :func:`ewma`, :func:`cusum_upper`, :func:`freeze_statistic`: time smoothing of a statistic
  with an explicit running state (rows that may not advance it keep it), for the residual
  monitor.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.signal import lfilter

__all__ = [
    "fit_t2",
    "t2_statistic",
    "QuantileCUSUM",
    "quantile_edges",
    "empirical_limit",
    "kde_limit",
    "control_limit",
    "t2_limit_f",
    "spe_limit_jackson_mudholkar",
    "ewma",
    "cusum_upper",
    "freeze_statistic",
    "step_scale",
]


def fit_t2(reference: np.ndarray, *, ridge: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision (inverse covariance, ddof = 1) of ``reference`` (n, q) for T^2.

    A tiny ``ridge`` (relative to the mean variance) keeps a near-singular covariance invertible.
    """
    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim != 2 or reference.shape[0] < reference.shape[1] + 1:
        raise ValueError(
            f"T^2 needs more reference rows than features, got shape {reference.shape}"
        )
    mean = reference.mean(axis=0)
    cov = np.atleast_2d(np.cov(reference, rowvar=False, ddof=1))
    cov = cov + ridge * max(float(np.trace(cov)) / len(cov), 1e-300) * np.eye(len(cov))
    return mean, np.linalg.inv(cov)


def t2_statistic(z: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Row-wise T^2 = (z - mean)^T precision (z - mean) of an (n, q) array."""
    d = np.atleast_2d(np.asarray(z, dtype=np.float64)) - mean
    # two two-operand contractions: numpy's own loops, identical for a row alone or in a batch
    return np.einsum("ni,ni->n", np.einsum("ni,ji->nj", d, precision), d)


def quantile_edges(reference: np.ndarray, n_bins: int) -> np.ndarray:
    """Interior bin edges (q, n_bins - 1): the 1/m .. (m-1)/m quantiles of each column."""
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    reference = np.asarray(reference, dtype=np.float64)
    probs = np.arange(1, n_bins) / n_bins
    return np.quantile(reference, probs, axis=0).T.copy()


class QuantileCUSUM:
    """The quantile-based multivariate CUSUM W of monitoring spec §3, with its running state.

    Per feature j the reference quantiles split the line into ``m`` bins of in-control
    probability ``1/m``. A sample becomes ``Y_n``: the stacked one-hot bin indicators of the q
    features (length q*m), in-control expectation ``F0 = 1/m``. With cumulative vectors
    ``U_obs``, ``U_exp`` (start at 0) and allowance ``k``::

        C_n = (U_obs + Y_n - U_exp - F0)^T diag(U_exp + F0)^-1 (U_obs + Y_n - U_exp - F0)
        C_n <= k:  U_obs = U_exp = 0
        else:      U_obs = (U_obs + Y_n)(C_n - k)/C_n ;  U_exp = (U_exp + F0)(C_n - k)/C_n
        W_n = (U_obs - U_exp)^T diag(U_exp)^-1 (U_obs - U_exp)        (0 when U_exp = 0)

    From the reset state ``C_n = q(m - 1)`` whatever the sample, so ``k`` must be smaller than
    that for the chart to ever accumulate. The cumulative vectors then hold about N samples
    with ``k (N + 1) = C``; in control ``C`` stays near ``q(m - 1)`` (memory about
    ``q(m - 1)/k``). A persistent change whose per-sample chi-square divergence from the bin
    probabilities is ``D`` lengthens the memory to ``(q(m - 1) - k)/(k - D)`` samples, and without
    bound once ``D >= k``: small shifts accumulate, which T^2 alone misses.

    Parameters
    ----------
    edges : ndarray of shape (q, m - 1)
        Interior bin edges per feature (see :func:`quantile_edges`); bin i of feature j holds
        the values in ``(edges[j, i-1], edges[j, i]]``.
    k : float
        The allowance, ``0 < k``.
    """

    def __init__(self, edges: np.ndarray, k: float):
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 2 or edges.shape[1] < 1:
            raise ValueError(f"edges must have shape (q, m - 1) with m >= 2, got {edges.shape}")
        if not k > 0:
            raise ValueError(f"the allowance k must be > 0, got {k}")
        self.edges = edges
        self.k = float(k)
        self.n_features, self.n_bins = edges.shape[0], edges.shape[1] + 1
        self.f0 = 1.0 / self.n_bins
        self.reset()

    def reset(self) -> None:
        """Back to the in-control start: ``U_obs = U_exp = 0``."""
        self.u_obs = np.zeros(self.n_features * self.n_bins)
        self._u_exp = 0.0  # every entry of U_exp is the same number (F0 is constant)

    @property
    def u_exp(self) -> np.ndarray:
        """The expected cumulative vector ``U_exp`` (all entries equal)."""
        return np.full(self.n_features * self.n_bins, self._u_exp)

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``(U_obs, U_exp)``."""
        return self.u_obs.copy(), self.u_exp

    def set_state(self, u_obs: np.ndarray, u_exp: np.ndarray) -> None:
        """Restore a state returned by :meth:`get_state`."""
        u_exp = np.asarray(u_exp, dtype=np.float64)
        if u_exp.size and np.ptp(u_exp) != 0:
            raise ValueError("U_exp must have equal entries (it accumulates the constant F0)")
        self.u_obs = np.array(u_obs, dtype=np.float64)
        self._u_exp = float(u_exp.flat[0]) if u_exp.size else 0.0

    def bin_indices(self, z: np.ndarray) -> np.ndarray:
        """Flat indicator positions (n, q): ``j * m + bin_j`` of each sample's features."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        if z.shape[1] != self.n_features:
            raise ValueError(f"z must have {self.n_features} columns, got shape {z.shape}")
        bins = np.empty(z.shape, dtype=np.int64)
        for j in range(self.n_features):
            bins[:, j] = np.searchsorted(self.edges[j], z[:, j], side="left")
        return bins + np.arange(self.n_features) * self.n_bins

    def step_indices(self, hot: np.ndarray) -> float:
        """Advance by one sample given its indicator positions (length q); return ``W_n``."""
        # With e = U_exp + F0 (a scalar) and d = U_obs - e, adding Y (ones at `hot`) gives
        # C = (d.d + 2 sum(d[hot]) + q) / e, the spec's formula without building Y.
        e = self._u_exp + self.f0
        d = self.u_obs - e
        c = (float(np.dot(d, d)) + 2.0 * float(d[hot].sum()) + len(hot)) / e
        if c <= self.k:
            self.u_obs[:] = 0.0
            self._u_exp = 0.0
            return 0.0
        shrink = (c - self.k) / c
        self.u_obs[hot] += 1.0
        self.u_obs *= shrink
        self._u_exp = e * shrink
        d = self.u_obs - self._u_exp
        return float(np.dot(d, d)) / self._u_exp

    def update(self, z: np.ndarray) -> np.ndarray:
        """Feed the samples ``z`` (n, q) in order; return ``W`` for each."""
        positions = self.bin_indices(z)
        # step_indices inlined (the same operations, so the same bits): a tight loop with
        # local names, several times faster over a long batch
        out = np.empty(len(positions))
        u_obs, u_exp, f0, k = self.u_obs, self._u_exp, self.f0, self.k
        dot = np.dot
        q = positions.shape[1]
        for t, hot in enumerate(positions):
            e = u_exp + f0
            d = u_obs - e
            c = (float(dot(d, d)) + 2.0 * float(d[hot].sum()) + q) / e
            if c <= k:
                u_obs[:] = 0.0
                u_exp = 0.0
                out[t] = 0.0
                continue
            shrink = (c - k) / c
            u_obs[hot] += 1.0
            u_obs *= shrink
            u_exp = e * shrink
            d = u_obs - u_exp
            out[t] = float(dot(d, d)) / u_exp
        self._u_exp = u_exp
        return out


def empirical_limit(values: np.ndarray, alpha: float) -> float:
    """The (1 - alpha) empirical quantile of the finite ``values`` (linear interpolation)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite values to set a control limit from")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return float(np.quantile(values, 1.0 - alpha))


def kde_limit(values: np.ndarray, alpha: float) -> float:
    """The (1 - alpha) quantile of a Gaussian kernel density estimate of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 3 or np.ptp(values) == 0:
        return empirical_limit(values, alpha)
    kde = stats.gaussian_kde(values)
    target = 1.0 - alpha
    lo = float(values.min())
    spread = float(np.ptp(values))
    hi = float(values.max()) + spread
    while kde.integrate_box_1d(-np.inf, hi) < target:
        hi += spread
    for _ in range(200):  # bisection on the KDE's CDF
        mid = 0.5 * (lo + hi)
        if kde.integrate_box_1d(-np.inf, mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-10 * max(1.0, abs(hi)):
            break
    return float(hi)


def control_limit(values: np.ndarray, alpha: float, method: str = "empirical") -> float:
    """Control limit of a validation stream: ``"empirical"`` or ``"kde"`` (1 - alpha) quantile."""
    if method == "empirical":
        return empirical_limit(values, alpha)
    if method == "kde":
        return kde_limit(values, alpha)
    raise ValueError(f"limit method must be 'empirical' or 'kde', got {method!r}")


def t2_limit_f(n_components: int, n_samples: int, alpha: float) -> float:
    """T^2 limit k(n-1)(n+1)/(n(n-k)) F_{1-alpha}(k, n-k) (Yin et al. 2012)."""
    k, n = int(n_components), int(n_samples)
    if not 0 < k < n:
        raise ValueError(f"need 0 < n_components < n_samples, got {k} and {n}")
    return float(k * (n - 1) * (n + 1) / (n * (n - k)) * stats.f.ppf(1.0 - alpha, k, n - k))


def spe_limit_jackson_mudholkar(discarded_eigenvalues: np.ndarray, alpha: float) -> float:
    """Jackson-Mudholkar SPE (Q) limit at 1 - alpha from the discarded eigenvalues."""
    lam = np.asarray(discarded_eigenvalues, dtype=np.float64)
    if lam.size == 0 or not np.any(lam > 0):
        raise ValueError("the SPE limit needs at least one positive discarded eigenvalue")
    theta1, theta2, theta3 = (float(np.sum(lam**i)) for i in (1, 2, 3))
    h0 = 1.0 - 2.0 * theta1 * theta3 / (3.0 * theta2**2)
    c_alpha = stats.norm.ppf(1.0 - alpha)
    inner = (c_alpha * np.sqrt(2.0 * theta2 * h0**2) / theta1 + 1.0
             + theta2 * h0 * (h0 - 1.0) / theta1**2)
    return float(theta1 * inner ** (1.0 / h0))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of equal values of a boolean mask."""
    if len(mask) == 0:
        return []
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), len(mask)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def ewma(values: np.ndarray, lam: float, start, ok: np.ndarray | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """``s_t = lam x_t + (1 - lam) s_{t-1}`` along axis 0 from ``s_0 = start``.

    Works on a 1-D series or row-wise on a 2-D array (``start`` then one value per column).
    Rows where ``ok`` is False leave the state unchanged (their output is the state). Returns
    the smoothed values and the final state. The recursion runs through ``scipy.signal.lfilter``
    with the state as its initial condition, which computes exactly ``lam x + (1 - lam) s`` row
    by row: chunks fed one after the other give the bits of one call.
    """
    values = np.asarray(values, dtype=np.float64)
    ok = np.ones(len(values), dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    keep = 1.0 - lam
    out = np.empty_like(values)
    state = np.array(start, dtype=np.float64)
    for a, b in _runs(ok):
        if ok[a]:
            out[a:b], _ = lfilter([lam], [1.0, -keep], values[a:b], axis=0,
                                  zi=(keep * state)[None, ...])
            state = out[b - 1].copy()
        else:
            out[a:b] = state
    return out, state


def cusum_upper(values: np.ndarray, mean: float, sd: float, k: float, start: float,
                ok: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Upper CUSUM ``s_t = max(0, s_{t-1} + (x_t - mean) / sd - k)`` from ``start``.

    Rows where ``ok`` is False keep the state. Returns the statistic and the final state.
    """
    ok = np.ones(len(values), dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    out = np.empty(len(values))
    s = float(start)
    for i, (v, good) in enumerate(zip(np.asarray(values, dtype=np.float64).tolist(),
                                      ok.tolist(), strict=True)):
        if good:
            s = max(0.0, s + (v - mean) / sd - k)
        out[i] = s
    return out, s


def step_scale(segments: list[np.ndarray]) -> np.ndarray:
    """Root-mean-square step ``x_t - x_{t-1}`` of each variable over the segments.

    A variable that never moves gets 1 (it is a constant column, refused elsewhere).
    """
    steps = [np.diff(seg, axis=0) for seg in segments if len(seg) > 1]
    rms = np.sqrt(np.mean(np.concatenate(steps) ** 2, axis=0))
    return np.where(rms > 0, rms, 1.0)


def freeze_statistic(moves: np.ndarray, lam: float, start: np.ndarray,
                     ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``max_j -log v_j`` with ``v = EWMA(m^2)`` per variable of the scaled steps ``moves``.

    ``moves`` (n, variables) are steps ``x_t - x_{t-1}`` over each variable's training
    root-mean-square step (:func:`step_scale`), so ``v`` is about 1 in control and decays
    geometrically towards 0 when a variable stops moving (a stuck valve or a frozen sensor).
    Returns the statistic and the final ``v``.
    """
    v, state = ewma(np.asarray(moves, dtype=np.float64) ** 2, lam, start, ok)
    with np.errstate(divide="ignore"):
        stat = (-np.log(np.maximum(v, 1e-300))).max(axis=1) if len(v) else np.empty(0)
    return stat, state
