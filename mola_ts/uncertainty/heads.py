"""Per-member output heads with their Laplace posterior, on features a caller computed.

This module knows nothing of forecasting or monitoring: a caller hands it, per ensemble member,
the features its trained body produces (rows ``phi``, shape ``(n, d)``) and the targets the head
should map them to (``(n, m)``), plus the head the member currently uses. The lesson of the first
implementation (uncertainty spec §5) is that a Laplace on a head nobody trained on these
features is not a posterior around a MAP, and identical copies of it make every member the same
Gaussian. :func:`fit_head_posterior` therefore fits the member's **own** head, as Bayesian linear
regression, which is the exact last-layer Laplace of a linear head under a Gaussian likelihood:

- prior ``N(theta_0, I / lambda)`` centred on the given head ``theta_0 = [W | b]`` (so a weakly
  informative evidence keeps the head it had), noise ``sigma_i`` per output;
- MAP ``theta_i = (G / sigma_i^2 + lambda I)^-1 (Phi^T y_i / sigma_i^2 + lambda theta_0i)`` in
  closed form (one eigendecomposition of ``G = Phi^T Phi``);
- ``lambda`` and ``sigma`` re-tuned on the evidence at the new MAP (MacKay's alternation, a few
  rounds), so the Laplace (:class:`~mola_ts.uncertainty.LastLayerLaplace` with ``prior_mean``)
  sits exactly around the MAP it describes.

:func:`laplace_state` / :func:`restore_laplace` turn a fitted Laplace (with its own head) into
storable values and back, for save/load.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from mola_ts.uncertainty.laplace import LastLayerLaplace

__all__ = ["fit_head_posterior", "fit_head_posteriors", "laplace_state", "restore_laplace",
           "EVIDENCE_ROUNDS"]

#: alternations of (MAP given lambda, sigma) and (lambda, sigma given the MAP)
EVIDENCE_ROUNDS = 3


def _design(features: torch.Tensor, bias: bool) -> torch.Tensor:
    phi = features.reshape(-1, features.shape[-1]).double()
    return torch.cat([phi, phi.new_ones(len(phi), 1)], dim=1) if bias else phi


def _set_head(head: nn.Linear, theta: np.ndarray) -> None:
    weight = torch.as_tensor(theta, dtype=head.weight.dtype, device=head.weight.device)
    with torch.no_grad():
        if head.bias is not None:
            head.weight.copy_(weight[:, :-1])
            head.bias.copy_(weight[:, -1])
        else:
            head.weight.copy_(weight)


def fit_head_posterior(features, targets, prior_head: nn.Linear, *, refit: bool = True,
                       noise: str = "per_output", rounds: int = EVIDENCE_ROUNDS,
                       prior_scale: float = 1.0, batch_size: int = 4096) -> LastLayerLaplace:
    """The last-layer Laplace of one member's head on its features (module docstring).

    See :func:`fit_head_posteriors` for the parameters (one ``prior_scale`` here).
    """
    return fit_head_posteriors(features, targets, prior_head, refit=refit, noise=noise,
                               rounds=rounds, prior_scales=(prior_scale,),
                               batch_size=batch_size)[0]


def fit_head_posteriors(features, targets, prior_head: nn.Linear, *, refit: bool = True,
                        noise: str = "per_output", rounds: int = EVIDENCE_ROUNDS,
                        prior_scales=(1.0,), batch_size: int = 4096) -> list[LastLayerLaplace]:
    """The member's head posterior for each of ``prior_scales`` (one evidence fit shared).

    Parameters
    ----------
    features : Tensor of shape (..., d)
        The member's features (the head's input); leading dimensions are rows.
    targets : Tensor of shape (..., m)
        What the head should output for them (same leading dimensions).
    prior_head : nn.Linear
        The head the member uses now; never modified. With ``refit`` it is the prior mean.
    refit : bool
        True: fit the member's own head (a copy, MAP of the Bayesian linear regression) with
        evidence-tuned prior precision and noise; False: the post-hoc Laplace around
        ``prior_head`` as it is (prior centred on zero).
    noise : {"per_output", "shared"}
        One noise level per head output, or one for all.
    prior_scales : sequence of float
        Each multiplies the evidence-tuned prior precision before the last MAP solve (1: the
        evidence's choice). A larger value keeps the head closer to ``prior_head``; the noise
        is then the root mean squared residual of that MAP per output (its maximum-likelihood
        value) and the Laplace is fitted around it. A caller chooses it on held-out data
        (the forecasters: on the validation MSE).

    Returns
    -------
    list of LastLayerLaplace
        One per prior scale, fitted; its ``model`` is the head it describes (a new module
        when ``refit``).
    """
    if not isinstance(prior_head, nn.Linear):
        raise TypeError(f"prior_head must be an nn.Linear, got {type(prior_head).__name__}")
    if not isinstance(features, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError("features and targets must be torch Tensors")
    if features.shape[-1] != prior_head.in_features or targets.shape[-1] != \
            prior_head.out_features or features.shape[:-1] != targets.shape[:-1]:
        raise ValueError(f"features {tuple(features.shape)} and targets "
                         f"{tuple(targets.shape)} do not fit a head {prior_head.in_features} "
                         f"-> {prior_head.out_features} (same leading dimensions needed)")
    settings = {"structure": "kron", "noise": noise, "tune": True, "batch_size": batch_size}
    scales = [float(x) for x in prior_scales]
    if not scales or not all(np.isfinite(x) and x > 0 for x in scales):
        raise ValueError(f"prior_scales must be positive floats, got {prior_scales!r}")
    if not refit:
        return [LastLayerLaplace(prior_head, **settings).fit(features, targets)] * len(scales)
    head = copy.deepcopy(prior_head).requires_grad_(False)
    bias = head.bias is not None
    theta0 = head.weight.detach().double().cpu().numpy()
    if bias:
        theta0 = np.concatenate([theta0, head.bias.detach().double().cpu().numpy()[:, None]], 1)
    phi = _design(features.cpu(), bias)
    y = targets.reshape(-1, targets.shape[-1]).double().cpu()
    cross = (phi.T @ y).numpy()  # (d', m)
    # start: lambda = 1 and the noise of the given head, untuned (tuning around theta_0 itself
    # would send lambda to infinity: the MAP has not moved yet)
    la = LastLayerLaplace(head, prior_mean=theta0, **{**settings, "tune": False}).fit(
        features, targets)
    q, e = la.eigenvectors_, la.eigenvalues_
    for _ in range(max(1, int(rounds))):
        s2 = la._noise_sigma() ** 2  # (m,)
        rhs = q.T @ (cross / s2[None, :] + la.prior_precision_ * theta0.T)  # (d', m)
        theta = (q @ (rhs / (e[:, None] / s2[None, :] + la.prior_precision_))).T
        _set_head(head, theta)
        la = LastLayerLaplace(head, prior_mean=theta0, prior_precision=la.prior_precision_,
                              sigma_noise=la.sigma_noise_, **settings).fit(features, targets)
    out = []
    for scale in scales:
        if scale == 1.0:
            out.append(la)
            continue
        lam = la.prior_precision_ * scale
        s2 = la._noise_sigma() ** 2
        rhs = q.T @ (cross / s2[None, :] + lam * theta0.T)
        own = copy.deepcopy(head)
        _set_head(own, (q @ (rhs / (e[:, None] / s2[None, :] + lam))).T)
        out.append(LastLayerLaplace(own, prior_mean=theta0, prior_precision=lam,
                                    **{**settings, "tune": False}).fit(features, targets))
    return out


def laplace_state(la: LastLayerLaplace) -> dict:
    """A fitted LastLayerLaplace as storable values: its params (not the model), its fitted
    state; its head's weights are ``theta_`` (so an own head is rebuilt from them)."""
    params = {k: v for k, v in la.get_params(deep=False).items() if k != "model"}
    fitted = {k: v for k, v in vars(la).items() if k.endswith("_") and not k.startswith("_")}
    return {"params": params, "fitted": fitted, "head": "own"}


def restore_laplace(head: nn.Linear | None, state: dict) -> LastLayerLaplace:
    """The LastLayerLaplace stored by :func:`laplace_state`.

    Its head is rebuilt from the stored ``theta_`` (``head`` only gives the dtype and device);
    a state without its own head (written before heads were refitted) is restored on ``head``.
    """
    fitted = state["fitted"]
    if state.get("head") == "own":
        theta = np.asarray(fitted["theta_"])
        bias = bool(fitted["has_bias_"])
        own = nn.Linear(int(fitted["n_features_"]), int(fitted["n_outputs_"]), bias=bias)
        if head is not None:
            own = own.to(dtype=head.weight.dtype, device=head.weight.device)
        _set_head(own.requires_grad_(False), theta)
        head = own.eval()
    la = LastLayerLaplace(head, **state["params"])
    for key, value in fitted.items():
        setattr(la, key, value)
    return la
