"""Plan search: how many experts, of which ranks, in every wrapped layer.

A plan is an :class:`~mola_ts.nn.config.AllocationPlan` (plain data: a shared config plus
per-layer experts and ranks); :func:`~mola_ts.nn.model.inject` builds a model from it. This
module finds plans: uniform, the MoLA layer-wise presets over four depth groups (Gao et al.
2024), HILO experts-and-ranks per group (Cong et al. 2025), and the GuiLoMo search (Zhang et
al. 2025) that learns the guided selection vectors of ``gsv=True`` layers (the masks live in
:class:`~mola_ts.nn.layer.LoRAMoE`) and discretises them into a plan.

Imports go one way: this module uses :mod:`~mola_ts.nn.config`, :mod:`~mola_ts.nn.layer`
and :mod:`~mola_ts.nn.model`; none of them imports it.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from sklearn.utils import check_scalar
from torch import nn

from .config import MOLA_PRESETS, AllocationPlan, LayerAllocation, LoRAMoEConfig
from .layer import LoRAMoE
from .model import ParameterReport, inject, lora_layers, remove_adapters

__all__ = [
    "layer_groups",
    "uniform_plan",
    "mola_plan",
    "hilo_plan",
    "gsv_layers",
    "bilevel_gradient",
    "guilomo_plan",
    "guilomo_search",
    "rebuild",
    "SearchResult",
]

def _depth_key(name: str) -> int | None:
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(match.group(1)) if match else None


def layer_groups(names: Sequence[str], n_groups: int = 4) -> list[int]:
    """Depth group (0 = lowest) of every layer name, splitting the depth into equal groups.

    The depth of a name is its first integer component (``"blocks.3.attn.q"`` -> 3), so all
    modules of a block share a group; without integers the position in ``names`` is used.
    With D distinct depths, the i-th lowest goes to group ``floor(i * n_groups / D)``.
    """
    names = list(names)
    if not names:
        raise ValueError("names must not be empty")
    check_scalar(n_groups, "n_groups", numbers.Integral, min_val=1)
    keys = [_depth_key(n) for n in names]
    if any(k is None for k in keys):
        keys = list(range(len(names)))
    depths = sorted(set(keys))
    position = {d: i for i, d in enumerate(depths)}
    return [position[k] * n_groups // len(depths) for k in keys]


def _config(config: LoRAMoEConfig | None) -> LoRAMoEConfig:
    if config is None:
        return LoRAMoEConfig()
    if not isinstance(config, LoRAMoEConfig):
        raise TypeError(f"config must be a LoRAMoEConfig, got {type(config).__name__}")
    return config


def _grouped_plan(names: Sequence[str], experts: Sequence[int], ranks: Sequence[int],
                  config: LoRAMoEConfig | None) -> AllocationPlan:
    if len(experts) != len(ranks):
        raise ValueError(f"experts and ranks need one entry per group, got {len(experts)} and "
                         f"{len(ranks)}")
    groups = layer_groups(names, len(experts))
    layers = {n: LayerAllocation(int(experts[g]), (int(ranks[g]),) * int(experts[g]))
              for n, g in zip(names, groups, strict=True)}
    return AllocationPlan(_config(config), layers)


def uniform_plan(names: Sequence[str], n_experts: int = 5, rank: int = 8,
                 config: LoRAMoEConfig | None = None) -> AllocationPlan:
    """The same experts and rank everywhere (e.g. 5-5-5-5)."""
    return _grouped_plan(names, [n_experts], [rank], config)


def mola_plan(names: Sequence[str], preset: str | Sequence[int] = "2468", rank: int = 8,
              config: LoRAMoEConfig | None = None) -> AllocationPlan:
    """MoLA layer-wise allocation: experts per depth quarter, one rank.

    Parameters
    ----------
    names : sequence of str
        Layer names in depth order (e.g. from :func:`~mola_ts.nn.model.find_targets`).
    preset : {"2468", "8642", "8228", "5555"} or sequence of 4 ints
        Experts for the four depth groups, lowest first.
    rank : int
        Rank of every expert.
    config : LoRAMoEConfig, optional
        Shared settings (router, alpha, ...).
    """
    if isinstance(preset, str):
        if preset not in MOLA_PRESETS:
            raise ValueError(f"preset must be one of {list(MOLA_PRESETS)}, got {preset!r}")
        experts: Sequence[int] = MOLA_PRESETS[preset]
    else:
        experts = tuple(preset)
        if len(experts) != 4:
            raise ValueError(f"a custom preset needs 4 expert counts, got {experts}")
    return _grouped_plan(names, experts, [rank] * 4, config)


def hilo_plan(names: Sequence[str], experts: Sequence[int] = (2, 4, 6, 8),
              ranks: Sequence[int] = (2, 4, 6, 8),
              config: LoRAMoEConfig | None = None) -> AllocationPlan:
    """HILO: experts and rank per depth group (default "2468" for both, rising with depth).

    HILO does not publish its per-token activation rule: combine the plan with the
    ``"ldmole"`` or ``"topk"`` router of ``config``.
    """
    return _grouped_plan(names, experts, ranks, config)


# ============================================================================== GuiLoMo search


def gsv_layers(model: nn.Module) -> dict[str, LoRAMoE]:
    """The LoRA-MoE layers of ``model`` that carry guided selection vectors (``gsv=True``)."""
    return {n: m for n, m in lora_layers(model).items() if m.config.gsv}


def _split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(adapter weights, GSVs) of the GSV layers, each parameter once."""
    layers = gsv_layers(model)
    if not layers:
        raise ValueError("model has no GuiLoMo search layers: inject a config with gsv=True")
    gsvs: list[nn.Parameter] = []
    weights: list[nn.Parameter] = []
    seen: set[int] = set()
    for layer in layers.values():
        gsvs += [layer.gsv_experts, layer.gsv_ranks]
        seen.update({id(layer.gsv_experts), id(layer.gsv_ranks)})
    for layer in lora_layers(model).values():
        for p in layer.adapter_parameters():
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                weights.append(p)
    return weights, gsvs


