"""Last-layer Laplace approximation for Gaussian regression (uncertainty spec §2).

The body of a trained network is frozen and its last ``nn.Linear`` (the *head*, weights ``W``
of shape ``(m, d)`` and bias ``b``) becomes Bayesian. With features ``phi`` (the head's input,
``1`` appended when the head has a bias), parameters ``theta = [W | b]`` flattened row by row,
a prior ``N(0, I / lambda)`` and Gaussian noise of variance ``sigma_i^2`` on output ``i``, the
generalised Gauss-Newton matrix of the head is exact and block diagonal::

    P = blockdiag_i( G / sigma_i^2 ) + lambda I,      G = sum_rows phi phi^T   (d' x d')

i.e. ``I_m (x) G / sigma^2 + lambda I`` for one shared noise. Three structures are offered:

- ``"full"``: the dense ``(m d') x (m d')`` posterior covariance by Cholesky (small heads only);
- ``"kron"``: the Kronecker factorisation, inverted through one eigendecomposition
  ``G = Q diag(e) Q^T``: block ``i`` of the covariance is ``Q diag(1 / (e / sigma_i^2 + lambda))
  Q^T``, so changing ``lambda`` or ``sigma`` costs nothing. For a linear head under a Gaussian
  likelihood this factorisation is *exact*: ``"kron"`` and ``"full"`` give the same posterior;
- ``"diag"``: only the diagonal of ``P`` (exact only when ``G`` is diagonal).

The predictive is the linearised (GLM) one, which for a linear head is exact:
``N(f(x), phi^T Sigma_i phi + sigma_i^2)`` for output ``i``, the functional (Laplace) part plus
the noise. ``G``, the residual sums of squares and the row count are accumulated batch by batch,
so the memory does not grow with the number of samples.

Prior precision and noise are tuned by maximising the Laplace log marginal likelihood (evidence)
around the fixed MAP weights ``theta*`` (quasi-Newton ascent on ``log lambda`` and ``log sigma``
with the exact gradient)::

    log Z = sum_i [-RSS_i / (2 sigma_i^2) - N/2 log(2 pi sigma_i^2)] - lambda/2 |theta* - theta_0|^2
            - 1/2 log det P + p/2 log lambda

with the prior mean ``theta_0`` (0 by default; :mod:`mola_ts.uncertainty.heads` centres the prior
of a refitted head on the head it replaces).

Every row of the head's input counts as one sample: a head applied to ``(batch, channels, d)``
features (a channel-independent forecasting head) contributes ``batch * channels`` rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import nn

from mola_ts.training import iterate_batches
from mola_ts.uncertainty.distribution import GaussianMixture

__all__ = ["LastLayerLaplace", "STRUCTURES", "MAX_FULL_PARAMETERS"]

STRUCTURES = ("full", "kron", "diag")
#: the largest head (``m * (d + 1)`` parameters) the dense ``"full"`` structure accepts.
MAX_FULL_PARAMETERS = 4096
_LOG_PRECISION_BOUNDS = (-30.0, 30.0)
_LOG_SIGMA_BOUNDS = (-20.0, 15.0)


def _find_head(model: nn.Module, last_layer: str | None) -> tuple[str, nn.Linear]:
    if last_layer is not None:
        if not isinstance(last_layer, str):
            raise TypeError(f"last_layer must be a module name (str) or None, "
                            f"got {type(last_layer).__name__}")
        try:
            head = model.get_submodule(last_layer)
        except AttributeError:
            raise ValueError(f"last_layer={last_layer!r} is not a submodule of the model") from None
        if not isinstance(head, nn.Linear):
            raise TypeError(f"last_layer={last_layer!r} must be an nn.Linear, "
                            f"got {type(head).__name__}")
        return last_layer, head
    linears = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    if not linears:
        raise ValueError("the model holds no nn.Linear; its last operation must be one")
    return linears[-1]


def _as_tensor(x, name: str, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype == object or x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
        x = torch.as_tensor(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch Tensor or a numpy array (a tuple of them for "
                        f"several model inputs), got {type(x).__name__}")
    return x.to(dtype) if x.is_floating_point() else x


class LastLayerLaplace(BaseEstimator):
    """Last-layer Laplace approximation of a trained regression network.

    Parameters
    ----------
    model : torch.nn.Module
        A trained network whose output is the output of an ``nn.Linear`` (the head). It is used
        as it is (eval mode during the passes, never modified). For a network that
        post-processes its head's output, pass the head itself with its input features as
        ``X`` (the explicit split), or a module whose output is the head's output.
    last_layer : str, optional
        Name of the head in ``model.named_modules()``; default: the last ``nn.Linear``.
    structure : {"kron", "full", "diag"}
        Posterior structure (module docstring). ``"full"`` is limited to
        ``MAX_FULL_PARAMETERS`` head parameters.
    prior_precision : float
        Precision ``lambda`` of the isotropic Gaussian prior (the start point when tuning).
    sigma_noise : float, array-like of shape (m,) or None
        Observation-noise standard deviation (start point when tuning); None: the root mean
        squared residual of the fit data.
    noise : {"shared", "per_output"}
        One noise level for all ``m`` outputs, or one per output (heteroscedastic outputs).
    tune : bool
        Maximise the log marginal likelihood over ``prior_precision`` and ``sigma_noise``.
    prior_mean : array-like of shape (m, d') or None
        Mean ``theta_0`` of the Gaussian prior on ``[W | b]`` (None: zero).
    batch_size : int
        Rows per forward pass when accumulating and predicting.

    Attributes
    ----------
    head_name_ : str
        Name of the head module ("" when the model is the head).
    n_features_, n_outputs_ : int
        The head's input (without bias) and output sizes ``d`` and ``m``.
    n_rows_ : int
        Rows seen in fit (samples times the leading dimensions of the head input).
    theta_ : ndarray of shape (m, d')
        MAP head weights ``[W | b]`` (float64); ``d' = d + 1`` with a bias.
    gram_ : ndarray of shape (d', d')
        ``sum phi phi^T`` over the fit rows.
    rss_ : ndarray of shape (m,)
        Residual sums of squares of the MAP fit per output.
    eigenvalues_ : ndarray of shape (d',)
        Curvature spectrum: eigenvalues of ``gram_`` ("full", "kron") or its diagonal ("diag").
    eigenvectors_ : ndarray of shape (d', d') or None
        Eigenvectors of ``gram_`` ("kron"), else None.
    covariance_ : ndarray of shape (m d', m d') or None
        Dense posterior covariance ("full"), else None.
    prior_precision_ : float
    sigma_noise_ : float or ndarray of shape (m,)
        Fitted (tuned) prior precision and noise standard deviation(s).
    log_marginal_likelihood_ : float
        Evidence at the fitted hyper-parameters.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    >>> X, y = torch.randn(200, 3), torch.randn(200, 2)
    >>> la = LastLayerLaplace(net).fit(X, y)
    >>> mean, var = la.predict(X[:5], return_var=True)
    >>> mean.shape, bool((var > la.sigma_noise_ ** 2).all())
    ((5, 2), True)
    """

    def __init__(self, model: nn.Module | None = None, *, last_layer: str | None = None,
                 structure: str = "kron", prior_precision: float = 1.0,
                 sigma_noise=None, noise: str = "shared", tune: bool = True,
                 prior_mean=None, batch_size: int = 256):
        self.model = model
        self.last_layer = last_layer
        self.structure = structure
        self.prior_precision = prior_precision
        self.sigma_noise = sigma_noise
        self.noise = noise
        self.tune = tune
        self.prior_mean = prior_mean
        self.batch_size = batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.non_deterministic = False
        return tags

    # --- checks and data passes -------------------------------------------------------------

    def _check_params(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(self.model).__name__}")
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {self.structure!r}")
        if self.noise not in ("shared", "per_output"):
            raise ValueError(f"noise must be 'shared' or 'per_output', got {self.noise!r}")
        _positive(self.prior_precision, "prior_precision")
        if not isinstance(self.tune, (bool, np.bool_)):
            raise TypeError(f"tune must be a bool, got {type(self.tune).__name__}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)):
            raise TypeError(f"batch_size must be an int, got {type(self.batch_size).__name__}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def _passes(self, X, y, *, with_target: bool
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Yield ``(phi, f, target)`` per batch: the head's input and output, and y (float64)."""
        _, head = _find_head(self.model, self.head_name_)
        device, dtype = head.weight.device, head.weight.dtype
        if isinstance(X, torch.utils.data.Dataset):
            if y is not None:
                raise ValueError("y must be None when X is a torch Dataset: its batches are "
                                 "(inputs..., target)")
            batches = ((b[:-1], b[-1]) for b in iterate_batches(X, self.batch_size,
                                                                 device=device))
        else:
            parts = list(X) if isinstance(X, tuple) else [X]
            if not parts:
                raise ValueError("X is an empty sequence of inputs")
            tensors = [_as_tensor(t, f"X[{i}]" if len(parts) > 1 else "X", dtype)
                       for i, t in enumerate(parts)]
            if with_target:
                if y is None:
                    raise ValueError("y is required unless X is a torch Dataset")
                tensors.append(_as_tensor(y, "y", dtype))
                n_bad = int((~torch.isfinite(tensors[-1])).sum())
                if n_bad:
                    raise ValueError(f"y holds {n_bad} NaN/inf values")
            sizes = {len(t) if t.ndim else 0 for t in tensors}
            if len(sizes) != 1:
                names = [f"X[{i}]" for i in range(len(parts))] + (["y"] if with_target else [])
                raise ValueError("X and y must have the same first dimension, got "
                                 + ", ".join(f"{n}: {len(t) if t.ndim else 'scalar'}"
                                             for n, t in zip(names, tensors, strict=True)))
            if sizes == {0}:
                raise ValueError("X is empty (0 samples)")
            n_in = len(parts)
            batches = ((b[:n_in], b[n_in] if with_target else None)
                       for b in iterate_batches(tuple(tensors), self.batch_size, device=device))
        captured: list[tuple[torch.Tensor, torch.Tensor]] = []
        handle = head.register_forward_hook(
            lambda _mod, inputs, output: captured.append((inputs[0], output)))
        was_training = self.model.training
        self.model.eval()
        try:
            for inputs, target in batches:
                captured.clear()
                with torch.no_grad():
                    out = self.model(*inputs)
                if len(captured) != 1:
                    raise ValueError(f"the head {self.head_name_ or 'model'!r} ran "
                                     f"{len(captured)} times in one forward pass; "
                                     "it must run exactly once")
                phi, f = captured[0]
                if out is not f and not (isinstance(out, torch.Tensor) and out.shape == f.shape
                                         and torch.equal(out, f)):
                    raise ValueError(
                        f"the model's output is not the output of its last nn.Linear "
                        f"{self.head_name_ or 'model'!r}: the model must end with that "
                        "layer (pass the head and its input features for an explicit split)"
                    )
                if with_target:
                    if target.shape != f.shape:
                        raise ValueError(f"y has per-batch shape {tuple(target.shape)} but "
                                         f"the model outputs {tuple(f.shape)}")
                    n_bad = int((~torch.isfinite(target)).sum())
                    if n_bad:
                        raise ValueError(f"y holds {n_bad} NaN/inf values")
                    target = target.double()
                yield phi.double(), f.double(), target
        finally:
            handle.remove()
            self.model.train(was_training)

    def _features(self, phi: torch.Tensor) -> torch.Tensor:
        if self.has_bias_:
            return torch.cat([phi, phi.new_ones(len(phi), 1)], dim=1)
        return phi

    # --- fit ----------------------------------------------------------------------------------

    def fit(self, X, y=None) -> LastLayerLaplace:
        """Accumulate the head's curvature on ``(X, y)`` and fit the posterior.

        Parameters
        ----------
        X : Tensor, ndarray, a tuple of them (several model inputs), or a torch Dataset
            Model inputs. A Dataset yields ``(inputs..., target)`` batches, as in training.
        y : Tensor or ndarray, optional
            Targets with the shape of the model's output (required unless X is a Dataset).
        """
        self._check_params()
        self.head_name_, head = _find_head(self.model, self.last_layer)
        self.has_bias_ = head.bias is not None
        self.n_features_ = head.in_features
        self.n_outputs_ = head.out_features
        d_full = self.n_features_ + int(self.has_bias_)
        n_params = self.n_outputs_ * d_full
        if self.structure == "full" and n_params > MAX_FULL_PARAMETERS:
            raise ValueError(
                f"structure='full' builds a dense {n_params} x {n_params} covariance; the head "
                f"has {n_params} parameters (limit {MAX_FULL_PARAMETERS}); use "
                "structure='kron', which is exact for a linear head"
            )
        gram = torch.zeros(d_full, d_full, dtype=torch.float64)
        rss = torch.zeros(self.n_outputs_, dtype=torch.float64)
        rows = 0
        for phi, f, target in self._passes(X, y, with_target=True):
            phi = self._features(phi.reshape(-1, phi.shape[-1])).cpu()
            gram += phi.T @ phi
            rss += ((target - f) ** 2).reshape(-1, self.n_outputs_).sum(dim=0).cpu()
            rows += len(phi)
        if rows == 0:
            raise ValueError("the fit data is empty")
        self.n_rows_ = rows
        self.gram_ = gram.numpy()
        self.rss_ = rss.numpy()
        weight = head.weight.detach().double().cpu()
        if self.has_bias_:
            weight = torch.cat([weight, head.bias.detach().double().cpu()[:, None]], dim=1)
        self.theta_ = weight.numpy()
        self.prior_mean_ = self._check_prior_mean()
        if self.structure == "diag":
            self.eigenvalues_, self.eigenvectors_ = np.diag(self.gram_).copy(), None
        else:
            e, q = np.linalg.eigh(self.gram_)
            self.eigenvalues_ = np.clip(e, 0.0, None)
            self.eigenvectors_ = q if self.structure == "kron" else None
        self.prior_precision_, sigma = float(self.prior_precision), self._initial_sigma()
        if self.tune:
            self.prior_precision_, sigma = self._maximise_evidence(self.prior_precision_, sigma)
        self.sigma_noise_ = float(sigma[0]) if self.noise == "shared" else sigma
        self.covariance_ = self._dense_covariance() if self.structure == "full" else None
        self.log_marginal_likelihood_ = self.log_marginal_likelihood()
        return self

    def _initial_sigma(self) -> np.ndarray:
        m = self.n_outputs_
        if self.sigma_noise is None:
            mean_sq = self.rss_ / self.n_rows_
            sigma = np.sqrt(np.full(1, mean_sq.mean()) if self.noise == "shared" else mean_sq)
            return np.maximum(sigma, 1e-8)
        sigma = np.array(self.sigma_noise, dtype=np.float64) if not isinstance(
            self.sigma_noise, torch.Tensor) else self.sigma_noise.detach().double().cpu().numpy()
        if self.noise == "shared":
            _positive(self.sigma_noise, "sigma_noise")
            return sigma.reshape(1)
        if sigma.ndim == 0:
            sigma = np.full(m, float(sigma))
        if sigma.shape != (m,) or not (np.isfinite(sigma) & (sigma > 0)).all():
            raise ValueError(f"sigma_noise must be a positive float or {m} positive values "
                             f"(one per output), got {self.sigma_noise!r}")
        return sigma

    def _check_prior_mean(self) -> np.ndarray | None:
        if self.prior_mean is None:
            return None
        mean = self.prior_mean.detach().double().cpu().numpy() if isinstance(
            self.prior_mean, torch.Tensor) else np.array(self.prior_mean, dtype=np.float64)
        if mean.shape != self.theta_.shape or not np.isfinite(mean).all():
            raise ValueError(f"prior_mean must be a finite array of the head's shape "
                             f"{self.theta_.shape} ([W | b]), got shape {mean.shape}")
        return mean

    def _noise_sigma(self, sigma_noise=None) -> np.ndarray:
        """Noise standard deviation per output, shape (m,)."""
        sigma = self.sigma_noise_ if sigma_noise is None else sigma_noise
        sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (self.n_outputs_,))
        if not (np.isfinite(sigma) & (sigma > 0)).all():
            raise ValueError(f"sigma_noise must be positive, got {sigma_noise!r}")
        return sigma

    def _maximise_evidence(self, prior_precision: float, sigma: np.ndarray
                           ) -> tuple[float, np.ndarray]:
        shared = self.noise == "shared"
        scale = 1.0 / (self.n_rows_ * self.n_outputs_)  # an O(1) objective for the optimiser

        def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, g_prec, g_sigma = self._evidence(np.exp(x[0]), np.exp(x[1:]))
            g_sigma = g_sigma.sum(keepdims=True) if shared else g_sigma
            return -value * scale, -np.concatenate([[g_prec], g_sigma]) * scale

        x0 = np.concatenate([[np.log(prior_precision)], np.log(sigma)])
        x0 = np.clip(x0, [_LOG_PRECISION_BOUNDS[0]] + [_LOG_SIGMA_BOUNDS[0]] * len(sigma),
                     [_LOG_PRECISION_BOUNDS[1]] + [_LOG_SIGMA_BOUNDS[1]] * len(sigma))
        bounds = [_LOG_PRECISION_BOUNDS] + [_LOG_SIGMA_BOUNDS] * len(sigma)
        result = minimize(negative, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-10})
        return float(np.exp(result.x[0])), np.exp(result.x[1:])

    def _evidence(self, prior_precision: float, sigma: np.ndarray
                  ) -> tuple[float, float, np.ndarray]:
        """Log evidence and its gradient w.r.t. ``log lambda`` and each output's ``log sigma``."""
        lam = float(prior_precision)
        s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (self.n_outputs_,)) ** 2
        n, p = self.n_rows_, self.theta_.size
        u = self.eigenvalues_[None, :] / s[:, None]  # (m, d'): data curvature per direction
        offset = self.theta_ if getattr(self, "prior_mean_", None) is None \
            else self.theta_ - self.prior_mean_
        sq_norm = float(np.sum(offset ** 2))
        value = (-0.5 * np.sum(self.rss_ / s) - 0.5 * n * np.sum(np.log(2 * np.pi * s))
                 - 0.5 * lam * sq_norm - 0.5 * np.sum(np.log(u + lam)) + 0.5 * p * np.log(lam))
        g_prec = -0.5 * lam * sq_norm - 0.5 * np.sum(lam / (u + lam)) + 0.5 * p
        g_sigma = self.rss_ / s - n + np.sum(u / (u + lam), axis=1)  # d/d log sigma_i
        return float(value), float(g_prec), g_sigma

    def log_marginal_likelihood(self, prior_precision: float | None = None,
                                sigma_noise=None) -> float:
        """Laplace log evidence at the fitted (default) or given hyper-parameters.

        The curvature is the structure's: ``"full"`` and ``"kron"`` use the exact spectrum of
        ``gram_`` (they coincide), ``"diag"`` its diagonal.
        """
        check_is_fitted(self, "theta_")
        lam = self.prior_precision_ if prior_precision is None else _positive(
            prior_precision, "prior_precision")
        return self._evidence(lam, self._noise_sigma(sigma_noise))[0]

    # --- posterior and predictive -----------------------------------------------------------

    def _block_inverse_diag(self) -> np.ndarray:
        """``1 / (e / sigma_i^2 + lambda)``, shape (m, d')."""
        s = self._noise_sigma() ** 2
        return 1.0 / (self.eigenvalues_[None, :] / s[:, None] + self.prior_precision_)

    def _dense_covariance(self) -> np.ndarray:
        p = self.theta_.size
        s = self._noise_sigma() ** 2
        precision = np.kron(np.diag(1.0 / s), self.gram_) + self.prior_precision_ * np.eye(p)
        return cho_solve(cho_factor(precision, lower=True), np.eye(p))

    def posterior_covariance(self) -> np.ndarray:
        """Dense posterior covariance of ``theta_.ravel()`` (row-major ``[W | b]``)."""
        check_is_fitted(self, "theta_")
        if self.covariance_ is not None:
            return self.covariance_.copy()
        d_full, m = self.gram_.shape[0], self.n_outputs_
        if m * d_full > MAX_FULL_PARAMETERS:
            raise ValueError(f"the dense covariance would be {m * d_full} x {m * d_full}; "
                             f"the limit is {MAX_FULL_PARAMETERS} parameters")
        inv = self._block_inverse_diag()
        blocks = [np.diag(inv[i]) if self.eigenvectors_ is None
                  else (self.eigenvectors_ * inv[i]) @ self.eigenvectors_.T for i in range(m)]
        out = np.zeros((m * d_full, m * d_full))
        for i, block in enumerate(blocks):
            out[i * d_full:(i + 1) * d_full, i * d_full:(i + 1) * d_full] = block
        return out

    def _functional_variance(self, phi: np.ndarray) -> np.ndarray:
        """``phi^T Sigma_i phi`` for every row and output, shape (rows, m)."""
        if self.covariance_ is not None:
            d_full = phi.shape[1]
            out = np.empty((len(phi), self.n_outputs_))
            for i in range(self.n_outputs_):
                block = self.covariance_[i * d_full:(i + 1) * d_full, i * d_full:(i + 1) * d_full]
                out[:, i] = np.einsum("nd,de,ne->n", phi, block, phi)
            return out
        z = phi if self.eigenvectors_ is None else phi @ self.eigenvectors_
        return (z ** 2) @ self._block_inverse_diag().T

    def predict(self, X, *, return_var: bool = False):
        """GLM predictive mean (the MAP output) and, optionally, the total variance.

        Returns arrays of the model's output shape (float64): ``mean`` or ``(mean, var)`` with
        ``var = functional + sigma^2``. A Dataset's batches are ``(inputs..., target)``; the
        target is ignored.
        """
        dist = self.predict_distribution(X)
        mean = dist.mean
        return (mean, dist.var) if return_var else mean

    def predict_distribution(self, X) -> GaussianMixture:
        """The predictive as a one-component :class:`GaussianMixture` with its noise split."""
        check_is_fitted(self, "theta_")
        means, functional = [], []
        for phi, f, _ in self._passes(X, None, with_target=False):
            shape = tuple(f.shape)
            means.append(f.reshape(-1, shape[-1]).cpu().numpy().reshape(shape))
            phi = self._features(phi.reshape(-1, phi.shape[-1])).cpu().numpy()
            functional.append(self._functional_variance(phi).reshape(shape))
        mean, func = np.concatenate(means), np.concatenate(functional)
        noise = np.broadcast_to(self._noise_sigma() ** 2, mean.shape)
        return GaussianMixture.gaussian(mean, func + noise, noise_variance=noise)

def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive float, got {type(value).__name__}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite float, got {value}")
    return float(value)
