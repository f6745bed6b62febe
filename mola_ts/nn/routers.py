"""Routers of the LoRA-MoE layer: task, dense softmax, top-k and LD-MoLE (Sparsegen).

Every router maps routing rows (tokens, or one row per sample) to a dense gate matrix
``g`` (rows x experts) with zeros for inactive experts, plus its unweighted auxiliary losses,
computed in the same forward as tensors (they carry the graph: add them to the task loss).
Gates are always computed in float32, whatever the dtype of the model around them.

The functional core (:func:`sparsegen`, :func:`sparsegen_support`,
:func:`sparsity_lower_bound`, :func:`load_balance_loss`) is public so that the formulas can be
tested and reused on their own; the router modules are thin wrappers around it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from sklearn.utils import check_scalar
from torch import nn

__all__ = [
    "ROUTERS",
    "RouterOutput",
    "Router",
    "TaskRouter",
    "SoftmaxRouter",
    "TopKRouter",
    "LDMoLERouter",
    "LambdaMLP",
    "sparsegen",
    "sparsegen_support",
    "sparsity_lower_bound",
    "load_balance_loss",
    "build_router",
]

ROUTERS = ("task", "softmax", "topk", "ldmole")

#: Logit added to experts switched off by a mask (GuiLoMo): exp(-1e4) is exactly 0 in float32.
MASKED_LOGIT = -1e4


@dataclass
class RouterOutput:
    """What a router returns for ``n`` routing rows and ``E`` experts.

    Attributes
    ----------
    gates : torch.Tensor
        (n, E) float32 dense gates, zero for inactive experts.
    losses : dict of str to torch.Tensor
        Unweighted auxiliary losses (0-d tensors, part of the autograd graph), e.g.
        ``{"balance": ..., "sparsity": ...}``; empty for the task and softmax routers.
    extras : dict of str to torch.Tensor
        Detached diagnostics, e.g. the LD-MoLE ``lambda`` per row.
    """

    gates: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------- functional core


def sparsegen_support(u: torch.Tensor, lam: torch.Tensor | float) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """Support size ``k(u)`` and threshold ``tau`` of Sparsegen, row-wise over the last axis.

    With ``u`` sorted descending and ``U_k`` its cumulative sums,
    ``k(u) = #{k : 1 - lambda + k u_(k) > U_k}`` (at least 1) and
    ``tau = (U_{k(u)} - 1 + lambda) / k(u)``.

    Parameters
    ----------
    u : torch.Tensor
        (..., E) logits.
    lam : torch.Tensor or float
        lambda < 1, broadcastable to ``u.shape[:-1]``.

    Returns
    -------
    k : torch.Tensor
        (...,) long, the number of active experts.
    tau : torch.Tensor
        (...,) the threshold (differentiable in ``u`` and ``lambda``).
    """
    lam = torch.as_tensor(lam, dtype=u.dtype, device=u.device)
    lam = lam.expand(u.shape[:-1])
    u_sorted, _ = torch.sort(u, dim=-1, descending=True)
    cum = torch.cumsum(u_sorted, dim=-1)
    ks = torch.arange(1, u.shape[-1] + 1, device=u.device, dtype=u.dtype)
    in_support = (1.0 - lam.unsqueeze(-1) + ks * u_sorted) > cum
    k = in_support.sum(dim=-1).clamp(min=1)
    cum_k = torch.gather(cum, -1, (k - 1).unsqueeze(-1)).squeeze(-1)
    tau = (cum_k - 1.0 + lam) / k.to(u.dtype)
    return k, tau


def sparsegen(u: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """Sparsegen-lin: ``argmin_p ||p - u||^2 - lambda ||p||^2`` on the simplex, in closed form.

    Equal to ``sparsemax(u / (1 - lambda))``: ``p_i = max(u_i - tau, 0) / max(1 - lambda, 1e-2)``.
    lambda near 1 keeps only the largest logit; lambda very negative approaches uniform.

    Parameters
    ----------
    u : torch.Tensor
        (..., E) logits.
    lam : torch.Tensor or float
        lambda < 1, broadcastable to ``u.shape[:-1]`` (one value per row).

    Returns
    -------
    torch.Tensor
        (..., E) probabilities: non-negative, summing to 1, at least one non-zero per row.

    Examples
    --------
    >>> import torch
    >>> sparsegen(torch.tensor([[2.0, 1.0, -1.0]]), 0.0)
    tensor([[1., 0., 0.]])
    """
    lam = torch.as_tensor(lam, dtype=u.dtype, device=u.device).expand(u.shape[:-1])
    _, tau = sparsegen_support(u, lam)
    denom = (1.0 - lam).clamp(min=1e-2)
    return torch.relu(u - tau.unsqueeze(-1)) / denom.unsqueeze(-1)


def sparsity_lower_bound(u: torch.Tensor, k: int) -> torch.Tensor:
    """LD-MoLE's ``lambda_lower(k) = 1 - (U_k - k u_(k+1))`` per row (``u`` detached).

    Sparsegen activates at most ``k`` experts exactly when ``lambda >= lambda_lower(k)``.
    When ``k >= E`` the bound is ``-inf`` (always satisfied).

    Parameters
    ----------
    u : torch.Tensor
        (..., E) logits.
    k : int
        Target maximal number of active experts (>= 1).

    Returns
    -------
    torch.Tensor
        (...,) the bound.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    u = u.detach()
    n_experts = u.shape[-1]
    if k >= n_experts:
        return torch.full(u.shape[:-1], -math.inf, dtype=u.dtype, device=u.device)
    u_sorted, _ = torch.sort(u, dim=-1, descending=True)
    cum_k = u_sorted[..., :k].sum(dim=-1)
    return 1.0 - (cum_k - k * u_sorted[..., k])


