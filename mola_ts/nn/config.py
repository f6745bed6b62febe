"""Adapter settings as plain data: the layer config, its presets and per-layer allocation plans.

Nothing here holds a tensor or a module. :class:`LoRAMoEConfig` describes one LoRA-MoE layer
(:class:`~mola_ts.nn.layer.LoRAMoE`); :class:`AllocationPlan` is one shared config plus a
number of experts and ranks per wrapped layer, which :func:`~mola_ts.nn.model.inject` builds a
model from. The plan constructors and the GuiLoMo search live in :mod:`mola_ts.nn.allocation`.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sklearn.utils import check_scalar

from .routers import ROUTERS

__all__ = ["LoRAMoEConfig", "LayerAllocation", "AllocationPlan", "MOLA_PRESETS", "INITS"]

#: Initialisations of the A matrices.
INITS = ("kaiming", "gaussian")

#: MoLA's experts per depth group (lower -> higher layers); "2468" was the best in their study.
MOLA_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "2468": (2, 4, 6, 8),
    "8642": (8, 6, 4, 2),
    "8228": (8, 2, 2, 8),
    "5555": (5, 5, 5, 5),
}

# Settings of the published methods, see LoRAMoEConfig.preset.
_PRESETS: dict[str, dict[str, Any]] = {
    "mola_forecast": {"router": "task", "init": "gaussian", "init_std": 0.01},
    "mola": {"router": "topk", "top_k": 2, "balance_coef": 1e-3},
    "ldmole": {"router": "ldmole"},
    "mosld": {"router": "topk", "top_k": 2, "shared_A": True, "dropconnect": 0.1},
    "guilomo_search": {"router": "topk", "top_k": 2, "gsv": True},
}

# (name, target type, lower bound, upper bound, include_boundaries) of the numeric fields
_SCALARS: tuple[tuple[str, type, float | None, float | None, str], ...] = (
    ("n_experts", numbers.Integral, 1, None, "both"),
    ("top_k", numbers.Integral, 1, None, "both"),
    ("n_tasks", numbers.Integral, 1, None, "both"),
    ("lambda_hidden", numbers.Integral, 1, None, "both"),
    ("sparsity_k", numbers.Integral, 1, None, "both"),
    ("alpha", numbers.Real, 0.0, None, "neither"),
    ("init_std", numbers.Real, 0.0, None, "neither"),
    ("dropout", numbers.Real, 0.0, 1.0, "left"),
    ("dropconnect", numbers.Real, 0.0, 1.0, "left"),
    ("balance_coef", numbers.Real, 0.0, None, "both"),
    ("sparsity_coef", numbers.Real, 0.0, None, "both"),
)


def _check_number(value: Any, name: str, target_type: type, min_val: float | None,
                  max_val: float | None = None, include_boundaries: str = "both") -> Any:
    """scikit-learn's ``check_scalar`` plus the two cases it lets through: bools and NaN.

    Returns integers as Python ints (numpy integers are accepted); reals unchanged.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got the bool {value!r}")
    check_scalar(value, name, target_type, min_val=min_val, max_val=max_val,
                 include_boundaries=include_boundaries)
    if target_type is numbers.Integral:
        return int(value)
    if value != value:
        raise ValueError(f"{name} must be a number, got NaN")
    return value


