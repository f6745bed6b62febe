"""The Gaussian-mixture predictive distribution: a batch of independent per-point mixtures.

Every forecast point (one step of one variate, or one monitored quantity) gets its own mixture
``sum_k w_k N(mu_k, s_k^2)``; the arrays hold the components on their last axis. This is what a
mixture of Laplace approximations predicts (uncertainty spec §2), and what a deep ensemble (K
Gaussians) or a single Laplace (K = 1) predicts as special cases, so one object scores them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import ndtr, ndtri

from mola_ts.metrics import (
    _check_coverage,
    _float_array,
    _mixture_params,
    crps_mixture,
    nll_mixture,
)

__all__ = ["GaussianMixture"]


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, dtype=np.float64)  # an owned copy, then frozen
    arr.flags.writeable = False
    return arr


class GaussianMixture:
    """A batch of Gaussian mixtures, one per point, with the variance split of a Laplace mixture.

    Parameters
    ----------
    means, variances : array-like, shape ``batch_shape + (K,)``
        Component means and (total) variances ``s_k^2 > 0``.
    weights : array-like, shape ``(K,)`` or ``batch_shape + (K,)``, optional
        Mixture weights summing to 1 over the components (uniform by default).
    noise_variances : array-like, shape ``batch_shape + (K,)``, optional
        The observation-noise part of each component's variance (``0 <= noise <= variance``);
        the rest is the component's functional (Laplace) variance. Default 0.

    Notes
    -----
    The total variance splits exactly (law of total variance)::

        var = sum_k w_k (s_k^2 - n_k)  +  sum_k w_k (mu_k - mean)^2  +  sum_k w_k n_k
              \\___ laplace (within) __/   \\____ ensemble (between) __/    \\__ noise __/

    The arguments are copied; the stored arrays are read-only.

    Examples
    --------
    >>> dist = GaussianMixture([[-1.0, 1.0]], [[1.0, 1.0]], noise_variances=[[0.5, 0.5]])
    >>> dist.mean, dist.var
    (array([0.]), array([2.]))
    >>> {k: v.tolist() for k, v in dist.variance_decomposition().items()}
    {'laplace': [0.5], 'ensemble': [1.0], 'noise': [0.5]}
    >>> lower, upper = dist.interval(0.9)
    >>> bool(lower[0] < 0 < upper[0])
    True
    """

    def __init__(self, means, variances, weights=None, *, noise_variances=None):
        m, v, w = _mixture_params(means, variances, weights)
        if noise_variances is None:
            n = np.zeros_like(v)
        else:
            n = _float_array(noise_variances, "noise_variances")
            if n.shape != v.shape:
                raise ValueError(
                    f"noise_variances has shape {n.shape} but variances has shape {v.shape}"
                )
            bad = int(((n < 0) | (n > v * (1 + 1e-12))).sum())
            if bad:
                raise ValueError(
                    f"noise_variances must lie in [0, variances]; {bad} values do not"
                )
            n = np.minimum(n, v)
        self.means = _read_only(m)
        self.variances = _read_only(v)
        self.weights = _read_only(w)
        self.noise_variances = _read_only(n)

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def gaussian(cls, mean, variance, *, noise_variance=None) -> GaussianMixture:
        """One Gaussian per point (K = 1) from arrays of the batch shape."""
        mean = _float_array(mean, "mean")
        variance = _float_array(variance, "variance")
        noise = None if noise_variance is None else _float_array(noise_variance,
                                                                 "noise_variance")[..., None]
        return cls(mean[..., None], variance[..., None], noise_variances=noise)

    @classmethod
    def combine(cls, distributions: Sequence[GaussianMixture], weights=None) -> GaussianMixture:
        """The mixture of several mixtures with the same batch shape (uniform weights by default).

        Components are concatenated in order; component ``k`` of distribution ``j`` gets weight
        ``weights[j] * w_jk``. ``combine`` of K single Gaussians is a K-component mixture.
        """
        dists = list(distributions)
        if not dists or not all(isinstance(d, GaussianMixture) for d in dists):
            raise TypeError("distributions must be a non-empty sequence of GaussianMixture")
        shapes = {d.batch_shape for d in dists}
        if len(shapes) > 1:
            raise ValueError(f"distributions must share one batch shape, got {sorted(shapes)}")
        if weights is None:
            outer = np.full(len(dists), 1.0 / len(dists))
        else:
            outer = _float_array(weights, "weights")
            if outer.shape != (len(dists),):
                raise ValueError(
                    f"weights must have shape ({len(dists)},), got {outer.shape}"
                )
            if (outer < 0).any() or not np.isclose(outer.sum(), 1.0, rtol=0, atol=1e-6):
                raise ValueError(f"weights must be >= 0 and sum to 1, got {outer.tolist()}")
        return cls(
            np.concatenate([d.means for d in dists], axis=-1),
            np.concatenate([d.variances for d in dists], axis=-1),
            np.concatenate([o * d.weights for o, d in zip(outer, dists, strict=True)], axis=-1),
            noise_variances=np.concatenate([d.noise_variances for d in dists], axis=-1),
        )

    # --- shape and moments ------------------------------------------------------------------

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Shape of the batch of points (the means' shape without the component axis)."""
        return self.means.shape[:-1]

    @property
    def n_components(self) -> int:
        """Number of mixture components K."""
        return self.means.shape[-1]

    @property
    def mean(self) -> np.ndarray:
        """Mixture mean ``sum_k w_k mu_k``, shape ``batch_shape``."""
        return np.sum(self.weights * self.means, axis=-1)

    @property
    def var(self) -> np.ndarray:
        """Mixture variance ``sum_k w_k (s_k^2 + mu_k^2) - mean^2`` (computed stably)."""
        return sum(self.variance_decomposition().values())

    @property
    def std(self) -> np.ndarray:
        """Mixture standard deviation."""
        return np.sqrt(self.var)

    def variance_decomposition(self) -> dict[str, np.ndarray]:
        """The variance split into ``laplace`` (within), ``ensemble`` (between) and ``noise``."""
        w = self.weights
        between = np.sum(w * (self.means - self.mean[..., None]) ** 2, axis=-1)
        return {
            "laplace": np.sum(w * (self.variances - self.noise_variances), axis=-1),
            "ensemble": between,
            "noise": np.sum(w * self.noise_variances, axis=-1),
        }

    # --- probabilities ----------------------------------------------------------------------

    def _points(self, y, name: str = "y") -> np.ndarray:
        y = _float_array(y, name)
        try:
            return np.broadcast_to(y, self.batch_shape)
        except ValueError:
            raise ValueError(
                f"{name} has shape {y.shape}, which does not broadcast to the batch shape "
                f"{self.batch_shape}"
            ) from None

    def _cdf(self, y: np.ndarray) -> np.ndarray:
        z = (y[..., None] - self.means) / np.sqrt(self.variances)
        return np.sum(self.weights * ndtr(z), axis=-1)

    def cdf(self, y) -> np.ndarray:
        """``P(Y <= y)`` per point; ``y`` broadcasts to ``batch_shape``."""
        return self._cdf(self._points(y))

    def log_prob(self, y) -> np.ndarray:
        """Log density per point (logsumexp over the components)."""
        y = self._points(y)
        return -nll_mixture(y, self.means, self.variances, self.weights, average=False)

    def crps(self, y) -> np.ndarray:
        """Closed-form CRPS per point (Grimit et al. 2006; :func:`mola_ts.metrics.crps_mixture`)."""
        y = self._points(y)
        return crps_mixture(y, self.means, self.variances, self.weights, average=False)

    def ppf(self, q, *, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
        """Quantile function by vectorised, Newton-accelerated bisection on the mixture CDF.

        The ``q``-quantile lies between the smallest and the largest component ``q``-quantile,
        which brackets it exactly. Every iteration shrinks each bracket with the CDF's sign and
        proposes a Newton step (CDF over density), kept only when it falls inside the bracket;
        otherwise the bracket is bisected. A point is done when its bracket, or its Newton step,
        is shorter than ``tol`` times its standard deviation. ``q`` broadcasts to
        ``batch_shape``; 0 and 1 give -inf and +inf.
        """
        q = self._points(q, "q")
        outside = int(((q < 0) | (q > 1)).sum())
        if outside:
            raise ValueError(f"q must lie in [0, 1]; {outside} values do not")
        sd = np.sqrt(self.variances)
        comp = self.means + sd * ndtri(np.clip(q, 1e-300, 1 - 1e-16))[..., None]
        lo, hi = comp.min(axis=-1).ravel(), comp.max(axis=-1).ravel()
        x = 0.5 * (lo + hi)
        width = np.broadcast_to(tol * self.std, self.batch_shape).ravel()
        k = self.n_components
        means, sd = self.means.reshape(-1, k), sd.reshape(-1, k)
        weights = np.broadcast_to(self.weights, self.means.shape).reshape(-1, k)
        target = q.ravel()
        active = np.flatnonzero(hi - lo > width)  # the points still searching
        for _ in range(max_iter):
            if active.size == 0:
                break
            xa, la, ha, wa = x[active], lo[active], hi[active], width[active]
            z = (xa[:, None] - means[active]) / sd[active]
            cdf = np.sum(weights[active] * ndtr(z), axis=-1)
            pdf = np.sum(weights[active] * np.exp(-0.5 * z * z) / sd[active], axis=-1)
            below = cdf < target[active]
            la, ha = np.where(below, xa, la), np.where(below, ha, xa)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                newton = xa - np.sqrt(2 * np.pi) * (cdf - target[active]) / pdf
            inside = (newton > la) & (newton < ha)  # False for NaN / inf steps
            done = inside & (np.abs(newton - xa) <= wa)
            x[active] = np.where(inside, newton, 0.5 * (la + ha))
            lo[active], hi[active] = la, ha
            active = active[~done & (ha - la > wa)]
        x = x.reshape(self.batch_shape)
        return np.where(q <= 0, -np.inf, np.where(q >= 1, np.inf, x))

    def quantiles(self, alphas) -> np.ndarray:
        """The ``alphas``-quantiles of every point, shape ``batch_shape + (len(alphas),)``."""
        a = _float_array(alphas, "alphas")
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"alphas must be a non-empty 1-D sequence, got shape {a.shape}")
        if ((a <= 0) | (a >= 1)).any():
            raise ValueError(f"alphas must lie in (0, 1), got {a.tolist()}")
        return np.stack([self.ppf(float(x)) for x in a], axis=-1)

    def interval(self, coverage: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central prediction interval ``(ppf((1 - c)/2), ppf((1 + c)/2))`` per point."""
        c = _check_coverage(coverage)
        return self.ppf((1.0 - c) / 2.0), self.ppf((1.0 + c) / 2.0)

    def sample(self, n_samples: int = 1, *, random_state=None) -> np.ndarray:
        """Draw ``n_samples`` per point, shape ``(n_samples,) + batch_shape``.

        ``random_state``: None, an int seed or a ``numpy.random.Generator``.
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
            raise TypeError(f"n_samples must be an int, got {type(n_samples).__name__}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        rng = np.random.default_rng(random_state)
        shape = (int(n_samples),) + self.batch_shape
        cum = np.cumsum(self.weights, axis=-1)
        u = rng.random(shape)[..., None] * cum[..., -1:]
        k = np.minimum((u >= cum).sum(axis=-1), self.n_components - 1)[..., None]
        full = shape + (self.n_components,)
        mu = np.take_along_axis(np.broadcast_to(self.means, full), k, axis=-1)[..., 0]
        var = np.take_along_axis(np.broadcast_to(self.variances, full), k, axis=-1)[..., 0]
        return mu + np.sqrt(var) * rng.standard_normal(shape)

    def __repr__(self) -> str:
        return f"GaussianMixture(batch_shape={self.batch_shape}, n_components={self.n_components})"