def load_balance_loss(probs: torch.Tensor, dispatch: torch.Tensor,
                      per: str = "assignment") -> torch.Tensor:
    """Switch-style load balancing ``E * sum_i f_i P_i``.

    Parameters
    ----------
    probs : torch.Tensor
        (n, E) router probabilities (softmax for top-k, Sparsegen output for LD-MoLE);
        ``P_i`` is their mean over rows (the differentiable part).
    dispatch : torch.Tensor
        (n, E) bool, which experts each row was sent to.
    per : {"assignment", "token"}
        ``f_i`` is the share of all assignments going to expert ``i`` (top-k, the Switch
        definition) or the share of rows with expert ``i`` active (LD-MoLE).

    Returns
    -------
    torch.Tensor
        Scalar loss; 1 for a perfectly balanced top-1 routing.
    """
    n_experts = probs.shape[-1]
    counts = dispatch.to(probs.dtype).sum(dim=0)
    if per == "assignment":
        f = counts / counts.sum().clamp(min=1.0)
    elif per == "token":
        f = counts / max(probs.shape[0], 1)
    else:
        raise ValueError(f"per must be 'assignment' or 'token', got {per!r}")
    return n_experts * torch.sum(f.detach() * probs.mean(dim=0))


# ----------------------------------------------------------------------------- modules


def _init_linear_weight(weight: torch.Tensor, generator: torch.Generator | None) -> None:
    """nn.Linear's default weight init (Kaiming uniform, a = sqrt(5)), with a generator."""
    with torch.no_grad():
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)


