"""What a neural forecaster does around its network: the data on the way in and out, the training
objective and batched inference.

This module owns the steps every torch forecaster (:class:`~mola_ts.forecast.DirectForecaster`,
:class:`~mola_ts.forecast.MoLAForecaster`) takes around :func:`mola_ts.training.train`, as plain
functions of their inputs:

- the validation rows (given, or carved from the end of ``y``): :func:`split_validation`;
- the optional StandardScaler fitted on the training rows, applied and undone, and stored:
  :func:`fit_scaler`, :func:`to_scaled`, :func:`from_scaled`, :func:`scaler_state`,
  :func:`restore_scaler`;
- the training objective and validation metrics of a direct forecaster: :func:`mse_loss`,
  :func:`window_metrics`;
- a trained network made inference-only (:func:`freeze`) and run over many windows in batches
  (:func:`batched_forecast`).

The estimators hold the parameters and the fitted state; the training loop itself, its
configuration and early stopping are :mod:`mola_ts.training`'s.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

__all__ = ["INFERENCE_BATCH", "mse_loss", "window_metrics", "split_validation", "fit_scaler",
           "to_scaled", "from_scaled", "scaler_state", "restore_scaler", "freeze",
           "batched_forecast"]

#: windows per forward pass at inference (forecasts and the Laplace fit)
INFERENCE_BATCH = 1024


def mse_loss(model: nn.Module, batch) -> torch.Tensor:
    """Training objective of a direct forecaster: MSE of the whole horizon."""
    x, y = batch
    out = model(x)
    return torch.nn.functional.mse_loss(out, y[..., :out.shape[-1]])  # covariates: not scored


def window_metrics(model: nn.Module, batch) -> dict[str, torch.Tensor]:
    """Validation metrics: ``loss`` (MSE) and ``mae`` of a batch of windows."""
    x, y = batch
    out = model(x)
    err = out - y[..., :out.shape[-1]]
    return {"loss": err.pow(2).mean(), "mae": err.abs().mean()}


def split_validation(values: np.ndarray, val_values: np.ndarray | None, *,
                     fraction: float | None, lookback: int, horizon: int
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Training rows and validation rows (with ``lookback`` rows of history).

    Given ``val_values`` are used as they are; otherwise the last ``fraction`` of ``values``
    is held out (None or 0: no validation rows). Each part must hold one window of
    ``lookback + horizon`` rows, else a ValueError says what to change.
    """
    if val_values is not None:
        return values, val_values
    if not fraction:
        return values, None
    need = lookback + horizon
    n_val = int(round(len(values) * fraction))
    if len(values) - n_val < need or n_val + lookback < need:
        raise ValueError(
            f"y has {len(values)} rows: too few to keep validation_fraction={fraction} for "
            f"early stopping with lookback {lookback} + horizon {horizon} (each part needs "
            f"{need} rows); give y_val, a longer series, or validation_fraction=0"
        )
    cut = len(values) - n_val
    return values[:cut], values[cut - lookback:]


def fit_scaler(values: np.ndarray, scale: bool) -> StandardScaler | None:
    """A StandardScaler fitted on ``values`` (None when ``scale`` is false).

    Raises a ValueError when the values cannot be handled in float32 (unscaled) or their
    variance overflows float64 (scaled).
    """
    if not scale:
        # the squared errors of the loss must fit float32 as well as the values
        limit = float(np.sqrt(np.finfo(np.float32).max)) / 10.0
        largest = float(np.abs(values).max())
        if largest > limit:
            raise ValueError(
                f"y reaches |value| {largest:.3g}; with scale=False the squared errors of "
                f"the training loss overflow float32 beyond {limit:.3g}: fit with "
                "scale=True or rescale y"
            )
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        scaler = StandardScaler().fit(values)
    bad = ~(np.isfinite(scaler.mean_) & np.isfinite(scaler.scale_))
    if bad.any():
        raise ValueError(
            f"y's variance overflows float64 in columns at positions "
            f"{np.flatnonzero(bad)[:5].tolist()} (largest |value| "
            f"{np.abs(values).max():.3g}); divide the series by a constant first"
        )
    return scaler


def to_scaled(values: np.ndarray, scaler: StandardScaler | None) -> np.ndarray:
    """Scaled float32 values for the network; values beyond float32's range raise."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = values if scaler is None else (values - scaler.mean_) / scaler.scale_
        out = np.asarray(out, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(
            f"the series holds values too large for the network's float32 arithmetic "
            f"(largest |value| {np.abs(values).max():.3g}"
            f"{', after scaling' if scaler is not None else ''}; float32 holds up to "
            f"{np.finfo(np.float32).max:.3g}): rescale it"
            f"{'' if scaler is not None else ' or fit with scale=True'}"
        )
    return out


def from_scaled(values: np.ndarray, scaler: StandardScaler | None) -> np.ndarray:
    """Network outputs back in the data's units, as float64 (the outputs are the first columns
    the scaler saw: the targets, without covariates)."""
    values = values.astype(np.float64)
    k = values.shape[-1]
    return values if scaler is None else values * scaler.scale_[:k] + scaler.mean_[:k]


def scaler_state(scaler: StandardScaler | None) -> dict | None:
    """A fitted StandardScaler as storable arrays (None stays None)."""
    if scaler is None:
        return None
    return {"mean": scaler.mean_, "scale": scaler.scale_, "var": scaler.var_,
            "n": int(np.max(scaler.n_samples_seen_))}


def restore_scaler(state: dict | None) -> StandardScaler | None:
    """The StandardScaler stored by :func:`scaler_state`."""
    if state is None:
        return None
    scaler = StandardScaler()
    scaler.mean_ = np.asarray(state["mean"], dtype=np.float64)
    scaler.scale_ = np.asarray(state["scale"], dtype=np.float64)
    scaler.var_ = np.asarray(state["var"], dtype=np.float64)
    scaler.n_samples_seen_ = state["n"]
    scaler.n_features_in_ = len(scaler.mean_)
    return scaler


def freeze(module: nn.Module) -> nn.Module:
    """A trained network made inference-only: eval mode, no gradients (returns ``module``)."""
    module.eval()
    module.requires_grad_(False)
    return module


@torch.no_grad()
def batched_forecast(module: nn.Module, scaled: np.ndarray, device: torch.device, *,
                     batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """``module``'s outputs for the scaled windows ``scaled`` (N, L, C), ``batch_size`` at a time.

    The module runs in eval mode on ``device`` and gets its training flag back afterwards.
    """
    module.to(device)
    was_training = module.training
    module.eval()
    outs = []
    try:
        for start in range(0, len(scaled), batch_size):
            x = torch.from_numpy(scaled[start:start + batch_size]).to(device)
            outs.append(module(x).cpu().numpy())
    finally:
        module.train(was_training)
    return np.concatenate(outs, axis=0)
