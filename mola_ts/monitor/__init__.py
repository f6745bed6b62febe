"""Process monitoring: the residual and MOLA monitors, their building blocks, PCA baselines.

- :class:`ResidualMonitor`: T^2 of one-step prediction residuals (innovations), smoothed, with
  one cross-fitted limit.

- :class:`MOLAMonitor`: multi-block orthogonal LSTM autoencoders (on one-step residuals by
  default), T^2 and quantile CUSUM on the codes, Bayesian and order-weighted (W-BF) fusion,
  cross-fitted limits; :class:`MonitorStream`, the streaming scorer of every monitor.
- :class:`PCAMonitor`, :class:`DPCAMonitor`: PCA / dynamic PCA with T^2 and SPE.
- building blocks: :mod:`.olae`, :mod:`.charts`, :mod:`.fusion`, :mod:`.blocks`.
"""

from .blocks import TEP_BLOCKS, TEP_LOOP_BLOCKS, correlation_blocks, resolve_blocks
from .calibration import LimitSupportWarning, calibrated_limit, effective_sample_size
from .charts import (
    QuantileCUSUM,
    control_limit,
    empirical_limit,
    fit_t2,
    kde_limit,
    quantile_edges,
    spe_limit_jackson_mudholkar,
    t2_limit_f,
    t2_statistic,
)
from .fusion import OrderWeights, bayesian_combination, fault_probability
from .mola import MOLAMonitor
from .olae import OLAE, ExactOLAE, code_orthogonality, olae_loss, weight_orthogonality
from .pca import DPCAMonitor, PCAMonitor
from .predictor import MLPPredictor, RidgeVAR
from .residual import ResidualMonitor
from .stream import MonitorStream

__all__ = [
    "ResidualMonitor", "RidgeVAR", "MLPPredictor", "LimitSupportWarning", "calibrated_limit",
    "effective_sample_size",
    "MOLAMonitor", "MonitorStream", "PCAMonitor", "DPCAMonitor", "TEP_BLOCKS", "TEP_LOOP_BLOCKS",
    "correlation_blocks", "resolve_blocks",
    "QuantileCUSUM", "control_limit", "empirical_limit", "fit_t2", "kde_limit",
    "quantile_edges", "spe_limit_jackson_mudholkar", "t2_limit_f", "t2_statistic",
    "OrderWeights", "bayesian_combination", "fault_probability", "OLAE", "ExactOLAE",
    "code_orthogonality", "olae_loss", "weight_orthogonality",
]
