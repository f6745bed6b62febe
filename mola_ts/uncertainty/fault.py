"""Calibrated probability of fault, with a credible band, from a monitoring statistic (spec §4).

A monitor turns each sample into a statistic ``S`` (T^2, SPE, CUSUM W, a fused index, or the
predictive NLL of a reconstruction under a Laplace mixture); higher means more abnormal. From the
in-control values of ``S`` on validation data, :class:`FaultProbability` answers per new sample:
how unusual is this value (its in-control tail probability, a p-value), how sure are we (a
credible band), and how likely is a fault?

1. Tail probability ``p(s) = P(S >= s | in control)``. Alarms live in the upper tail, so the tail
   is modelled where the data are thin (peaks over threshold): above the ``1 - tail_fraction``
   quantile ``u`` of the validation values the excesses ``S - u`` follow a generalised Pareto
   distribution GPD(sigma, xi) fitted by maximum likelihood, with ``0 <= xi <= 2`` (a monitoring
   statistic has no known upper end: ``xi = 0`` is an exponential tail, as for chi-square-like
   statistics, ``xi > 0`` a heavier one), so ``p(s) = tau (1 + xi (s - u) / sigma)^(-1/xi)``
   with ``tau`` the share of values above ``u``. Below ``u`` the empirical share of validation
   values ``>= s`` is used. In control ``p`` is close to uniform (``P(p <= alpha) ~ alpha``).
2. Uncertainty band (Laplace). ``(log tau, log sigma, xi)`` get their Laplace (large-sample)
   posterior: variance ``(1 - tau) / k`` for ``log tau`` and the inverse Fisher information
   ``(1 + xi) / k [[2, -1], [-1, 1 + xi]]`` for ``(log sigma, xi)`` from the ``k`` excesses. The
   band of ``p(s)`` is its range over the credible ellipsoid of radius ``z_c`` (for a linear
   function exactly the central ``coverage`` band; unlike a linearisation it stays monotone in
   ``s`` far out in the tail). Below ``u`` the band is the Jeffreys interval of the empirical
   share. The point value is the plug-in estimate.
3. Fault probability by Bayes' rule with prior ``pi = prior_fault``:
   ``P(F | s) = pi / (pi + (1 - pi) B(p))``, ``B(p) = -e p log p`` for ``p < 1/e`` (else 1), the
   Sellke-Bayarri-Berger (2001) calibration of a p-value: the smallest in-control-versus-fault
   Bayes factor that any fault alternative with a decreasing p-value density ``xi p^(xi - 1)``
   can give. Without fault data no alternative can be fitted; this one is the most
   alarm-friendly that the evidence supports, so ``P(F | s)`` is an upper bound. Its band is the
   image of the tail probability's band.

With K statistics per sample (columns: K monitors of an ensemble) each column gets its own tail
model and the tail probability is their uniform mixture (a mixture of Laplace approximations).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.optimize import minimize
from scipy.special import expit, logsumexp, ndtri
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from mola_ts.metrics import _check_coverage, _float_array

__all__ = ["FaultProbability"]

_MIN_EXCESSES = 10
_XI_MAX = 2.0
_N_DIRECTIONS = 256


def _gpd_log_ratio(xi, t) -> np.ndarray:
    """``L = log(1 + xi t) / xi`` for ``xi, t >= 0``, so a GPD's ``log P(excess > t) = -L``;
    continuous at ``xi = 0``, where ``L = t``."""
    xt = xi * t
    small = xt < 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(small, t - 0.5 * xi * t * t, np.log1p(xt) / xi)


def _gpd_terms(xi: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``L``, ``a = -dL/dlog sigma = t / (1 + xi t)`` and ``g = -dL/dxi`` (``t^2 / 2`` at 0)."""
    log_ratio = _gpd_log_ratio(xi, t)
    a = t / (1.0 + xi * t)
    if xi * t.max(initial=0.0) < 1e-6:
        return log_ratio, a, 0.5 * t * t - (2.0 / 3.0) * xi * t**3
    return log_ratio, a, (log_ratio - a) / xi