def _float_linear(x: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """A linear map computed in float32 whatever the dtype of the model."""
    return F.linear(x.float(), weight.float(), None if bias is None else bias.float())


class Router(nn.Module):
    """Base class: ``forward(rows, task_ids=None, logit_bias=None) -> RouterOutput``.

    ``rows`` (n, d) are the routing inputs (tokens, or one routing vector per sample);
    ``logit_bias`` (E,) is added to the logits (``-1e4`` switches an expert off).
    """

    kind: str = ""

    def __init__(self, n_experts: int) -> None:
        super().__init__()
        self.n_experts = check_scalar(n_experts, "n_experts", numbers.Integral, min_val=1)

    def logits(self, rows: torch.Tensor | None,
               task_ids: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class TaskRouter(Router):
    """Learned logits per task id: ``g = softmax(s_task)`` (MoLA segments, multi-task).

    Logits are initialised N(0, 1) (the MoLA reference), from ``generator`` when given.
    """

    kind = "task"

    def __init__(self, n_experts: int, n_tasks: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(n_experts)
        self.n_tasks = check_scalar(n_tasks, "n_tasks", numbers.Integral, min_val=1)
        self.task_logits = nn.Parameter(torch.empty(n_tasks, n_experts, dtype=torch.float32))
        with torch.no_grad():
            self.task_logits.normal_(0.0, 1.0, generator=generator)

    def logits(self, rows: torch.Tensor | None, task_ids: torch.Tensor | None,
               validate: bool = True) -> torch.Tensor:
        if task_ids is None:
            raise ValueError("the task router needs task ids: wrap the forward in "
                             "routing(model, task_ids=...)")
        if validate and task_ids.numel() and (int(task_ids.min()) < 0
                                              or int(task_ids.max()) >= self.n_tasks):
            raise ValueError(f"task_ids must lie in [0, {self.n_tasks}), got values in "
                             f"[{int(task_ids.min())}, {int(task_ids.max())}]")
        return self.task_logits.float().index_select(0, task_ids)

    def forward(self, rows: torch.Tensor | None, task_ids: torch.Tensor | None = None,
                logit_bias: torch.Tensor | None = None, validate: bool = True) -> RouterOutput:
        """Gates of the given task ids; ``validate=False`` skips the range check (a sync)."""
        u = self.logits(rows, task_ids, validate)
        if logit_bias is not None:
            u = u + logit_bias
        return RouterOutput(torch.softmax(u, dim=-1))


class SoftmaxRouter(Router):
    """Dense softmax gate ``g = softmax(W_r x)`` (no bias)."""

    kind = "softmax"

    def __init__(self, d_in: int, n_experts: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(n_experts)
        self.d_in = check_scalar(d_in, "d_in", numbers.Integral, min_val=1)
        self.weight = nn.Parameter(torch.empty(n_experts, d_in, dtype=torch.float32))
        _init_linear_weight(self.weight, generator)

    def logits(self, rows: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        if rows is None:
            raise ValueError(f"the {self.kind} router needs a routing input")
        if rows.shape[-1] != self.d_in:
            raise ValueError(f"routing input must have {self.d_in} features, got "
                             f"{rows.shape[-1]} (a layer with router_dim set needs "
                             "routing(model, router_input=...))")
        return _float_linear(rows, self.weight)

    def forward(self, rows: torch.Tensor | None, task_ids: torch.Tensor | None = None,
                logit_bias: torch.Tensor | None = None) -> RouterOutput:
        u = self.logits(rows, task_ids)
        if logit_bias is not None:
            u = u + logit_bias
        return RouterOutput(torch.softmax(u, dim=-1))


class TopKRouter(SoftmaxRouter):
    """Top-k of ``softmax(W_r x)``, renormalised, with the Switch load-balancing loss.

    ``losses["balance"] = E * sum_i f_i P_i``, ``f_i`` the share of top-k assignments to
    expert ``i`` and ``P_i`` its mean softmax probability.
    """

    kind = "topk"

    def __init__(self, d_in: int, n_experts: int, top_k: int = 2,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(d_in, n_experts, generator)
        self.top_k = check_scalar(top_k, "top_k", numbers.Integral, min_val=1)

    def forward(self, rows: torch.Tensor | None, task_ids: torch.Tensor | None = None,
                logit_bias: torch.Tensor | None = None) -> RouterOutput:
        u = self.logits(rows, task_ids)
        if logit_bias is not None:
            u = u + logit_bias
        probs = torch.softmax(u, dim=-1)
        k = min(self.top_k, self.n_experts)
        top_p, top_i = probs.topk(k, dim=-1)
        top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        gates = torch.zeros_like(probs).scatter(-1, top_i, top_p)
        dispatch = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top_i, True)
        return RouterOutput(gates, {"balance": load_balance_loss(probs, dispatch, "assignment")})


class LambdaMLP(nn.Module):
    """LD-MoLE's token-dependent ``lambda = logsigmoid(MLP(x)) + 0.99`` (so lambda < 0.99 < 1).

    ``MLP = Linear(d_in, hidden) -> ReLU -> Linear(hidden, 1)``, the output bias initialised to
    -2.5 so that lambda starts near -1.5 (many experts active). One instance is shared by all
    wrapped layers of the same routing-input width.
    """

    def __init__(self, d_in: int, hidden: int = 64,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.d_in = check_scalar(d_in, "d_in", numbers.Integral, min_val=1)
        self.hidden = check_scalar(hidden, "hidden", numbers.Integral, min_val=1)
        self.w1 = nn.Parameter(torch.empty(hidden, d_in, dtype=torch.float32))
        self.b1 = nn.Parameter(torch.empty(hidden, dtype=torch.float32))
        self.w2 = nn.Parameter(torch.empty(1, hidden, dtype=torch.float32))
        self.b2 = nn.Parameter(torch.full((1,), -2.5, dtype=torch.float32))
        _init_linear_weight(self.w1, generator)
        _init_linear_weight(self.w2, generator)
        bound = 1.0 / math.sqrt(d_in)
        with torch.no_grad():
            self.b1.uniform_(-bound, bound, generator=generator)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, d_in) -> (n,) lambda in float32."""
        return self.head(_float_linear(rows, self.w1, self.b1))

    def head(self, pre: torch.Tensor) -> torch.Tensor:
        """lambda from the hidden pre-activations ``pre = W1 x + b1`` (n, hidden)."""
        return F.logsigmoid(_float_linear(torch.relu(pre), self.w2, self.b2)).squeeze(-1) + 0.99


class LDMoLERouter(SoftmaxRouter):
    """LD-MoLE dynamic router: ``p = Sparsegen(W_r x; lambda(x))``.

    The number of active experts varies per token. Losses: ``"balance"`` (``f_i`` = share of
    rows with ``p_i > 0``, ``P_i`` = mean ``p_i``) and ``"sparsity"``
    ``mean ReLU(lambda_lower(k) - lambda)`` pushing towards at most ``sparsity_k`` experts.

    Parameters
    ----------
    d_in, n_experts : int
        Routing-input width and number of experts.
    lambda_mlp : LambdaMLP
        The (shared) lambda network; its ``d_in`` must match.
    sparsity_k : int
        Target maximal number of active experts of the sparsity loss.
    """

    kind = "ldmole"

    def __init__(self, d_in: int, n_experts: int, lambda_mlp: LambdaMLP, sparsity_k: int = 2,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(d_in, n_experts, generator)
        if lambda_mlp.d_in != d_in:
            raise ValueError(f"lambda_mlp has input width {lambda_mlp.d_in}, the router "
                             f"{d_in}")
        self.lambda_mlp = lambda_mlp
        self.sparsity_k = check_scalar(sparsity_k, "sparsity_k", numbers.Integral, min_val=1)

    def forward(self, rows: torch.Tensor | None, task_ids: torch.Tensor | None = None,
                logit_bias: torch.Tensor | None = None) -> RouterOutput:
        if rows is None:
            raise ValueError("the ldmole router needs a routing input")
        if rows.shape[-1] != self.d_in:
            self.logits(rows, task_ids)  # raises the shape error
        # the router logits and the lambda MLP's first layer read the same input: one matmul
        mlp = self.lambda_mlp
        weight = torch.cat([self.weight.float(), mlp.w1.float()])
        bias = torch.cat([mlp.b1.new_zeros(self.n_experts, dtype=torch.float32), mlp.b1.float()])
        both = F.linear(rows.float(), weight, bias)
        u, lam = both[:, :self.n_experts], mlp.head(both[:, self.n_experts:])
        if logit_bias is not None:
            u = u + logit_bias
        p = sparsegen(u, lam)
        lower = sparsity_lower_bound(u, self.sparsity_k)  # -inf when k >= E: loss 0
        losses = {"balance": load_balance_loss(p, p > 0, "token"),
                  "sparsity": torch.relu(lower - lam).mean()}
        return RouterOutput(p, losses, {"lambda": lam.detach()})


def build_router(kind: str, d_in: int, n_experts: int, *, top_k: int = 2, n_tasks: int = 1,
                 lambda_mlp: LambdaMLP | None = None, sparsity_k: int = 2,
                 generator: torch.Generator | None = None) -> Router:
    """Build a router by name (one of :data:`ROUTERS`)."""
    if kind == "task":
        return TaskRouter(n_experts, n_tasks, generator)
    if kind == "softmax":
        return SoftmaxRouter(d_in, n_experts, generator)
    if kind == "topk":
        return TopKRouter(d_in, n_experts, top_k, generator)
    if kind == "ldmole":
        if lambda_mlp is None:
            lambda_mlp = LambdaMLP(d_in, generator=generator)
        return LDMoLERouter(d_in, n_experts, lambda_mlp, sparsity_k, generator)
    raise ValueError(f"router must be one of {ROUTERS}, got {kind!r}")