def _grads(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _finite(loss: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the {what} loss is not finite ({float(loss)})")
    return loss


def bilevel_gradient(loss_train: Callable[[], torch.Tensor],
                     loss_val: Callable[[], torch.Tensor],
                     weights: Sequence[nn.Parameter], arch: Sequence[nn.Parameter],
                     xi: float, eps_scale: float = 0.01) -> tuple[list[torch.Tensor], float]:
    """DARTS second-order gradient of the validation loss in the architecture parameters.

    ``d/d alpha L_val(w - xi grad_w L_train(w, alpha), alpha)`` approximated as
    ``grad_alpha L_val(w', alpha) - xi * H v`` with ``v = grad_w' L_val(w', alpha)`` and the
    mixed Hessian-vector product by central finite differences,
    ``H v = (grad_alpha L_train(w + e v) - grad_alpha L_train(w - e v)) / (2 e)``,
    ``e = eps_scale / ||v||``. The weights are restored on return.

    Parameters
    ----------
    loss_train, loss_val : callable
        Zero-argument closures computing the training / validation loss with the current
        parameter values (each call must see the same randomness, e.g. the same dropout).
    weights, arch : sequence of nn.Parameter
        Inner (LoRA) and outer (GSV) parameters.
    xi : float
        Virtual step size (the learning rate of the weights); 0 gives the first-order gradient.
    eps_scale : float
        Numerator of the finite-difference step (0.01 in DARTS and GuiLoMo).

    Returns
    -------
    grads : list of torch.Tensor
        The gradient for every ``arch`` parameter.
    val_loss : float
        The validation loss at the virtual weights.
    """
    backup = [w.detach().clone() for w in weights]
    try:
        if xi:
            g_w = _grads(_finite(loss_train(), "training"), weights)
            with torch.no_grad():
                for w, g in zip(weights, g_w, strict=True):
                    w.sub_(xi * g)
        val = _finite(loss_val(), "validation")
        g_all = _grads(val, [*weights, *arch])
        d_w, d_arch = g_all[:len(weights)], g_all[len(weights):]
        if xi:
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in d_w))
            if float(norm) > 0:
                eps = eps_scale / float(norm)
                grads_pm = []
                for sign in (1.0, -1.0):
                    with torch.no_grad():
                        for w, b, v in zip(weights, backup, d_w, strict=True):
                            w.copy_(b + sign * eps * v)
                    grads_pm.append(_grads(loss_train(), arch))
                d_arch = [d - xi * (gp - gm) / (2 * eps)
                          for d, gp, gm in zip(d_arch, *grads_pm, strict=True)]
        return d_arch, float(val.detach())
    finally:
        with torch.no_grad():
            for w, b in zip(weights, backup, strict=True):
                w.copy_(b)


@dataclass
class SearchResult:
    """Outcome of :func:`guilomo_search`.

    Attributes
    ----------
    plan : AllocationPlan
        The discretised allocation (rebuild with :func:`rebuild`).
    history : list of dict
        Per step: ``step``, ``train_loss``, ``val_loss``.
    initial, final : dict
        Layer -> (experts kept, ranks kept) selected by the GSVs before and after the search.
    """

    plan: AllocationPlan
    history: list[dict[str, float]]
    initial: dict[str, tuple[int, tuple[int, ...]]]
    final: dict[str, tuple[int, tuple[int, ...]]]


def _selection(model: nn.Module) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {n: (m.selected_experts(), m.selected_ranks()) for n, m in gsv_layers(model).items()}


def guilomo_plan(model: nn.Module, config: LoRAMoEConfig | None = None,
                 min_experts: int = 2) -> AllocationPlan:
    """Discretise the GSVs of every search layer into a plan.

    ``experts = max(min_experts, argmax(v_E) + 1)`` (capped at the searched maximum) and
    ``rank_e = argmax(v_R,e) + 1`` for the kept experts.

    Parameters
    ----------
    model : nn.Module
        A model holding search layers (``gsv=True``).
    config : LoRAMoEConfig, optional
        Shared settings of the retraining stage; default: the search layers' config with
        ``gsv=False`` and a top-2 router (GuiLoMo retrains with top-2).
    min_experts : int
        Lower bound on the experts per layer (2 in GuiLoMo).
    """
    layers = gsv_layers(model)
    if not layers:
        raise ValueError("model has no GuiLoMo search layers: inject a config with gsv=True")
    if config is None:
        first = next(iter(layers.values())).config
        config = replace(first, gsv=False, router="topk", top_k=2)
    config = _config(config)
    if config.gsv:
        config = replace(config, gsv=False)
    allocations = {}
    for name, layer in layers.items():
        n = min(max(min_experts, layer.selected_experts()), layer.n_experts)
        allocations[name] = LayerAllocation(n, layer.selected_ranks()[:n])
    return AllocationPlan(config, allocations)


