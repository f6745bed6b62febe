"""LoRA-MoE over a whole model, in the manner of peft's ``model.py``.

:func:`inject` wraps the matching ``nn.Linear`` / 1x1 ``nn.Conv1d`` modules with
:class:`~mola_ts.nn.layer.LoRAMoE` layers and freezes everything else; :func:`routing` hands
per-sample task ids or routing vectors to every layer for the forwards of a ``with`` block
(the one way routing inputs reach the layers: it sets each layer's
:attr:`~mola_ts.nn.layer.LoRAMoE.route`); :func:`collect_aux` gathers the auxiliary losses
each layer computed in the last forward, weighted by its config, and the routing statistics;
:func:`merge_adapters` / :func:`unmerge_adapters` fold static gates into the base weights;
:func:`remove_adapters` gives the base modules back; :func:`parameter_report` counts
trainable and total parameters; :func:`pin_task_gates` gives task k expert k alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import AllocationPlan, LoRAMoEConfig
from .layer import LoRAMoE, Route
from .routers import MASKED_LOGIT, LambdaMLP

__all__ = [
    "ParameterReport",
    "AuxReport",
    "inject",
    "find_targets",
    "routing",
    "collect_aux",
    "parameter_report",
    "lora_layers",
    "pin_task_gates",
    "merge_adapters",
    "unmerge_adapters",
    "remove_adapters",
]


def lora_layers(model: nn.Module) -> dict[str, LoRAMoE]:
    """All LoRA-MoE layers of ``model`` by qualified name (in module order)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRAMoE)}


def pin_task_gates(model: nn.Module, n_tasks: int) -> None:
    """Step-specific experts: in every task-routed LoRA-MoE layer of ``model`` (``n_tasks``
    experts), task k gets expert k alone (one-hot gates) and the gates are frozen."""
    one_hot = torch.full((n_tasks, n_tasks), MASKED_LOGIT)
    one_hot.fill_diagonal_(0.0)
    for layer in lora_layers(model).values():
        with torch.no_grad():
            layer.router.task_logits.copy_(one_hot)
        layer.router.task_logits.requires_grad_(False)


def _matches(name: str, target_modules: str | Sequence[str]) -> bool:
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def find_targets(model: nn.Module, target_modules: str | Sequence[str]) -> list[str]:
    """Names of the modules :func:`inject` would wrap, in module order.

    Parameters
    ----------
    model : nn.Module
        The model to search.
    target_modules : str or sequence of str
        A string is a regular expression matched against the full qualified name (peft's
        rule); a sequence lists exact names or suffixes (``"q"`` matches ``"blocks.0.q"``).

    Returns
    -------
    list of str
        The matching ``nn.Linear`` / 1x1 ``nn.Conv1d`` names; layers that are already LoRA-MoE
        layers (and their inner modules) are skipped.
    """
    if isinstance(target_modules, str):
        try:
            re.compile(target_modules)
        except re.error as exc:
            raise ValueError(f"target_modules is not a valid regular expression: {exc}") from exc
    elif isinstance(target_modules, Sequence):
        if not target_modules or not all(isinstance(t, str) and t for t in target_modules):
            raise TypeError("target_modules must be a regex string or a non-empty sequence of "
                            f"non-empty names, got {target_modules!r}")
    else:
        raise TypeError(f"target_modules must be a str or a sequence of str, got "
                        f"{type(target_modules).__name__}")
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRAMoE)]
    names, skipped = [], []
    for name, module in model.named_modules():
        if not name or not _matches(name, target_modules):
            continue
        if any(name == w or name.startswith(w + ".") for w in wrapped):
            if isinstance(module, LoRAMoE):
                skipped.append(name)
            continue
        if not isinstance(module, (nn.Linear, nn.Conv1d)):
            raise TypeError(f"target module {name!r} is a {type(module).__name__}; only "
                            "nn.Linear and 1x1 nn.Conv1d can be wrapped")
        names.append(name)
    if not names and skipped:
        raise ValueError(f"target_modules {target_modules!r} matched only modules that are "
                         f"already LoRA-MoE layers: {skipped}")
    if not names:
        candidates = [n for n, m in model.named_modules()
                      if isinstance(m, (nn.Linear, nn.Conv1d)) and n][:10]
        raise ValueError(f"target_modules {target_modules!r} matched no module; linear "
                         f"modules include {candidates}")
    return names


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


