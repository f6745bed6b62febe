"""The one LoRA-MoE layer: a frozen linear map plus gated low-rank experts.

    y = W0 x + b + sum_e s_e g_e(x) B_e A_e dropout(x)

Every configuration of the toolkit (MoLA task routing, top-k MoLA, LD-MoLE, MoSLD, HILO,
GuiLoMo) is a :class:`LoRAMoEConfig` of :class:`LoRAMoE`. The experts are stacked row-wise
(``A_cat`` is R x d_in, ``B_cat`` is d_out x R, R = sum of the ranks) and the delta is the gated
wide LoRA of :func:`mola_ts.nn.kernels.gated_lora_delta`: two skinny matmuls, no loop over
experts.

Model-level helpers, in the manner of peft: :func:`inject` wraps the matching ``nn.Linear`` /
1x1 ``nn.Conv1d`` modules and freezes everything else; :func:`routing` hands per-sample task
ids or routing inputs to every layer for one forward; :func:`collect_aux` gathers the weighted
auxiliary losses and the routing statistics; :func:`merge_adapters` / :func:`unmerge_adapters`
fold static gates into the base weights; :func:`remove_adapters` gives the base modules back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .kernels import gated_lora_delta
from .routers import MASKED_LOGIT, ROUTERS, LambdaMLP, LazyDict, Router, build_router

if TYPE_CHECKING:  # pragma: no cover
    from .allocation import AllocationPlan

__all__ = [
    "LoRAMoEConfig",
    "LoRAMoE",
    "ParameterReport",
    "AuxReport",
    "inject",
    "find_targets",
    "routing",
    "collect_aux",
    "parameter_report",
    "lora_layers",
    "merge_adapters",
    "unmerge_adapters",
    "remove_adapters",
]

_INITS = ("kaiming", "gaussian")


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
        Width of the per-sample routing input given through :func:`routing`
        (``router_input``); None routes on the layer's own input tokens.
    lambda_hidden : int
        Hidden width of the LD-MoLE lambda MLP (one MLP per routing width, shared by layers).
    sparsity_k : int
        LD-MoLE sparsity loss target: at most this many active experts.
    balance_coef, sparsity_coef : float
        Weights of the load-balancing and sparsity losses in :func:`collect_aux`
        (1e-3: the MoLA reference value for the balance loss).
    shared_A : bool
        MoSLD: all experts share one A (input side); each keeps its own B.
    dropconnect : float
        MoSLD DropConnect probability on the shared A during training (0.1 in MoSLD).
    gsv : bool
        GuiLoMo search stage: add guided selection vectors over experts and ranks.
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
        def _int(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

        _int("n_experts", 1)
        _int("top_k", 1)
        _int("n_tasks", 1)
        _int("lambda_hidden", 1)
        _int("sparsity_k", 1)
        rank = self.rank
        if isinstance(rank, (list, tuple)):
            rank = tuple(rank)
            if len(rank) != self.n_experts:
                raise ValueError(f"rank must have one entry per expert ({self.n_experts}), got "
                                 f"{len(rank)}")
            object.__setattr__(self, "rank", rank)
            values = rank
        else:
            values = (rank,)
        for r in values:
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ValueError(f"rank must be a positive int or a list of them, got "
                                 f"{self.rank!r}")
        if self.router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, got {self.router!r}")
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {self.init!r}")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha!r}")
        for name in ("dropout", "dropconnect"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
        for name in ("balance_coef", "sparsity_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.router_dim is not None:
            if isinstance(self.router_dim, bool) or not isinstance(self.router_dim, int) \
                    or self.router_dim < 1:
                raise ValueError(f"router_dim must be None or an int >= 1, got "
                                 f"{self.router_dim!r}")
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
        presets: dict[str, dict[str, Any]] = {
            "mola_forecast": {"router": "task", "init": "gaussian", "init_std": 0.01},
            "mola": {"router": "topk", "top_k": 2, "balance_coef": 1e-3},
            "ldmole": {"router": "ldmole"},
            "mosld": {"router": "topk", "top_k": 2, "shared_A": True, "dropconnect": 0.1},
            "guilomo_search": {"router": "topk", "top_k": 2, "gsv": True},
        }
        if method not in presets:
            raise ValueError(f"method must be one of {sorted(presets)}, got {method!r}")
        return cls(**{**presets[method], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (rank tuples become lists)."""
        out = asdict(self)
        if isinstance(out["rank"], tuple):
            out["rank"] = list(out["rank"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoRAMoEConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown LoRAMoEConfig keys: {sorted(unknown)}")
        return cls(**data)


class _HardPrefixMask(torch.autograd.Function):
    """GuiLoMo straight-through prefix mask over the last axis of ``s = sigmoid(v)``.

    Forward: ``m[j] = high`` for ``j <= argmax(s)``, else ``low``. Backward: the incoming
    gradient times ``s``, summed over the kept positions, lands on the argmax coordinate only.
    """

    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, high: float, low: float) -> torch.Tensor:
        idx = s.argmax(dim=-1, keepdim=True)
        positions = torch.arange(s.shape[-1], device=s.device)
        keep = positions <= idx
        ctx.save_for_backward(s, idx)
        return torch.where(keep, torch.full_like(s, high), torch.full_like(s, low))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        s, idx = ctx.saved_tensors
        acc = torch.cumsum(grad * s, dim=-1).gather(-1, idx)
        return torch.zeros_like(s).scatter(-1, idx, acc), None, None


def _expand_per_sample(values: torch.Tensor, n_samples: int, n_tokens: int) -> torch.Tensor:
    """Repeat per-sample rows over the tokens of each sample (samples are contiguous)."""
    per = n_tokens // n_samples
    if per == 1:
        return values
    return values.repeat_interleave(per, dim=0)


class LoRAMoE(nn.Module):
    """A frozen ``nn.Linear`` or 1x1 ``nn.Conv1d`` plus gated low-rank experts.

    Parameters
    ----------
    base : nn.Linear or nn.Conv1d
        The wrapped module (kept as ``self.base``; its parameters are frozen here).
    config : LoRAMoEConfig, optional
        Layer settings; the default config when None.
    lambda_mlp : LambdaMLP, optional
        The shared LD-MoLE lambda network (a fresh one when None and router="ldmole").
    generator : torch.Generator, optional
        Source of randomness for the initialisation.

    Attributes
    ----------
    lora_A : nn.Parameter
        (R, d_in) stacked expert input matrices, or (max rank, d_in) when ``shared_A``.
    lora_B : nn.Parameter
        (d_out, R) stacked expert output matrices (zero at init).
    router : Router
        The gate network; gates are computed in float32.
    last_losses : mapping
        Unweighted auxiliary losses of the last forward (computed when first read: read them,
        e.g. through :func:`collect_aux`, before ``backward``).
    last_stats : mapping
        Routing statistics of the last forward (computed when first read): ``active``
        (tokens,) number of experts with a non-zero gate, ``load`` (E,) share of tokens routed
        to each expert, ``mean_gate`` (E,).

    Examples
    --------
    >>> import torch
    >>> layer = LoRAMoE(torch.nn.Linear(16, 8), LoRAMoEConfig(n_experts=4, rank=2))
    >>> layer(torch.randn(3, 5, 16)).shape
    torch.Size([3, 5, 8])
    """

    def __init__(self, base: nn.Module, config: LoRAMoEConfig | None = None, *,
                 lambda_mlp: LambdaMLP | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        config = LoRAMoEConfig() if config is None else config
        if not isinstance(config, LoRAMoEConfig):
            raise TypeError(f"config must be a LoRAMoEConfig, got {type(config).__name__}")
        if isinstance(base, nn.Linear):
            d_in, d_out = base.in_features, base.out_features
        elif isinstance(base, nn.Conv1d):
            if (base.kernel_size != (1,) or base.stride != (1,) or base.dilation != (1,)
                    or base.padding not in ((0,), "valid") or base.groups != 1):
                raise ValueError("only 1x1 nn.Conv1d (kernel 1, stride 1, no padding, groups 1) "
                                 f"can be wrapped, got {base}")
            d_in, d_out = base.in_channels, base.out_channels
        else:
            raise TypeError(f"base must be nn.Linear or a 1x1 nn.Conv1d, got "
                            f"{type(base).__name__}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.config = config
        self.in_features = int(d_in)
        self.out_features = int(d_out)
        self.n_experts = config.n_experts
        self.ranks = config.ranks
        weight = base.weight
        factory = {"device": weight.device, "dtype": weight.dtype}

        n_rows = sum(self.ranks)
        rows_a = max(self.ranks) if config.shared_A else n_rows
        A = torch.empty(rows_a, d_in)  # initialised on the CPU (where the generator lives)
        if config.init == "kaiming":
            nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
        else:
            A.normal_(0.0, config.init_std, generator=generator)
        self.lora_A = nn.Parameter(A.to(**factory))
        self.lora_B = nn.Parameter(torch.zeros(d_out, n_rows, **factory))
        expert_index = torch.repeat_interleave(torch.arange(self.n_experts),
                                               torch.tensor(self.ranks))
        self.register_buffer("expert_index", expert_index.to(weight.device), persistent=False)
        # row j of A_cat is row shared_rows[j] of the shared A (expert e uses its first r_e rows)
        shared_rows = torch.cat([torch.arange(r) for r in self.ranks])
        self.register_buffer("shared_rows", shared_rows.to(weight.device), persistent=False)
        denom = [math.sqrt(r) if config.rslora else float(r) for r in self.ranks]
        scales = torch.tensor([config.alpha / d for d in denom], dtype=torch.float32)
        self.register_buffer("expert_scale", scales.to(weight.device), persistent=False)
        self._uniform_scale = float(scales[0]) if len(set(self.ranks)) == 1 else None
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

        router_dim = config.router_dim if config.router_dim is not None else d_in
        if config.router == "ldmole" and lambda_mlp is None:
            lambda_mlp = LambdaMLP(router_dim, config.lambda_hidden, generator)
        self.router: Router = build_router(
            config.router, router_dim, self.n_experts, top_k=config.top_k,
            n_tasks=config.n_tasks, lambda_mlp=lambda_mlp, sparsity_k=config.sparsity_k,
            generator=generator).to(weight.device)

        if config.gsv:
            self.gsv_experts = nn.Parameter(
                torch.randn(self.n_experts, generator=generator).to(weight.device))
            self.gsv_ranks = nn.Parameter(
                torch.randn(self.n_experts, self.ranks[0], generator=generator).to(weight.device))

        self._route_task_ids: torch.Tensor | None = None
        self._route_task_max = -1
        self._route_input: torch.Tensor | None = None
        self._merge_delta: torch.Tensor | None = None
        self.merged_task: int | None = None
        self.last_losses: Mapping[str, torch.Tensor] = LazyDict()
        self.last_stats: Mapping[str, torch.Tensor] = LazyDict()

    # ------------------------------------------------------------------ properties

    @property
    def merged(self) -> bool:
        """Whether the static gates are currently folded into the base weight."""
        return self._merge_delta is not None

    def extra_repr(self) -> str:
        c = self.config
        return (f"d_in={self.in_features}, d_out={self.out_features}, experts={self.n_experts}, "
                f"ranks={list(self.ranks)}, router={c.router!r}, shared_A={c.shared_A}, "
                f"gsv={c.gsv}")

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters of this layer (A, B, router, lambda MLP, GSVs)."""
        yield self.lora_A
        yield self.lora_B
        yield from self.router.parameters()
        if self.config.gsv:
            yield self.gsv_experts
            yield self.gsv_ranks

    # ------------------------------------------------------------------ GuiLoMo selection

    def selected_experts(self) -> int:
        """GuiLoMo: number of experts kept now, ``argmax sigmoid(v_E) + 1`` (all without GSVs)."""
        if not self.config.gsv:
            return self.n_experts
        return int(self.gsv_experts.detach().argmax()) + 1

    def selected_ranks(self) -> tuple[int, ...]:
        """GuiLoMo: rank kept per expert now, ``argmax sigmoid(v_R,e) + 1``."""
        if not self.config.gsv:
            return self.ranks
        return tuple(int(i) + 1 for i in self.gsv_ranks.detach().argmax(dim=-1))

    def _expert_logit_bias(self) -> torch.Tensor | None:
        if not self.config.gsv:
            return None
        return _HardPrefixMask.apply(torch.sigmoid(self.gsv_experts.float()), 0.0, MASKED_LOGIT)

    # ------------------------------------------------------------------ forward pieces

    def effective_A(self, training: bool | None = None) -> torch.Tensor:
        """The stacked (R, d_in) A used in the forward (shared A expanded, DropConnect, masks)."""
        training = self.training if training is None else training
        A = self.lora_A
        if self.config.shared_A:
            p = self.config.dropconnect
            if training and p > 0:
                keep = torch.empty_like(A).bernoulli_(1.0 - p)
                A = A * keep / (1.0 - p)
            A = A.index_select(0, self.shared_rows)
        if self.config.gsv:
            mask = _HardPrefixMask.apply(torch.sigmoid(self.gsv_ranks.float()), 1.0, 1e-4)
            A = A * mask.reshape(-1, 1).to(A.dtype)
        return A

    def _scaled(self, gates: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Per-expert scale folded into the gates when the ranks differ."""
        if self._uniform_scale is not None:
            return gates, self._uniform_scale
        return gates * self.expert_scale, 1.0

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(tokens, d_in) view of the input and the number of samples."""
        if isinstance(self.base, nn.Conv1d):
            if x.dim() not in (2, 3) or x.shape[-2] != self.in_features:
                raise ValueError(f"input must be (batch, {self.in_features}, length) or "
                                 f"({self.in_features}, length), got {tuple(x.shape)}")
            if x.dim() == 2:
                return x.t(), 1
            return x.transpose(1, 2).reshape(-1, self.in_features), x.shape[0]
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"input must be (..., {self.in_features}), got {tuple(x.shape)}")
        n_samples = x.shape[0] if x.dim() >= 2 else 1
        return x.reshape(-1, self.in_features), n_samples

    def _untokens(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, nn.Conv1d):
            if x.dim() == 2:
                return delta.t()
            return delta.reshape(x.shape[0], x.shape[2], self.out_features).transpose(1, 2)
        return delta.reshape(*x.shape[:-1], self.out_features)

    def _task_ids_for(self, n_samples: int, device: torch.device) -> torch.Tensor | None:
        ids = self._route_task_ids
        if ids is None:
            if self.router.kind == "task" and self.config.n_tasks == 1:
                return torch.zeros(n_samples, dtype=torch.long, device=device)
            return None
        if ids.shape[0] != n_samples:
            raise ValueError(f"task_ids has {ids.shape[0]} entries but the input has "
                             f"{n_samples} samples")
        if self.router.kind == "task" and self._route_task_max >= self.config.n_tasks:
            raise ValueError(f"task_ids must lie in [0, {self.config.n_tasks}), got values "
                             f"up to {self._route_task_max}")
        return ids.to(device)

    def gates(self, tokens: torch.Tensor, n_samples: int) -> torch.Tensor:
        """(tokens, E) float32 gates; stores the auxiliary losses and the statistics."""
        device = tokens.device
        task_ids = self._task_ids_for(n_samples, device)
        route_input = self._route_input
        bias = self._expert_logit_bias()
        if self.router.kind == "task" or route_input is not None:
            rows = None
            if route_input is not None:
                if route_input.shape[0] != n_samples:
                    raise ValueError(f"router_input has {route_input.shape[0]} rows but the "
                                     f"input has {n_samples} samples")
                rows = route_input.to(device)
            if self.router.kind == "task":  # ids checked once by routing(): no device sync
                out = self.router(rows, task_ids, bias, validate=False)
            else:
                out = self.router(rows, task_ids, bias)
            gates = _expand_per_sample(out.gates, n_samples, tokens.shape[0])
        else:
            out = self.router(tokens, task_ids, bias)
            gates = out.gates
        self.last_losses = out.losses
        g = gates.detach()
        extras = {k: (lambda v=v: v) for k, v in out.extras.items()}
        self.last_stats = LazyDict({
            "active": lambda: (g > 0).sum(dim=-1),
            "load": lambda: (g > 0).float().mean(dim=0),
            "mean_gate": lambda: g.mean(dim=0),
            **extras,
        })
        return gates

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter branch alone, ``sum_e s_e g_e B_e A_e dropout(x)``, shaped like the output.

        Also refreshes :attr:`last_losses` and :attr:`last_stats`.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        tokens, n_samples = self._tokens(x)
        gates, scale = self._scaled(self.gates(tokens, n_samples))
        delta = gated_lora_delta(self.lora_dropout(tokens), self.effective_A(), self.lora_B,
                                 gates, self.expert_index, scale)
        return self._untokens(delta, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        self._tokens(x)  # validate the shape before the base module sees it
        out = self.base(x)
        if self.merged:
            self._check_merged_routing(x)
            self.last_losses, self.last_stats = LazyDict(), LazyDict()
            return out
        return out + self.delta(x).to(out.dtype)

    # ------------------------------------------------------------------ merge / unmerge

    def _static_gates(self, task_id: int | None) -> torch.Tensor:
        if self.config.gsv:
            raise ValueError("a GuiLoMo search layer (gsv=True) cannot be merged: rebuild it "
                             "from its plan first")
        if self.router.kind == "task":
            if task_id is None:
                if self.config.n_tasks != 1:
                    raise ValueError("merging a task-routed layer needs task_id (one of "
                                     f"0..{self.config.n_tasks - 1})")
                task_id = 0
            ids = torch.tensor([int(task_id)], device=self.lora_A.device)
            return self.router(None, ids, None).gates
        if self.n_experts == 1:
            return torch.ones(1, 1, device=self.lora_A.device)
        raise ValueError(f"merge needs static gates (task router or one expert); this layer "
                         f"has {self.n_experts} experts and a {self.router.kind!r} router")

    @torch.no_grad()
    def merge(self, task_id: int | None = None) -> None:
        """Fold the adapter, with the static gates of ``task_id``, into the base weight.

        While merged the forward costs one base matmul; a forward routed to another task
        raises ValueError. :meth:`unmerge` subtracts the very same delta.
        """
        if self.merged:
            raise ValueError("the layer is already merged: unmerge it first")
        g = self._static_gates(task_id)
        eye = torch.eye(self.in_features, dtype=self.lora_A.dtype, device=self.lora_A.device)
        gates, scale = self._scaled(g.expand(self.in_features, -1))
        delta_t = gated_lora_delta(eye, self.effective_A(training=False), self.lora_B, gates,
                                   self.expert_index, scale)
        weight = self.base.weight
        delta = delta_t.t().to(weight.dtype).reshape(weight.shape)
        weight.add_(delta)
        self._merge_delta = delta
        self.merged_task = None if self.router.kind != "task" else (
            0 if task_id is None else int(task_id))

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the merged delta, restoring the base weight."""
        if not self.merged:
            raise ValueError("the layer is not merged")
        self.base.weight.sub_(self._merge_delta)
        self._merge_delta = None
        self.merged_task = None

    def _check_merged_routing(self, x: torch.Tensor) -> None:
        if self.merged_task is None or self._route_task_ids is None:
            return
        if bool((self._route_task_ids != self.merged_task).any()):
            raise ValueError(f"the layer is merged for task {self.merged_task} but the forward "
                             "is routed to other tasks: unmerge first")


# ============================================================================== model helpers


def lora_layers(model: nn.Module) -> dict[str, LoRAMoE]:
    """All LoRA-MoE layers of ``model`` by qualified name (in module order)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRAMoE)}


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
        (:mod:`mola_ts.nn.allocation`); a plan must cover every matched layer.
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
    from .allocation import AllocationPlan

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
            router_input: torch.Tensor | None = None) -> Iterator[None]:
    """Give every LoRA-MoE layer of ``model`` per-sample routing information for a forward.

    Parameters
    ----------
    model : nn.Module
        A model holding LoRA-MoE layers.
    task_ids : torch.Tensor, optional
        (B,) integer task / segment ids, one per sample (used by the task router).
    router_input : torch.Tensor, optional
        (B, d_r) routing vectors used instead of the tokens to compute router logits
        (e.g. segment embedding + window representation); layers need ``router_dim = d_r``.

    Notes
    -----
    Per-sample values broadcast over the middle dims of each layer's (B, ..., d_in) input.
    The previous values are restored on exit, so contexts nest.
    """
    layers = list(lora_layers(model).values())
    if not layers:
        raise ValueError("model has no LoRA-MoE layers: call inject(...) first")
    task_max = -1
    if task_ids is not None:
        if not isinstance(task_ids, torch.Tensor):
            raise TypeError(f"task_ids must be a torch.Tensor, got {type(task_ids).__name__}")
        if task_ids.dim() != 1 or task_ids.dtype.is_floating_point or task_ids.is_complex() \
                or task_ids.dtype == torch.bool:
            raise ValueError(f"task_ids must be a 1-D integer tensor (B,), got shape "
                             f"{tuple(task_ids.shape)} and dtype {task_ids.dtype}")
        task_ids = task_ids.long()
        task_max = int(task_ids.max()) if task_ids.numel() else -1
        if task_ids.numel() and int(task_ids.min()) < 0:
            raise ValueError(f"task_ids must be >= 0, got a minimum of {int(task_ids.min())}")
    if router_input is not None:
        if not isinstance(router_input, torch.Tensor):
            raise TypeError(f"router_input must be a torch.Tensor, got "
                            f"{type(router_input).__name__}")
        if router_input.dim() != 2 or not router_input.dtype.is_floating_point:
            raise ValueError(f"router_input must be a 2-D float tensor (B, d_r), got shape "
                             f"{tuple(router_input.shape)} and dtype {router_input.dtype}")
        if task_ids is not None and task_ids.shape[0] != router_input.shape[0]:
            raise ValueError(f"task_ids has {task_ids.shape[0]} entries but router_input "
                             f"{router_input.shape[0]} rows")
        for layer in layers:
            if layer.router.kind != "task" and layer.router.d_in != router_input.shape[1]:
                raise ValueError(f"router_input has {router_input.shape[1]} features but the "
                                 f"layers route on {layer.router.d_in} (set router_dim)")
    previous = [(m._route_task_ids, m._route_task_max, m._route_input) for m in layers]
    for m in layers:
        m._route_task_ids, m._route_task_max, m._route_input = task_ids, task_max, router_input
    try:
        yield
    finally:
        for m, (ids, top, inp) in zip(layers, previous, strict=True):
            m._route_task_ids, m._route_task_max, m._route_input = ids, top, inp


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
    """Sum the weighted auxiliary losses of the last forward and gather routing statistics."""
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