def rebuild(model: nn.Module, plan: AllocationPlan, *,
            random_state: int | None = None) -> ParameterReport:
    """Replace the LoRA-MoE layers of ``model`` by fresh ones built from ``plan``."""
    if not isinstance(plan, AllocationPlan):
        raise TypeError(f"plan must be an AllocationPlan, got {type(plan).__name__}")
    remove_adapters(model)
    return inject(model, None, plan, random_state=random_state)


def guilomo_search(model: nn.Module, batches: Sequence[Any],
                   loss_fn: Callable[[nn.Module, Any], torch.Tensor], *, n_steps: int = 100,
                   lr: float = 1e-3, gsv_lr: float = 3e-3, xi: float | None = None,
                   second_order: bool = True, config: LoRAMoEConfig | None = None,
                   random_state: int | None = None) -> SearchResult:
    """GuiLoMo search stage: learn the guided selection vectors, then discretise them.

    Step ``t`` updates the GSVs on batch ``t + 1`` (the "validation" batch) with the DARTS
    second-order gradient of :func:`bilevel_gradient` (AdamW, ``lr=gsv_lr``, betas
    (0.5, 0.999)), then the LoRA weights on batch ``t`` (AdamW, ``lr``). The model is trained
    in place; its GSV layers keep their final vectors.

    Parameters
    ----------
    model : nn.Module
        A model injected with ``gsv=True`` layers (maximal experts and rank).
    batches : sequence
        At least two batches, used cyclically.
    loss_fn : callable
        ``loss_fn(model, batch) -> scalar tensor`` (add ``collect_aux(model).loss`` inside
        for the auxiliary losses; open ``routing(...)`` inside when needed).
    n_steps : int
        Number of bilevel steps.
    lr, gsv_lr : float
        Learning rates of the LoRA weights and of the GSVs.
    xi : float, optional
        Virtual step of the second-order term (default ``lr``).
    second_order : bool
        False gives the first-order DARTS approximation (``xi = 0``).
    config : LoRAMoEConfig, optional
        Retraining config passed to :func:`guilomo_plan`.
    random_state : int, optional
        Seed of the forward randomness (dropout, DropConnect); the global RNG is left as is.

    Returns
    -------
    SearchResult
    """
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence):
        raise TypeError(f"batches must be a sequence of batches, got {type(batches).__name__}")
    if len(batches) < 2:
        raise ValueError(f"batches must hold at least 2 batches (training and validation "
                         f"batch of every step), got {len(batches)}")
    check_scalar(n_steps, "n_steps", numbers.Integral, min_val=1)
    check_scalar(lr, "lr", numbers.Real, min_val=0.0, include_boundaries="neither")
    check_scalar(gsv_lr, "gsv_lr", numbers.Real, min_val=0.0, include_boundaries="neither")
    weights, gsvs = _split_parameters(model)
    xi = (lr if xi is None else float(xi)) if second_order else 0.0
    w_opt = torch.optim.AdamW(weights, lr=lr)
    a_opt = torch.optim.AdamW(gsvs, lr=gsv_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    initial = _selection(model)
    history: list[dict[str, float]] = []
    was_training = model.training
    model.train()
    with torch.random.fork_rng(devices=[]):
        if random_state is not None:
            torch.manual_seed(int(random_state))
        for step in range(n_steps):
            train_batch = batches[step % len(batches)]
            val_batch = batches[(step + 1) % len(batches)]
            state = torch.get_rng_state()

            def loss_train(batch: Any = train_batch, state: torch.Tensor = state) -> torch.Tensor:
                torch.set_rng_state(state)  # the same dropout masks at every evaluation
                return loss_fn(model, batch)

            def loss_val(batch: Any = val_batch) -> torch.Tensor:
                return loss_fn(model, batch)

            grads, val_loss = bilevel_gradient(loss_train, loss_val, weights, gsvs, xi)
            a_opt.zero_grad(set_to_none=True)
            for p, g in zip(gsvs, grads, strict=True):
                p.grad = g.detach()
            a_opt.step()

            w_opt.zero_grad(set_to_none=True)
            train_loss = _finite(loss_train(), "training")
            g_w = _grads(train_loss, weights)
            for p, g in zip(weights, g_w, strict=True):
                p.grad = g
            w_opt.step()
            history.append({"step": step, "train_loss": float(train_loss.detach()),
                            "val_loss": val_loss})
    model.train(was_training)
    return SearchResult(guilomo_plan(model, config), history, initial, _selection(model))
