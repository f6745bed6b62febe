"""The one LoRA-MoE layer: a frozen linear map plus gated low-rank experts.

    y = W0 x + b + sum_e s_e g_e(x) B_e A_e dropout(x)

Every configuration of the toolkit (MoLA task routing, top-k MoLA, LD-MoLE, MoSLD, HILO,
GuiLoMo) is a :class:`~mola_ts.nn.config.LoRAMoEConfig` of :class:`LoRAMoE`. The experts are
stacked row-wise (``A_cat`` is R x d_in, ``B_cat`` is d_out x R, R = sum of the ranks) and the
delta is the gated wide LoRA of :func:`mola_ts.nn.kernels.gated_lora_delta`: two skinny
matmuls, no loop over experts.

A wrapped layer replaces an ``nn.Linear`` inside an arbitrary model, so its ``forward`` takes
one tensor and returns one tensor. Two things travel beside it:

- **Routing inputs** (per-sample task ids, per-sample routing vectors) reach the layer through
  one mechanism: its public :attr:`LoRAMoE.route` attribute, a :class:`Route`, set for the
  duration of a ``with`` block by :func:`mola_ts.nn.model.routing` (which validates the inputs
  once for all layers and restores the previous value on exit). Without a route, a layer
  routes on its own input tokens (task router with one task: task 0).
- **Auxiliary outputs**: every forward computes the layer's unweighted auxiliary losses as
  tensors (part of the autograd graph) and its routing statistics (detached) and keeps them in
  :attr:`LoRAMoE.last_losses` / :attr:`LoRAMoE.last_stats` until the next forward;
  :func:`mola_ts.nn.model.collect_aux` gathers and weights them over a model. They are
  per-forward results, not model state: pickling or copying a layer drops them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import LoRAMoEConfig
from .kernels import gated_lora_delta
from .routers import MASKED_LOGIT, LambdaMLP, Router, build_router

__all__ = ["LoRAMoE", "Route"]

@dataclass(frozen=True, eq=False)  # compared by identity: it holds tensors
class Route:
    """Per-sample routing inputs of one forward, validated once for every layer.

    Set on the layers of a model by :func:`mola_ts.nn.model.routing`. Per-sample values
    broadcast over the middle dims of each layer's (B, ..., d_in) input.

    Parameters
    ----------
    task_ids : torch.Tensor, optional
        (B,) integer task / segment ids >= 0, one per sample (read by the task router).
    router_input : torch.Tensor, optional
        (B, d_r) float routing vectors used instead of the tokens to compute router logits
        (layers need ``router_dim = d_r``).

    Attributes
    ----------
    task_max : int
        The largest task id (-1 without ids), computed once so that the layers can check
        their range without a device synchronisation each.
    """

    task_ids: torch.Tensor | None = None
    router_input: torch.Tensor | None = None
    task_max: int = field(init=False, default=-1)

    def __post_init__(self) -> None:
        task_ids, router_input = self.task_ids, self.router_input
        if task_ids is not None:
            if not isinstance(task_ids, torch.Tensor):
                raise TypeError(f"task_ids must be a torch.Tensor, got "
                                f"{type(task_ids).__name__}")
            if task_ids.dim() != 1 or task_ids.dtype.is_floating_point or task_ids.is_complex() \
                    or task_ids.dtype == torch.bool:
                raise ValueError(f"task_ids must be a 1-D integer tensor (B,), got shape "
                                 f"{tuple(task_ids.shape)} and dtype {task_ids.dtype}")
            task_ids = task_ids.long()
            if task_ids.numel() and int(task_ids.min()) < 0:
                raise ValueError(f"task_ids must be >= 0, got a minimum of "
                                 f"{int(task_ids.min())}")
            object.__setattr__(self, "task_ids", task_ids)
            object.__setattr__(self, "task_max",
                               int(task_ids.max()) if task_ids.numel() else -1)
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
    route : Route or None
        The routing inputs of the current forward, set by :func:`mola_ts.nn.model.routing`
        (None outside a routing block).
    last_losses : dict of str to torch.Tensor
        Unweighted auxiliary losses of the last forward (0-d tensors in its graph, e.g.
        ``balance``, ``sparsity``); empty for routers without losses and while merged.
    last_stats : dict of str to torch.Tensor
        Detached routing statistics of the last forward: ``active`` (tokens,) number of
        experts with a non-zero gate, ``load`` (E,) share of tokens routed to each expert,
        ``mean_gate`` (E,), and the LD-MoLE ``lambda`` (routing rows,).

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

        self.route: Route | None = None
        self._merge_delta: torch.Tensor | None = None
        self.merged_task: int | None = None
        self.last_losses: dict[str, torch.Tensor] = {}
        self.last_stats: dict[str, torch.Tensor] = {}

    def __getstate__(self) -> dict[str, Any]:
        """The module state without the per-forward results and the current route.

        The last losses hold the autograd graph of their forward, which can be neither
        deep-copied nor meaningfully restored; a routing block never outlives a pickle.
        """
        state = super().__getstate__()
        state.update(route=None, last_losses={}, last_stats={})
        return state

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
        route = self.route
        ids = None if route is None else route.task_ids
        if ids is None:
            if self.router.kind == "task" and self.config.n_tasks == 1:
                return torch.zeros(n_samples, dtype=torch.long, device=device)
            return None
        if ids.shape[0] != n_samples:
            raise ValueError(f"task_ids has {ids.shape[0]} entries but the input has "
                             f"{n_samples} samples")
        if self.router.kind == "task" and route.task_max >= self.config.n_tasks:
            raise ValueError(f"task_ids must lie in [0, {self.config.n_tasks}), got values "
                             f"up to {route.task_max}")
        return ids.to(device)

    def gates(self, tokens: torch.Tensor, n_samples: int) -> torch.Tensor:
        """(tokens, E) float32 gates; stores the auxiliary losses and the statistics."""
        device = tokens.device
        task_ids = self._task_ids_for(n_samples, device)
        route_input = None if self.route is None else self.route.router_input
        bias = self._expert_logit_bias()
        if self.router.kind == "task" or route_input is not None:
            rows = None
            if route_input is not None:
                if route_input.shape[0] != n_samples:
                    raise ValueError(f"router_input has {route_input.shape[0]} rows but the "
                                     f"input has {n_samples} samples")
                rows = route_input.to(device)
            if self.router.kind == "task":  # ids checked once by Route: no device sync
                out = self.router(rows, task_ids, bias, validate=False)
            else:
                out = self.router(rows, task_ids, bias)
            gates = _expand_per_sample(out.gates, n_samples, tokens.shape[0])
        else:
            out = self.router(tokens, task_ids, bias)
            gates = out.gates
        g = gates.detach()
        active = g > 0
        self.last_losses = dict(out.losses)
        self.last_stats = {"active": active.sum(dim=-1), "load": active.float().mean(dim=0),
                           "mean_gate": g.mean(dim=0), **out.extras}
        return gates

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter branch alone, ``sum_e s_e g_e B_e A_e dropout(x)``, shaped like the output.

        Also replaces :attr:`last_losses` and :attr:`last_stats`.
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
            self.last_losses, self.last_stats = {}, {}
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
        route = self.route
        if self.merged_task is None or route is None or route.task_ids is None:
            return
        if bool((route.task_ids != self.merged_task).any()):
            raise ValueError(f"the layer is merged for task {self.merged_task} but the forward "
                             "is routed to other tasks: unmerge first")