@dataclass
class ParameterReport:
    """Trainable / total parameter counts, per LoRA-MoE layer and overall.

    ``layers`` maps each wrapped layer to its experts, ranks, router and own trainable count
    (the shared LD-MoLE lambda MLPs are counted once, under ``shared``).
    """

    trainable: int
    total: int
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    shared: dict[str, int] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of trainable parameters."""
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        lines = [f"{'layer':<40} {'experts':>7} {'ranks':<24} {'router':<8} {'trainable':>10}"]
        for name, info in self.layers.items():
            ranks = ",".join(map(str, info["ranks"]))
            lines.append(f"{name:<40} {info['n_experts']:>7} {ranks:<24} {info['router']:<8} "
                         f"{info['trainable']:>10}")
        for name, count in self.shared.items():
            lines.append(f"{name:<40} {'':>7} {'':<24} {'shared':<8} {count:>10}")
        lines.append(f"trainable {self.trainable} / total {self.total} "
                     f"({100 * self.fraction:.3f}%)")
        return "\n".join(lines)


def parameter_report(model: nn.Module) -> ParameterReport:
    """Count trainable and total parameters of ``model`` (shared parameters once)."""
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    layers, shared = {}, {}
    for name, layer in lora_layers(model).items():
        own = [layer.lora_A, layer.lora_B]
        if layer.config.gsv:
            own += [layer.gsv_experts, layer.gsv_ranks]
        lam = getattr(layer.router, "lambda_mlp", None)
        lam_ids = {id(p) for p in lam.parameters()} if lam is not None else set()
        own += [p for p in layer.router.parameters() if id(p) not in lam_ids]
        layers[name] = {
            "kind": type(layer.base).__name__,
            "d_in": layer.in_features,
            "d_out": layer.out_features,
            "n_experts": layer.n_experts,
            "ranks": list(layer.ranks),
            "router": layer.config.router,
            "trainable": sum(p.numel() for p in own if p.requires_grad),
        }
        if lam is not None:
            shared.setdefault(f"lambda_mlp[d_in={lam.d_in}]",
                              sum(p.numel() for p in lam.parameters()))
    return ParameterReport(trainable, total, layers, shared)


def inject(model: nn.Module, target_modules: str | Sequence[str] | None,
           config_or_plan: LoRAMoEConfig | AllocationPlan | None = None, *,
           random_state: int | None = None) -> ParameterReport:
    """Wrap the matching modules of ``model`` in place with LoRA-MoE layers; freeze the rest.

    Parameters
    ----------
    model : nn.Module
        Modified in place: targets are replaced by :class:`LoRAMoE`, every other parameter
        stops requiring grad, adapter parameters require grad.
    target_modules : str, sequence of str or None
        Regex (full match) or list of exact names / suffixes, see :func:`find_targets`.
        None with a plan wraps exactly the plan's layers.
    config_or_plan : LoRAMoEConfig or AllocationPlan, optional
        One config for all layers (default config when None), or a per-layer plan
        (:class:`~mola_ts.nn.config.AllocationPlan`, built by :mod:`mola_ts.nn.allocation`); a
        plan must cover every matched layer.
    random_state : int, optional
        Seed of the adapter initialisation (the global torch RNG when None).

    Returns
    -------
    ParameterReport
        Trainable / total parameters, per layer.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> report = inject(net, ["0", "2"], LoRAMoEConfig(n_experts=2, rank=2), random_state=0)
    >>> sorted(report.layers)
    ['0', '2']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if config_or_plan is None:
        config_or_plan = LoRAMoEConfig()
    if isinstance(config_or_plan, AllocationPlan):
        plan = config_or_plan
        names = find_targets(model, list(plan.layers) if target_modules is None
                             else target_modules)
        missing = [n for n in names if n not in plan.layers]
        if missing:
            raise ValueError(f"the plan has no entry for layers {missing}")
        unused = [n for n in plan.layers if n not in names]
        if unused:
            raise ValueError(f"the plan names layers that were not matched: {unused}")
        configs = {n: plan.config_for(n) for n in names}
    elif isinstance(config_or_plan, LoRAMoEConfig):
        if target_modules is None:
            raise ValueError("target_modules is required unless a plan is given")
        names = find_targets(model, target_modules)
        configs = dict.fromkeys(names, config_or_plan)
    else:
        raise TypeError(f"config_or_plan must be a LoRAMoEConfig or an AllocationPlan, got "
                        f"{type(config_or_plan).__name__}")

    generator = None if random_state is None else torch.Generator().manual_seed(int(random_state))
    # one lambda MLP per routing-input width, shared by every layer (also earlier injections)
    lambda_mlps: dict[int, LambdaMLP] = {}
    for layer in lora_layers(model).values():
        lam = getattr(layer.router, "lambda_mlp", None)
        if lam is not None:
            lambda_mlps.setdefault(lam.d_in, lam)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        base = model.get_submodule(name)
        config = configs[name]
        lam = None
        if config.router == "ldmole":
            width = config.router_dim if config.router_dim is not None else (
                base.in_features if isinstance(base, nn.Linear) else base.in_channels)
            if width not in lambda_mlps:
                lambda_mlps[width] = LambdaMLP(width, config.lambda_hidden, generator).to(
                    base.weight.device)
            lam = lambda_mlps[width]
        _set_submodule(model, name, LoRAMoE(base, config, lambda_mlp=lam, generator=generator))
    for layer in lora_layers(model).values():
        for p in layer.adapter_parameters():
            p.requires_grad_(True)
    return parameter_report(model)


