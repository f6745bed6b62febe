"""How many experts, of which ranks, in every wrapped layer.

An :class:`AllocationPlan` is a shared :class:`~mola_ts.nn.lora.LoRAMoEConfig` plus a
per-layer number of experts and ranks; :func:`~mola_ts.nn.lora.inject` builds a model from
it. Plans: uniform, the MoLA layer-wise presets over four depth groups (Gao et al. 2024),
HILO experts-and-ranks per group (Cong et al. 2025), and the GuiLoMo search (Zhang et al. 2025)
that learns guided selection vectors and discretises them into a plan.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .lora import LoRAMoEConfig

__all__ = [
    "LayerAllocation",
    "AllocationPlan",
    "MOLA_PRESETS",
    "layer_groups",
    "uniform_plan",
    "mola_plan",
    "hilo_plan",
]

#: MoLA's experts per depth group (lower -> higher layers); "2468" was the best in their study.
MOLA_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "2468": (2, 4, 6, 8),
    "8642": (8, 6, 4, 2),
    "8228": (8, 2, 2, 8),
    "5555": (5, 5, 5, 5),
}


@dataclass(frozen=True)
class LayerAllocation:
    """Experts and per-expert ranks of one layer."""

    n_experts: int
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        ranks = tuple(int(r) for r in self.ranks)
        object.__setattr__(self, "ranks", ranks)
        if self.n_experts < 1 or len(ranks) != self.n_experts or min(ranks) < 1:
            raise ValueError(f"a layer needs n_experts >= 1 and one positive rank per expert, "
                             f"got n_experts={self.n_experts}, ranks={ranks}")


@dataclass
class AllocationPlan:
    """Per-layer experts and ranks on top of one shared config.

    Parameters
    ----------
    config : LoRAMoEConfig
        Everything but ``n_experts`` / ``rank`` (router, alpha, init, ...).
    layers : dict of str to LayerAllocation
        Qualified module name -> its allocation, in depth order.
    """

    config: LoRAMoEConfig
    layers: dict[str, LayerAllocation] = field(default_factory=dict)

    def config_for(self, name: str) -> LoRAMoEConfig:
        """The layer config of ``name``."""
        if name not in self.layers:
            raise ValueError(f"the plan has no layer {name!r}; it has {list(self.layers)}")
        alloc = self.layers[name]
        rank: int | tuple[int, ...] = alloc.ranks
        if len(set(alloc.ranks)) == 1:
            rank = alloc.ranks[0]
        top_k = min(self.config.top_k, alloc.n_experts)
        return replace(self.config, n_experts=alloc.n_experts, rank=rank, top_k=top_k)

    @property
    def total_rank(self) -> int:
        """Sum of all ranks over all layers (the adapter budget)."""
        return sum(sum(a.ranks) for a in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"config": self.config.to_dict(),
                "layers": {n: {"n_experts": a.n_experts, "ranks": list(a.ranks)}
                           for n, a in self.layers.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AllocationPlan:
        """Inverse of :meth:`to_dict`."""
        return cls(LoRAMoEConfig.from_dict(dict(data["config"])),
                   {n: LayerAllocation(int(a["n_experts"]), tuple(a["ranks"]))
                    for n, a in data["layers"].items()})

    def to_json(self) -> str:
        """The plan as a JSON string."""
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        lines = [f"{'layer':<40} {'experts':>7}  ranks"]
        for name, a in self.layers.items():
            lines.append(f"{name:<40} {a.n_experts:>7}  {','.join(map(str, a.ranks))}")
        lines.append(f"total rank {self.total_rank}, router {self.config.router!r}")
        return "\n".join(lines)


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
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
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
        Layer names in depth order (e.g. from :func:`~mola_ts.nn.lora.find_targets`).
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
