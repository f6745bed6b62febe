"""Mixture of last-layer Laplace approximations over K trained networks (uncertainty spec §1).

Each of the K networks (a deep ensemble, or K adapters on one frozen foundation) gets its own
:class:`~mola_ts.uncertainty.LastLayerLaplace`, with its prior precision and noise tuned on its own
evidence; the posterior is the uniform mixture ``sum_k (1/K) N(theta_k, Sigma_k)`` and the
predictive the uniform mixture of the K linearised Gaussian predictives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import nn

from mola_ts.uncertainty.distribution import GaussianMixture
from mola_ts.uncertainty.heads import fit_head_posterior, fit_head_posteriors
from mola_ts.uncertainty.laplace import LastLayerLaplace

__all__ = ["LaplaceMixture"]


class LaplaceMixture(BaseEstimator):
    """Uniform mixture of last-layer Laplace approximations of K trained networks.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        The K trained networks (each ending with an ``nn.Linear`` head; they may share a body).
    last_layer, structure, prior_precision, sigma_noise, noise, tune, batch_size
        Passed to every component's :class:`~mola_ts.uncertainty.LastLayerLaplace`; the
        hyper-parameters are tuned per component.

    Attributes
    ----------
    components_ : list of LastLayerLaplace
        The fitted Laplace approximation of each model.
    n_components_ : int
        K.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> nets = [torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    ...         for _ in range(3)]
    >>> X, y = torch.randn(100, 2), torch.randn(100, 1)
    >>> dist = LaplaceMixture(nets).fit(X, y).predict_distribution(X[:4])
    >>> dist.batch_shape, dist.n_components
    ((4, 1), 3)
    >>> sorted(dist.variance_decomposition())
    ['ensemble', 'laplace', 'noise']
    """

    def __init__(self, models: Sequence[nn.Module] | None = None, *,
                 last_layer: str | None = None, structure: str = "kron",
                 prior_precision: float = 1.0, sigma_noise=None, noise: str = "shared",
                 tune: bool = True, batch_size: int = 256):
        self.models = models
        self.last_layer = last_layer
        self.structure = structure
        self.prior_precision = prior_precision
        self.sigma_noise = sigma_noise
        self.noise = noise
        self.tune = tune
        self.batch_size = batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.non_deterministic = False
        return tags

    def fit(self, X, y=None) -> LaplaceMixture:
        """Fit one Laplace approximation per model on the same data (see LastLayerLaplace.fit)."""
        if isinstance(self.models, nn.Module) or not isinstance(self.models, (list, tuple)):
            raise TypeError("models must be a list or tuple of torch.nn.Module, got "
                            f"{type(self.models).__name__}")
        if not self.models:
            raise ValueError("models is empty; a mixture needs at least one model")
        for i, model in enumerate(self.models):
            if not isinstance(model, nn.Module):
                raise TypeError(f"models[{i}] must be a torch.nn.Module, got "
                                f"{type(model).__name__}")
        shared = {k: v for k, v in self.get_params(deep=False).items() if k != "models"}
        self.components_ = [LastLayerLaplace(model, **shared).fit(X, y) for model in self.models]
        self.n_components_ = len(self.components_)
        return self

    def fit_members(self, features: Sequence, targets: Sequence, *,
                    refit: bool = True) -> LaplaceMixture:
        """Fit component k on member k's own features: the interface for members that differ.

        ``models`` are then the K members' heads (``nn.Linear``); ``features[k]`` (rows, d) is
        what member k's body gives for the fit inputs and ``targets[k]`` (rows, m) what its head
        should output. With ``refit`` each member gets its own head, the MAP of a Bayesian
        linear regression around ``models[k]`` with evidence-tuned prior precision and noise
        (:func:`~mola_ts.uncertainty.heads.fit_head_posterior`); otherwise the post-hoc
        Laplace of ``models[k]`` as it is. Knows nothing of forecasting: a monitor passes its
        members' encodings the same way.
        """
        models = list(self.models) if isinstance(self.models, (list, tuple)) else None
        if models is None or not models:
            raise TypeError("models must be a non-empty list of the members' nn.Linear heads")
        if len(features) != len(models) or len(targets) != len(models):
            raise ValueError(f"features and targets need one entry per model ({len(models)}), "
                             f"got {len(features)} and {len(targets)}")
        self.components_ = [
            fit_head_posterior(f, t, head, refit=refit, noise=self.noise,
                               batch_size=self.batch_size)
            for head, f, t in zip(models, features, targets, strict=True)]
        self.n_components_ = len(self.components_)
        return self

    def _fit_one(self, features, targets, *, prior_scales=(1.0,)) -> list[LastLayerLaplace]:
        """One component's head posterior on its own features (models[0] as the prior), for
        each prior scale (:func:`~mola_ts.uncertainty.heads.fit_head_posteriors`)."""
        return fit_head_posteriors(features, targets, self.models[0], noise=self.noise,
                                   prior_scales=prior_scales, batch_size=self.batch_size)

    @classmethod
    def from_components(cls, components: Sequence[LastLayerLaplace]) -> LaplaceMixture:
        """A fitted mixture of already fitted Laplace approximations (uniform weights)."""
        if not components:
            raise ValueError("components is empty")
        out = cls([c.model for c in components], noise=components[0].noise)
        out.components_ = list(components)
        out.n_components_ = len(out.components_)
        return out

    def predict_members(self, features: Sequence) -> GaussianMixture:
        """The mixture predictive when each component reads its own features (see
        :meth:`fit_members`): component k's linearised Gaussian on ``features[k]``."""
        check_is_fitted(self, "components_")
        if len(features) != self.n_components_:
            raise ValueError(f"features needs one entry per component ({self.n_components_}), "
                             f"got {len(features)}")
        return GaussianMixture.combine([c.predict_distribution(f)
                                        for c, f in zip(self.components_, features, strict=True)])

    def predict_distribution(self, X) -> GaussianMixture:
        """The mixture predictive: K linearised Gaussians per output point, uniform weights."""
        check_is_fitted(self, "components_")
        return GaussianMixture.combine([c.predict_distribution(X) for c in self.components_])

    def predict(self, X, *, return_var: bool = False):
        """Mixture mean (and total variance) per output point, in the model's output shape."""
        dist = self.predict_distribution(X)
        return (dist.mean, dist.var) if return_var else dist.mean

    def log_marginal_likelihood(self) -> np.ndarray:
        """Each component's log evidence at its tuned hyper-parameters, shape (K,)."""
        check_is_fitted(self, "components_")
        return np.array([c.log_marginal_likelihood_ for c in self.components_])