def _gpd_fit(excess: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood ``(sigma, xi)``, ``0 <= xi <= 2``, of a generalised Pareto sample."""
    k = len(excess)

    def nll(x: np.ndarray) -> tuple[float, np.ndarray]:
        log_sigma, xi = x
        log_ratio, a, g = _gpd_terms(xi, excess / np.exp(log_sigma))
        value = k * log_sigma + (1.0 + xi) * log_ratio.sum()
        grad = [k - (1.0 + xi) * a.sum(), np.sum(log_ratio - (1.0 + xi) * g)]
        return float(value), np.array(grad)

    start = np.array([np.log(max(excess.mean(), 1e-300)), 0.1])
    result = minimize(nll, start, jac=True, method="L-BFGS-B",
                      bounds=[(None, None), (0.0, _XI_MAX)])
    return float(np.exp(result.x[0])), float(result.x[1])


def _sphere(n: int) -> np.ndarray:
    """``n`` evenly spread unit vectors in 3-D (a Fibonacci lattice), shape (n, 3)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


class FaultProbability(BaseEstimator):
    """Fault probability with a credible band from a statistic (higher = more abnormal).

    Parameters
    ----------
    prior_fault : float in (0, 1)
        Prior probability of a fault per sample (the spec's ``P(F) = alpha``).
    coverage : float in (0, 1)
        Credibility of the bands around the tail and fault probabilities.
    threshold : float in (0, 1)
        ``predict`` raises an alarm where the fault probability reaches it.
    tail_fraction : float in (0, 1)
        Share of the validation values above the threshold ``u`` of the tail model; at least
        10 values must lie above it.

    Attributes
    ----------
    n_samples_, n_statistics_ : int
        In-control samples seen in fit, and statistics per sample (K).
    in_control_ : ndarray of shape (n, K)
        The validation statistics, sorted per column (for the empirical body).
    tail_threshold_, tau_, sigma_, xi_ : ndarray of shape (K,)
        Tail threshold ``u``, share above it, and the fitted GPD scale and shape.
    n_excesses_ : ndarray of shape (K,)
        Validation values above ``u``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fp = FaultProbability().fit(rng.chisquare(5, size=2000))   # in-control T^2 values
    >>> prob, lower, upper = fp.fault_probability([3.0, 40.0])
    >>> bool(prob[0] < 0.05 and prob[1] > 0.95), bool((lower <= prob).all() & (prob <= upper).all())
    (True, True)
    """

    def __init__(self, prior_fault: float = 0.01, coverage: float = 0.9, threshold: float = 0.5,
                 tail_fraction: float = 0.1):
        self.prior_fault = prior_fault
        self.coverage = coverage
        self.threshold = threshold
        self.tail_fraction = tail_fraction

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.target_tags.required = False
        return tags

    @staticmethod
    def _statistics(statistics) -> np.ndarray:
        s = _float_array(statistics, "statistics")
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2:
            raise ValueError(f"statistics must be 1-D (samples) or 2-D (samples, K), got shape "
                             f"{s.shape}")
        return s

    def fit(self, statistics, y=None) -> FaultProbability:
        """Fit the in-control tail model on validation statistics, shape (n,) or (n, K)."""
        for name in ("prior_fault", "threshold", "tail_fraction"):
            _check_coverage(getattr(self, name), name)
        _check_coverage(self.coverage)
        s = self._statistics(statistics)
        n = len(s)
        if s.shape[1] == 0:
            raise ValueError(f"statistics has no columns: 0 feature(s) (shape={s.shape}) while "
                             "a minimum of 1 is required.")
        if n == 0:
            raise ValueError(f"statistics has no rows (n_samples=0, shape={s.shape}); the tail "
                             f"model needs at least {_MIN_EXCESSES} values above its threshold")
        threshold, tau, sigma, xi, counts = [], [], [], [], []
        for k in range(s.shape[1]):
            u = float(np.quantile(s[:, k], 1.0 - self.tail_fraction))
            excess = s[:, k][s[:, k] > u] - u
            if len(excess) < _MIN_EXCESSES:
                raise ValueError(
                    f"statistics column {k}: {len(excess)} of {n} values lie above its "
                    f"{1 - self.tail_fraction:g} quantile; at least {_MIN_EXCESSES} are needed "
                    "(give more validation samples or a larger tail_fraction)"
                )
            scale, shape = _gpd_fit(excess)
            threshold.append(u)
            tau.append(len(excess) / n)
            sigma.append(scale)
            xi.append(shape)
            counts.append(len(excess))
        self.n_samples_, self.n_statistics_ = s.shape
        self.in_control_ = np.sort(s, axis=0)
        self.tail_threshold_, self.tau_ = np.asarray(threshold), np.asarray(tau)
        self.sigma_, self.xi_ = np.asarray(sigma), np.asarray(xi)
        self.n_excesses_ = np.asarray(counts)
        return self

    def log_tail_probability(self, statistics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Natural log of the tail probability and of its band's lower and upper ends, (n,)."""
        check_is_fitted(self, "xi_")
        s = self._statistics(statistics)
        if s.shape[1] != self.n_statistics_:
            raise ValueError(f"statistics has {s.shape[1]} columns but fit saw "
                             f"{self.n_statistics_}")
        n = self.n_samples_
        # body: empirical share of in-control values >= s, with its Jeffreys interval
        ge = n - np.column_stack([np.searchsorted(self.in_control_[:, k], s[:, k], side="left")
                                  for k in range(self.n_statistics_)])
        a = 0.5 - self.coverage / 2.0
        with np.errstate(divide="ignore"):
            body = (np.log(ge / n), np.log(stats.beta.ppf(a, ge + 0.5, n - ge + 0.5)),
                    np.log(stats.beta.ppf(1.0 - a, ge + 0.5, n - ge + 0.5)))
        # tail: log p = log tau - L(xi, (s - u) / sigma) at the MLE, and its range over the
        # Laplace credible ellipsoid of (log tau, log sigma, xi) (xi kept >= 0)
        above = s > self.tail_threshold_
        excess = np.maximum(s - self.tail_threshold_, 0.0)
        log_p = np.log(self.tau_) - _gpd_log_ratio(self.xi_, excess / self.sigma_)
        tail = (log_p, log_p.copy(), log_p.copy())
        rows = above.any(axis=1)  # the band's surface only where some statistic is in the tail
        if rows.any():
            params = self._credible_params()  # (K, D, 3)
            log_tau, log_sigma, xi = (params[None, :, :, j] for j in range(3))
            t = excess[rows][:, :, None] / np.exp(log_sigma)
            surface = log_tau - _gpd_log_ratio(xi, t)  # (rows, K, D)
            tail[1][rows] = np.minimum(surface.min(axis=2), log_p[rows])
            tail[2][rows] = np.minimum(np.maximum(surface.max(axis=2), log_p[rows]), 0.0)
        out = []
        for body_part, tail_part in zip(body, tail, strict=True):
            part = np.where(above, tail_part, body_part)
            out.append(logsumexp(part, axis=1) - np.log(self.n_statistics_))
        return out[0], out[1], out[2]

    def _credible_params(self) -> np.ndarray:
        """Points on the Laplace credible ellipsoid of ``(log tau, log sigma, xi)``, (K, D, 3).

        The Laplace covariance is ``(1 - tau) / k`` for ``log tau`` (binomial) and the inverse
        Fisher information ``(1 + xi) / k [[2, -1], [-1, 1 + xi]]`` for ``(log sigma, xi)``;
        the radius ``z_c`` makes the range of a linear function the usual central band.
        """
        radius = ndtri(0.5 + self.coverage / 2.0)
        directions = _sphere(_N_DIRECTIONS)
        out = []
        for tau, sigma, xi, k in zip(self.tau_, self.sigma_, self.xi_, self.n_excesses_,
                                     strict=True):
            cov = np.zeros((3, 3))
            cov[0, 0] = (1.0 - tau) / k
            cov[1:, 1:] = (1.0 + xi) / k * np.array([[2.0, -1.0], [-1.0, 1.0 + xi]])
            points = np.array([np.log(tau), np.log(sigma), xi]) + radius * directions @ (
                np.linalg.cholesky(cov).T)
            points[:, 2] = np.clip(points[:, 2], 0.0, _XI_MAX)
            out.append(points)
        return np.stack(out)

    def tail_probability(self, statistics, *, return_band: bool = False):
        """In-control p-value ``P(S >= s)`` per sample (with its band's ends), shape (n,)."""
        log_p, log_lo, log_hi = self.log_tail_probability(statistics)
        return (np.exp(log_p), np.exp(log_lo), np.exp(log_hi)) if return_band else np.exp(log_p)

    def fault_probability(self, statistics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fault probability per sample with the lower and upper ends of its band."""
        log_p, log_lo, log_hi = self.log_tail_probability(statistics)
        prior_odds = np.log(self.prior_fault) - np.log1p(-self.prior_fault)
        point, lower, upper = (expit(prior_odds - _log_bayes_factor(x))
                               for x in (log_p, log_hi, log_lo))
        return point, lower, upper

    def decision_function(self, statistics) -> np.ndarray:
        """The fault probability (higher = more abnormal)."""
        return self.fault_probability(statistics)[0]

    def predict(self, statistics) -> np.ndarray:
        """1 where the fault probability reaches ``threshold``, else 0."""
        return (self.decision_function(statistics) >= self.threshold).astype(np.int64)


def _log_bayes_factor(log_p: np.ndarray) -> np.ndarray:
    """``log B(p)``, ``B(p) = -e p log p`` below ``p = 1/e`` and 1 above (Sellke et al. 2001)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.minimum(log_p, -1.0)
        return np.where(np.isneginf(log_p), -np.inf, 1.0 + log_p + np.log(-log_p))
