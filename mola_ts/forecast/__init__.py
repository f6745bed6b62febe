"""Forecasting: MoLA (foundation + per-segment Mixture-of-LoRA), direct and classical baselines.

Every forecaster follows scikit-learn conventions: ``fit(y)`` on a wide DataFrame
(DatetimeIndex, one column per variable), an array, or a long ``unique_id, ds, y`` frame;
``predict(y_context=None, X=None, fh=None)`` returns the next ``horizon`` steps (or the steps
``fh``) with future timestamps; ``update(y_new)`` moves the cutoff without refitting;
``score(y)`` is the negative MSE of rolling-window forecasts; ``save(path)`` /
``Class.load(path)`` persist a fitted model.

Modules: ``base`` (what every forecaster shares), ``neural`` (the torch forecasters' base,
Direct and DLinear), ``mola`` (MoLAForecaster), ``adapters`` (the MoLA adapter network and its
per-segment training), ``fitting`` (scaling, validation rows, objective and batched inference
of the torch forecasters), ``predictive`` (ensemble members and last-layer Laplace),
``backbones`` (the torch networks), ``baselines`` (seasonal naive, ETS), ``segments`` (MoLA's
per-segment history, the degenerate-segment warning and roll-out), ``frames`` (period indexes,
layouts, the scale of ``score``, ``fh``), ``covariates`` (past covariates ``X``, calendar
features, ``update``).
"""

from .adapters import SegmentAdapter, SegmentEarlyStopping
from .backbones import (
    BACKBONES,
    DLinearNet,
    EncoderBackbone,
    ITransformer,
    PatchTransformer,
    make_backbone,
)
from .base import BaseForecaster
from .baselines import ClassicalForecaster, SeasonalNaiveForecaster
from .mola import MoLAForecaster
from .neural import DirectForecaster, DLinearForecaster, NeuralForecaster
from .segments import DegenerateSegmentsWarning

__all__ = [
    "BACKBONES",
    "DLinearNet",
    "EncoderBackbone",
    "ITransformer",
    "PatchTransformer",
    "make_backbone",
    "BaseForecaster",
    "NeuralForecaster",
    "DirectForecaster",
    "DLinearForecaster",
    "MoLAForecaster",
    "SegmentAdapter",
    "SegmentEarlyStopping",
    "SeasonalNaiveForecaster",
    "ClassicalForecaster",
    "DegenerateSegmentsWarning",
]
