"""Post-hoc uncertainty: last-layer Laplace, mixtures of Laplace approximations (MoLA), the
Gaussian-mixture predictive distribution and calibrated fault probabilities for monitors.

See ``shared/specs/uncertainty.md``. Scores for these distributions live in
:mod:`mola_ts.metrics`.
"""

from .distribution import GaussianMixture
from .fault import FaultProbability
from .heads import fit_head_posterior
from .laplace import MAX_FULL_PARAMETERS, STRUCTURES, LastLayerLaplace
from .mixture import LaplaceMixture

__all__ = [
    "GaussianMixture",
    "LastLayerLaplace",
    "LaplaceMixture",
    "FaultProbability",
    "fit_head_posterior",
    "STRUCTURES",
    "MAX_FULL_PARAMETERS",
]
