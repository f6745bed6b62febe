"""The LoRA-MoE layer configuration of :class:`~mola_ts.forecast.MoLAForecaster` (``layers=``).

``layers`` is a plain dict (JSON data: it survives ``get_params`` / ``clone`` and save/load)
that reaches every option of :mod:`mola_ts.nn` from the forecaster. Keys (all optional; the
defaults are the paper's, so ``layers=None`` or ``{}`` is the MoLA forecaster of Pan et al.):

``router``
    ``"segment"`` (per-segment logits, the paper), ``"topk"`` (a top-k softmax gate on a
    learned segment embedding and the window) or ``"ldmole"`` (LD-MoLE Sparsegen routing on
    the same input). Same as the ``router`` parameter; give it in one place.
``top_k``
    Experts kept per sample by the top-k router (2).
``n_experts``, ``rank``
    Experts per adapted layer and their rank (same as the parameters of those names).
``plan``
    How experts (and ranks) are allocated over the adapted layers, lowest first:
    ``"uniform"`` (``n_experts`` of rank ``rank`` everywhere), a MoLA preset over four depth
    groups (``"mola2468"``, ``"mola8642"``, ``"mola8228"``, ``"mola5555"``), HILO groups
    (``{"experts": [...], "ranks": [...]}``, one entry per depth group, or ``"hilo"`` for
    2-4-6-8 experts of ranks 2-4-6-8) or ``"guilomo"``: a GuiLoMo search (guided selection
    vectors over at most ``n_experts`` experts of rank at most ``rank``) run on the training
    windows, whose discretised plan is then trained.
``search_steps``
    Bilevel steps of the GuiLoMo search (40).
``shared_A``, ``dropconnect``
    MoSLD: all experts of a layer share one A; DropConnect on it while training (MoSLD: 0.1).
``dropout``
    Dropout on the LoRA branch input (0).

:func:`check_layers` validates a configuration against the other parameters and returns it
resolved (every key present); invalid values and combinations raise a ValueError naming them.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from ..data import check_number
from ..nn import (
    MOLA_PRESETS,
    AllocationPlan,
    LoRAMoEConfig,
    find_targets,
    guilomo_search,
    hilo_plan,
    mola_plan,
)

__all__ = ["LAYER_DEFAULTS", "LAYER_ROUTERS", "check_layers", "plan_kind", "layer_config",
           "layer_plan", "search_batches", "strip_plan_prefix", "search_plan",
           "search_segment_plan"]

#: Routers of the forecaster's layers.
LAYER_ROUTERS = ("segment", "topk", "ldmole")

#: The defaults of every key (the paper's settings; n_experts / rank / router come from the
#: forecaster's parameters of those names).
LAYER_DEFAULTS: dict[str, Any] = {
    "router": "segment",
    "top_k": 2,
    "n_experts": 6,
    "rank": 8,
    "plan": "uniform",
    "search_steps": 40,
    "shared_A": False,
    "dropconnect": 0.0,
    "dropout": 0.0,
}

_NAMED_PLANS = ("uniform", "hilo", "guilomo", *(f"mola{p}" for p in MOLA_PRESETS))
_PARAMETERS = ("router", "n_experts", "rank")  # also parameters of the forecaster


def plan_kind(plan: Any) -> str:
    """``"uniform"``, ``"mola"``, ``"hilo"`` or ``"guilomo"``: the family of a checked plan."""
    if isinstance(plan, Mapping):
        return "hilo"
    if plan.startswith("mola"):
        return "mola"
    return plan


def _check_plan(plan: Any) -> Any:
    if isinstance(plan, str):
        if plan not in _NAMED_PLANS:
            raise ValueError(f"layers['plan'] must be one of {list(_NAMED_PLANS)} or a dict of "
                             f"HILO groups {{'experts': [...], 'ranks': [...]}}, got {plan!r}")
        return plan
    if not isinstance(plan, Mapping):
        raise TypeError(f"layers['plan'] must be a str or a dict, got {type(plan).__name__}")
    if set(plan) != {"experts", "ranks"}:
        raise ValueError(f"a HILO plan is a dict with the keys 'experts' and 'ranks' (one entry "
                         f"per depth group), got the keys {sorted(plan)}")
    experts, ranks = list(plan["experts"]), list(plan["ranks"])
    if not experts or len(experts) != len(ranks):
        raise ValueError(f"a HILO plan needs as many ranks as expert counts (at least one), got "
                         f"experts={experts}, ranks={ranks}")
    experts = [check_number(e, "layers['plan']['experts']", min_val=1) for e in experts]
    ranks = [check_number(r, "layers['plan']['ranks']", min_val=1) for r in ranks]
    return {"experts": experts, "ranks": ranks}


def check_layers(layers: Mapping | None, *, adapter: str = "mola",
                 params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved layer configuration: every key of :data:`LAYER_DEFAULTS`, checked.

    Parameters
    ----------
    layers : dict or None
        The ``layers`` parameter (not modified).
    adapter : {"mola", "lora"}
        The forecaster's adapter; "lora" (one expert per segment) takes no layer options.
    params : dict, optional
        The forecaster's ``router``, ``n_experts`` and ``rank``; a key of ``layers`` that
        repeats one of them with another value than a non-default parameter is an error.
    """
    if layers is None:
        layers = {}
    if not isinstance(layers, Mapping):
        raise TypeError(f"layers must be a dict or None, got {type(layers).__name__}")
    unknown = sorted(set(layers) - set(LAYER_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown layers keys {unknown}; the keys are {list(LAYER_DEFAULTS)}")
    out = dict(LAYER_DEFAULTS)
    params = dict(params or {})
    for key in _PARAMETERS:
        if key in params:
            out[key] = params[key]
    for key, value in layers.items():
        given = params.get(key, LAYER_DEFAULTS[key])
        if key in _PARAMETERS and given != LAYER_DEFAULTS[key] and given != value:
            raise ValueError(f"{key} is given twice, as the parameter ({given!r}) and in layers "
                             f"({value!r}): give it in one place")
        out[key] = value
    if out["router"] not in LAYER_ROUTERS:
        raise ValueError(f"router must be one of {LAYER_ROUTERS}, got {out['router']!r}")
    for key in ("top_k", "n_experts", "rank", "search_steps"):
        out[key] = check_number(out[key], key if key in _PARAMETERS else f"layers[{key!r}]",
                                min_val=1)
    for key in ("dropconnect", "dropout"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
                not 0.0 <= value < 1.0:
            raise ValueError(f"layers[{key!r}] must be a number in [0, 1), got {value!r}")
        out[key] = float(value)
    if not isinstance(out["shared_A"], bool):
        raise TypeError(f"layers['shared_A'] must be a bool, got {out['shared_A']!r}")
    out["plan"] = _check_plan(out["plan"])
    if out["dropconnect"] > 0 and not out["shared_A"]:
        raise ValueError("layers['dropconnect'] drops entries of the shared A: it needs "
                         "layers['shared_A']=True (MoSLD)")
    if out["top_k"] != LAYER_DEFAULTS["top_k"] and out["router"] != "topk":
        raise ValueError(f"layers['top_k'] is read by the top-k router only; this router is "
                         f"{out['router']!r}")
    if out["router"] == "topk" and out["plan"] == "uniform" and out["top_k"] > out["n_experts"]:
        raise ValueError(f"layers['top_k']={out['top_k']} exceeds n_experts="
                         f"{out['n_experts']}")
    if out["search_steps"] != LAYER_DEFAULTS["search_steps"] and out["plan"] != "guilomo":
        raise ValueError("layers['search_steps'] is read by plan='guilomo' only")
    if adapter == "lora":
        changed = [k for k in LAYER_DEFAULTS if k not in _PARAMETERS
                   and out[k] != LAYER_DEFAULTS[k]]
        if out["router"] != "segment":
            changed.insert(0, "router")
        if changed:
            raise ValueError(f"adapter='lora' gives each segment its own expert: the layer "
                             f"options {changed} need adapter='mola'")
    return out


def layer_config(resolved: Mapping[str, Any], *, n_segments: int, alpha: float, init_std: float,
                 router_dim: int) -> LoRAMoEConfig:
    """The shared layer config of a resolved configuration (every layer's, or the plan's base).

    The segment router is the task router with one task per segment; the top-k and LD-MoLE
    routers read a ``router_dim``-wide routing input (segment embedding and window).
    """
    common = {"n_experts": resolved["n_experts"], "rank": resolved["rank"], "alpha": alpha,
              "init": "gaussian", "init_std": init_std, "shared_A": resolved["shared_A"],
              "dropconnect": resolved["dropconnect"], "dropout": resolved["dropout"]}
    router = resolved["router"]
    if router == "segment":
        return LoRAMoEConfig(router="task", n_tasks=n_segments, **common)
    if router == "topk":
        return LoRAMoEConfig(router="topk", top_k=min(resolved["top_k"], resolved["n_experts"]),
                             router_dim=router_dim, **common)
    return LoRAMoEConfig(router="ldmole", router_dim=router_dim, **common)


def layer_plan(resolved: Mapping[str, Any], config: LoRAMoEConfig, network: torch.nn.Module,
               targets) -> LoRAMoEConfig | AllocationPlan:
    """What :func:`mola_ts.nn.inject` builds the adapted layers from: ``config`` itself for the
    uniform plan, else an allocation plan over the ``targets`` of ``network`` (in depth order).
    The GuiLoMo plan is searched (:func:`search_plan`), not built here."""
    plan = resolved["plan"]
    kind = plan_kind(plan)
    if kind == "uniform":
        return config
    names = find_targets(network, targets)
    if kind == "mola":
        return mola_plan(names, plan[len("mola"):], rank=resolved["rank"], config=config)
    if kind == "hilo":
        groups = {"experts": (2, 4, 6, 8), "ranks": (2, 4, 6, 8)} if plan == "hilo" else plan
        return hilo_plan(names, groups["experts"], groups["ranks"], config=config)
    raise ValueError("plan='guilomo' is searched on the training windows: use search_plan")


def search_batches(dataset, batch_size: int, n_batches: int, seed: int | None) -> list:
    """``n_batches`` random batches (without replacement) of a window dataset: the GuiLoMo
    search alternates them as its training and validation batches."""
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    order = torch.randperm(len(dataset), generator=generator)[:batch_size * n_batches]
    batches = []
    for start in range(0, len(order), batch_size):
        items = [dataset[int(i)] for i in order[start:start + batch_size]]
        batches.append(tuple(torch.stack([torch.as_tensor(t[j]) for t in items])
                             for j in range(len(items[0]))))
    if len(batches) < 2:
        raise ValueError(f"the GuiLoMo search needs at least 2 batches of training windows, "
                         f"got {len(order)} windows for batch_size={batch_size}")
    return batches


def strip_plan_prefix(plan: AllocationPlan, prefix: str) -> AllocationPlan:
    """The plan with ``prefix`` removed from its layer names (names inside a wrapper module)."""
    return AllocationPlan(plan.config, {name.removeprefix(prefix): alloc
                                        for name, alloc in plan.layers.items()})


def search_plan(module: torch.nn.Module, batches, loss_fn, *, config: LoRAMoEConfig,
                n_steps: int, seed: int | None) -> AllocationPlan:
    """Run the GuiLoMo search on ``module`` (adapted with ``gsv=True`` layers of the maximal
    experts and rank, trained in place) and return the discretised plan for ``config``'s
    retraining (its router, init and MoSLD settings, ``gsv`` off)."""
    result = guilomo_search(module, batches, loss_fn, n_steps=n_steps, config=config,
                            random_state=seed)
    return result.plan


def search_segment_plan(forecaster, train_values) -> AllocationPlan:
    """The GuiLoMo plan of a :class:`~mola_ts.forecast.MoLAForecaster` being fitted: the search
    runs on its frozen foundation adapted with search layers (``gsv=True``), over batches of
    its training windows, seeded by its first member's seed; layer names as in the network."""
    from ..training import seed_everything
    from .adapters import SegmentAdapter, segment_loss

    network = forecaster.foundation_.model_
    seed = forecaster._member_seed(0)
    seed_everything(seed)
    config = forecaster._lora_config()
    module = SegmentAdapter(network, forecaster._n_segments(), replace(config, gsv=True),
                            forecaster._targets(network), adapter=forecaster.adapter,
                            router_features=forecaster._router_features,
                            random_state=None if seed is None else seed + 7)
    train_set, _ = forecaster._datasets(train_values, None, forecaster.horizon)
    batches = search_batches(train_set, forecaster.batch_size, 8, seed)
    plan = search_plan(module, batches, segment_loss, config=config,
                       n_steps=forecaster.layers_["search_steps"], seed=seed)
    return strip_plan_prefix(plan, "network.")
