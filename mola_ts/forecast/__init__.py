"""Forecasting: MoLA (foundation + per-segment Mixture-of-LoRA), direct and classical baselines.

Every forecaster follows scikit-learn conventions: ``fit(y)`` on a wide DataFrame
(DatetimeIndex, one column per variable), an array, or a long ``unique_id, ds, y`` frame;
``predict(y_context=None)`` returns the next ``horizon`` steps with future timestamps;
``score(y)`` is the negative MSE of rolling-window forecasts; ``save(path)`` /
``Class.load(path)`` persist a fitted model.
"""

from .backbones import BACKBONES, DLinearNet, ITransformer, PatchTransformer, make_backbone
from .base import BaseForecaster
from .baselines import ClassicalForecaster, SeasonalNaiveForecaster
from .mola import MoLAForecaster, SegmentAdapter, SegmentEarlyStopping
from .neural import DirectForecaster, DLinearForecaster, NeuralForecaster

__all__ = [
    "BACKBONES",
    "DLinearNet",
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
]