@contextmanager
def routing(model: nn.Module, task_ids: torch.Tensor | None = None,
            router_input: torch.Tensor | None = None) -> Iterator[Route]:
    """Give every LoRA-MoE layer of ``model`` per-sample routing inputs for a ``with`` block.

    This is the one way routing inputs reach the layers: the inputs are validated once into a
    :class:`~mola_ts.nn.layer.Route`, set as the ``route`` attribute of every layer of
    ``model`` for the forwards inside the block, and the previous routes are put back on exit
    (so blocks nest). ``model`` may also be a single layer.

    Parameters
    ----------
    model : nn.Module
        A model holding LoRA-MoE layers.
    task_ids : torch.Tensor, optional
        (B,) integer task / segment ids, one per sample (used by the task router).
    router_input : torch.Tensor, optional
        (B, d_r) routing vectors used instead of the tokens to compute router logits
        (e.g. segment embedding + window representation); layers need ``router_dim = d_r``.

    Yields
    ------
    Route
        The validated routing inputs.

    Notes
    -----
    Per-sample values broadcast over the middle dims of each layer's (B, ..., d_in) input.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    >>> _ = inject(net, ["0"], LoRAMoEConfig(router="task", n_tasks=3, n_experts=2, rank=1))
    >>> with routing(net, task_ids=torch.tensor([2, 0])):
    ...     net(torch.randn(2, 4)).shape
    torch.Size([2, 4])
    """
    layers = list(lora_layers(model).values())
    if not layers:
        raise ValueError("model has no LoRA-MoE layers: call inject(...) first")
    route = Route(task_ids, router_input)
    if route.router_input is not None:
        width = route.router_input.shape[1]
        for layer in layers:
            if layer.router.kind != "task" and layer.router.d_in != width:
                raise ValueError(f"router_input has {width} features but the layers route on "
                                 f"{layer.router.d_in} (set router_dim)")
    previous = [layer.route for layer in layers]
    for layer in layers:
        layer.route = route
    try:
        yield route
    finally:
        for layer, before in zip(layers, previous, strict=True):
            layer.route = before


@dataclass
class AuxReport:
    """Auxiliary losses and routing statistics gathered after a forward.

    Attributes
    ----------
    loss : torch.Tensor
        Scalar ``sum over layers of balance_coef * balance + sparsity_coef * sparsity``:
        add it to the task loss.
    losses : dict of str to torch.Tensor
        Unweighted losses summed over layers, by kind.
    layers : dict of str to dict
        Per layer: ``losses`` (unweighted), ``active`` (tokens,) active experts per token,
        ``mean_active`` (0-d tensor), ``load`` (E,) share of tokens per expert, ``mean_gate`` (E,).
    """

    loss: torch.Tensor
    losses: dict[str, torch.Tensor]
    layers: dict[str, dict[str, Any]]


def collect_aux(model: nn.Module) -> AuxReport:
    """Sum the weighted auxiliary losses of the last forward and gather routing statistics.

    Each layer computed its unweighted losses as tensors in its forward
    (:attr:`~mola_ts.nn.layer.LoRAMoE.last_losses`); this weights them by the layer's
    ``balance_coef`` / ``sparsity_coef`` and sums over the layers. Call it after the forward
    whose losses you want (before the next one); ``backward`` may come before or after.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    >>> _ = inject(net, ["0"], LoRAMoEConfig(router="topk", n_experts=3, rank=1))
    >>> _ = net(torch.randn(5, 4))
    >>> aux = collect_aux(net)
    >>> sorted(aux.losses), aux.layers["0"]["load"].shape
    (['balance'], torch.Size([3]))
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA-MoE layers: call inject(...) first")
    device = next(iter(layers.values())).lora_A.device
    total = torch.zeros((), device=device)
    by_kind: dict[str, torch.Tensor] = {}
    stats: dict[str, dict[str, Any]] = {}
    for name, layer in layers.items():
        coefs = {"balance": layer.config.balance_coef, "sparsity": layer.config.sparsity_coef}
        for kind, value in layer.last_losses.items():
            total = total + coefs.get(kind, 1.0) * value
            by_kind[kind] = by_kind.get(kind, 0.0) + value
        info: dict[str, Any] = {"losses": dict(layer.last_losses), **layer.last_stats}
        if "active" in layer.last_stats:
            info["mean_active"] = layer.last_stats["active"].float().mean()
        stats[name] = info
    return AuxReport(total, by_kind, stats)


def merge_adapters(model: nn.Module, task_id: int | None = None) -> None:
    """Merge every LoRA-MoE layer of ``model`` for ``task_id`` (see :meth:`LoRAMoE.merge`)."""
    layers = list(lora_layers(model).values())
    done = []
    try:
        for layer in layers:
            layer.merge(task_id)
            done.append(layer)
    except ValueError:
        for layer in done:
            layer.unmerge()
        raise


def unmerge_adapters(model: nn.Module) -> None:
    """Unmerge every merged LoRA-MoE layer of ``model``."""
    for layer in lora_layers(model).values():
        if layer.merged:
            layer.unmerge()


def remove_adapters(model: nn.Module) -> nn.Module:
    """Put the base modules back in place of the LoRA-MoE layers (unmerged); returns ``model``.

    The base parameters stay frozen; use this to rebuild a model from a new plan.
    """
    for name, layer in lora_layers(model).items():
        if layer.merged:
            layer.unmerge()
        _set_submodule(model, name, layer.base)
    return model