@dataclass(frozen=True)
class LoRAMoEConfig:
    """Settings of one LoRA-MoE layer (spec ``lora_moe.md`` sections 1-3).

    Parameters
    ----------
    n_experts : int
        Number of experts E.
    rank : int or sequence of int
        One rank for all experts, or one per expert (heterogeneous ranks: HILO, GuiLoMo).
    alpha : float
        LoRA alpha; expert e is scaled by ``alpha / r_e`` (``alpha / sqrt(r_e)`` with rslora).
    rslora : bool
        Rank-stabilised scaling.
    dropout : float
        Dropout on the LoRA branch input only (the base path is never dropped).
    init : {"kaiming", "gaussian"}
        A init: Kaiming-uniform (a = sqrt(5), peft's default) or N(0, init_std^2). B is zero, so
        a fresh adapter leaves the base output unchanged.
    init_std : float
        Standard deviation of the Gaussian A init (0.01 in the MoLA forecasting reference).
    router : {"task", "softmax", "topk", "ldmole"}
        Gate: learned logits per task id, dense softmax, top-k softmax, LD-MoLE Sparsegen.
    top_k : int
        Experts kept per token by the top-k router.
    n_tasks : int
        Number of task ids of the task router.
    router_dim : int or None
        Width of the per-sample routing input given through :func:`~mola_ts.nn.model.routing`
        (``router_input``); None routes on the layer's own input tokens.
    lambda_hidden : int
        Hidden width of the LD-MoLE lambda MLP (one MLP per routing width, shared by layers).
    sparsity_k : int
        LD-MoLE sparsity loss target: at most this many active experts.
    balance_coef, sparsity_coef : float
        Weights of the load-balancing and sparsity losses in
        :func:`~mola_ts.nn.model.collect_aux` (1e-3: the MoLA reference value for the balance
        loss).
    shared_A : bool
        MoSLD: all experts share one A (input side); each keeps its own B.
    dropconnect : float
        MoSLD DropConnect probability on the shared A during training (0.1 in MoSLD).
    gsv : bool
        GuiLoMo search stage: add guided selection vectors over experts and ranks.

    Examples
    --------
    >>> LoRAMoEConfig(n_experts=3, rank=[1, 2, 3]).ranks
    (1, 2, 3)
    """

    n_experts: int = 4
    rank: int | tuple[int, ...] = 8
    alpha: float = 16.0
    rslora: bool = False
    dropout: float = 0.0
    init: str = "kaiming"
    init_std: float = 0.01
    router: str = "softmax"
    top_k: int = 2
    n_tasks: int = 1
    router_dim: int | None = None
    lambda_hidden: int = 64
    sparsity_k: int = 2
    balance_coef: float = 1e-3
    sparsity_coef: float = 1e-3
    shared_A: bool = False
    dropconnect: float = 0.0
    gsv: bool = False

    def __post_init__(self) -> None:
        for name, kind, low, high, bounds in _SCALARS:
            value = _check_number(getattr(self, name), name, kind, low, high, bounds)
            object.__setattr__(self, name, value)
        rank = self.rank
        if isinstance(rank, (list, tuple)):
            if len(rank) != self.n_experts:
                raise ValueError(f"rank must have one entry per expert ({self.n_experts}), got "
                                 f"{len(rank)}")
            rank = tuple(_check_number(r, "rank", numbers.Integral, 1) for r in rank)
        else:
            rank = _check_number(rank, "rank", numbers.Integral, 1)
        object.__setattr__(self, "rank", rank)
        if self.router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, got {self.router!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.router_dim is not None:
            object.__setattr__(self, "router_dim", _check_number(
                self.router_dim, "router_dim", numbers.Integral, 1))
        if self.dropconnect > 0 and not self.shared_A:
            raise ValueError("dropconnect applies to the shared A: set shared_A=True")
        if self.gsv and len(set(self.ranks)) != 1:
            raise ValueError(f"the GuiLoMo search (gsv=True) needs one rank for all experts "
                             f"(the maximal rank), got {self.rank!r}")

    @property
    def ranks(self) -> tuple[int, ...]:
        """The rank of every expert."""
        if isinstance(self.rank, tuple):
            return self.rank
        return (int(self.rank),) * self.n_experts

    @classmethod
    def preset(cls, method: str, **overrides: Any) -> LoRAMoEConfig:
        """The settings of a published method, with ``overrides`` on top.

        ``"mola_forecast"``: task/segment router, Gaussian A (std 0.01) -- the MoLA forecaster.
        ``"mola"``: top-2 router with the Switch balance loss (coefficient 1e-3).
        ``"ldmole"``: LD-MoLE Sparsegen router with its sparsity and balance losses.
        ``"mosld"``: one A shared by the experts, DropConnect 0.1, top-2 routing.
        ``"guilomo_search"``: guided selection vectors over experts and ranks, top-2 routing.

        Examples
        --------
        >>> LoRAMoEConfig.preset("mosld", n_experts=4).dropconnect
        0.1
        """
        if method not in _PRESETS:
            raise ValueError(f"method must be one of {sorted(_PRESETS)}, got {method!r}")
        return cls(**{**_PRESETS[method], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (rank tuples become lists)."""
        out = asdict(self)
        if isinstance(out["rank"], tuple):
            out["rank"] = list(out["rank"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoRAMoEConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown LoRAMoEConfig keys: {sorted(unknown)}")
        return cls(**data)


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

    Examples
    --------
    >>> plan = AllocationPlan(LoRAMoEConfig(), {"fc": LayerAllocation(2, (4, 8))})
    >>> plan.config_for("fc").ranks, plan.total_rank
    ((4, 8), 12)
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
