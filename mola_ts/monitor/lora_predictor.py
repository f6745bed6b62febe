"""The residual monitor's neural predictor on the shared LoRA-MoE layers, one expert per mode.

:class:`LoRAMoEPredictor` is the one-step predictor of :class:`~mola_ts.monitor.ResidualMonitor`
with ``predictor="lora-moe"``: a trunk ``x_t = c + A z_t + W2 tanh(W1 z_t + b1)`` on the p lags
``z_t`` (the :class:`~mola_ts.monitor.predictor.MLPPredictor`'s network, built of plain
``nn.Linear`` layers), whose three linear maps are wrapped by :func:`mola_ts.nn.inject` in the
toolkit's one :class:`~mola_ts.nn.LoRAMoE` layer class with the task router
(:class:`~mola_ts.nn.TaskRouter`, routed through :func:`mola_ts.nn.routing`): the same layer,
router and gated-delta kernel as the MoLA forecaster. The task id is the *operating mode*:

- :meth:`LoRAMoEPredictor.fit` trains the trunk on the source mode (task 0; every adapter is
  zero there, so the trunk alone predicts) by full-batch L-BFGS, then freezes it;
- :meth:`LoRAMoEPredictor.adapt` trains the low-rank expert of one new mode (task k) only:
  expert k belongs to mode k alone (one-hot task gates, frozen, as the forecaster's
  ``adapter="lora"``), so adapting to a mode never changes another mode's predictions.

Scoring folds the active mode's expert into the base weights with
:func:`mola_ts.nn.merge_adapters` and runs in numpy (row-wise ``einsum``), so a row scored alone
and in a batch give identical bits, as the monitor's streams require.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..nn import LoRAMoEConfig, inject, lora_layers, merge_adapters, pin_task_gates, routing
from .predictor import RidgeVAR, _design

__all__ = ["LoRAMoEPredictor", "N_MODES", "ADAPTER_RANK"]

#: the residual monitor's task slots (the source mode and up to 7 adapted modes)
N_MODES = 8
#: the rank of each mode's expert in every wrapped layer
ADAPTER_RANK = 2

_LAYERS = ("linear", "hidden", "out")


class _Trunk(nn.Module):
    """``c + A z + W2 tanh(W1 z + b1)`` of plain linear layers (float64), adapters wrap them."""

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, dtype=torch.float64)
        self.hidden = nn.Linear(d_in, hidden, dtype=torch.float64)
        self.out = nn.Linear(hidden, d_out, bias=False, dtype=torch.float64)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z) + self.out(torch.tanh(self.hidden(z)))


def _lbfgs(params: list[torch.Tensor], loss_fn, max_iter: int) -> None:
    opt = torch.optim.LBFGS(params, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


class LoRAMoEPredictor:
    """A one-step predictor whose trunk is shared by every operating mode and adapted per mode.

    Parameters
    ----------
    order : int
        Lags p.
    ridge : float
        L2 penalty of the trunk's weights (and of the adapter's, in :meth:`adapt`), divided
        by the number of rows as in the MLP predictor.
    hidden : int
        Hidden units of the trunk's tanh branch.
    n_modes : int
        Task slots of the router: mode 0 is the source, 1 .. n_modes - 1 can be adapted.
    rank : int
        Rank of each mode's expert in every wrapped layer.
    max_iter : int
        L-BFGS iterations of the trunk and of each adaptation.
    random_state : int or None
        Seeds the trunk's and the adapters' initialisation.
    """

    def __init__(self, order: int = 1, ridge: float = 1.0, hidden: int = 32, n_modes: int = N_MODES,
                 rank: int = ADAPTER_RANK, max_iter: int = 200, random_state: int | None = 0):
        self.order = int(order)
        self.ridge = float(ridge)
        self.hidden = int(hidden)
        self.n_modes = int(n_modes)
        self.rank = int(rank)
        self.max_iter = int(max_iter)
        self.random_state = random_state

    def _seed(self) -> int:
        return 0 if self.random_state is None else int(self.random_state)

    def _config(self) -> LoRAMoEConfig:
        return LoRAMoEConfig(n_experts=self.n_modes, rank=self.rank, alpha=float(self.rank),
                             router="task", n_tasks=self.n_modes)

    def _build(self, trunk: _Trunk) -> None:
        self.network_ = trunk
        inject(self.network_, list(_LAYERS), self._config(), random_state=self._seed())
        pin_task_gates(self.network_, self.n_modes)
        for layer in lora_layers(self.network_).values():
            layer.lora_A.requires_grad_(False)
            layer.lora_B.requires_grad_(False)

    def fit(self, segments: Sequence[np.ndarray]) -> LoRAMoEPredictor:
        """Train the trunk on standardised source-mode segments; the adapters start at zero."""
        z, y = _design(segments, self.order)
        linear = RidgeVAR(self.order, self.ridge).fit(segments)
        trunk = _Trunk(z.shape[1], self.hidden, y.shape[1])
        gen = torch.Generator().manual_seed(self._seed())
        with torch.no_grad():
            trunk.linear.weight.copy_(torch.from_numpy(linear.coef_.T.copy()))
            trunk.linear.bias.copy_(torch.from_numpy(linear.intercept_.copy()))
            trunk.hidden.weight.copy_(torch.randn(self.hidden, z.shape[1], generator=gen,
                                                  dtype=torch.float64) / np.sqrt(z.shape[1]))
            trunk.hidden.bias.zero_()
            trunk.out.weight.zero_()  # the network starts as the ridge VAR
        zt, yt, n = torch.from_numpy(z), torch.from_numpy(y), float(len(z))
        weights = [trunk.linear.weight, trunk.hidden.weight, trunk.out.weight]
        _lbfgs(list(trunk.parameters()),
               lambda: ((trunk(zt) - yt) ** 2).sum() / n
               + self.ridge / n * sum((w ** 2).sum() for w in weights), self.max_iter)
        self._build(trunk)
        self.task_ = 0
        self._export()
        return self

    def trunk_parameters(self) -> list[nn.Parameter]:
        """The shared trunk's parameters (frozen after :meth:`fit`)."""
        return [p for layer in lora_layers(self.network_).values()
                for p in layer.base.parameters()]

    def adapter_size(self) -> int:
        """Parameters :meth:`adapt` trains: one mode's expert rows of A and B in every layer."""
        return sum(self.rank * (layer.in_features + layer.out_features)
                   for layer in lora_layers(self.network_).values())

    def trunk_size(self) -> int:
        """Parameters of the trunk (what a retraining from scratch fits)."""
        return sum(p.numel() for p in self.trunk_parameters())

    def adapt(self, segments: Sequence[np.ndarray], task: int) -> LoRAMoEPredictor:
        """Train mode ``task``'s expert only (trunk and other modes frozen); make it active."""
        if not 1 <= int(task) < self.n_modes:
            raise ValueError(f"task must lie in [1, {self.n_modes}) (0 is the source mode), "
                             f"got {task}")
        task = int(task)
        z, y = _design(segments, self.order)
        zt, yt, n = torch.from_numpy(z), torch.from_numpy(y), float(len(z))
        layers = list(lora_layers(self.network_).values())
        rows = slice(task * self.rank, (task + 1) * self.rank)
        gen = torch.Generator().manual_seed(self._seed() + task)
        params = []
        for layer in layers:
            with torch.no_grad():  # a fresh expert: A re-drawn, B zero
                a = torch.empty(self.rank, layer.in_features, dtype=torch.float64)
                nn.init.kaiming_uniform_(a, a=np.sqrt(5), generator=gen)
                layer.lora_A[rows] = a
                layer.lora_B[:, rows] = 0.0
            for p in (layer.lora_A, layer.lora_B):
                p.requires_grad_(True)
                params.append(p)
        masks = []  # the gradient reaches this mode's expert rows only
        for layer in layers:
            for p, cut in ((layer.lora_A, (rows,)), (layer.lora_B, (slice(None), rows))):
                m = torch.zeros_like(p, dtype=torch.bool)
                m[cut] = True
                masks.append(m)
        hooks = [p.register_hook(lambda g, m=m: g * m)
                 for p, m in zip(params, masks, strict=True)]
        ids = torch.full((len(z),), task, dtype=torch.long)

        def loss():
            with routing(self.network_, task_ids=ids):
                err = ((self.network_(zt) - yt) ** 2).sum() / n
            return err + self.ridge / n * sum(
                (p[rows] ** 2).sum() + (q[:, rows] ** 2).sum()
                for p, q in ((la.lora_A, la.lora_B) for la in layers))

        try:
            _lbfgs(params, loss, self.max_iter)
        finally:
            for h in hooks:
                h.remove()
            for p in params:
                p.requires_grad_(False)
        self.task_ = task
        self._export()
        return self

    def activate(self, task: int) -> LoRAMoEPredictor:
        """Score with mode ``task``'s expert from now on."""
        self.task_ = int(task)
        self._export()
        return self

    def _export(self) -> None:
        """The active mode's merged weights, as numpy arrays for row-wise exact scoring."""
        net = copy.deepcopy(self.network_)  # merging in place would round the trunk's bits
        merge_adapters(net, self.task_)
        self.coef_ = net.linear.base.weight.detach().numpy().T.copy()
        self.intercept_ = net.linear.base.bias.detach().numpy().copy()
        self.w1_ = net.hidden.base.weight.detach().numpy().T.copy()
        self.b1_ = net.hidden.base.bias.detach().numpy().copy()
        self.w2_ = net.out.base.weight.detach().numpy().T.copy()

    def predict_lagged(self, lagged: np.ndarray) -> np.ndarray:
        """Predictions of rows whose lag features (n, p d) are given (row-wise exact)."""
        hidden = np.tanh(np.einsum("ni,ij->nj", lagged, self.w1_) + self.b1_)
        return (np.einsum("ni,ij->nj", lagged, self.coef_)
                + np.einsum("ni,ij->nj", hidden, self.w2_) + self.intercept_)

    def predict_torch(self, lagged: np.ndarray, task: int | None = None) -> np.ndarray:
        """The same predictions through the LoRA-MoE layers' forward (unmerged, routed)."""
        task = self.task_ if task is None else int(task)
        ids = torch.full((len(lagged),), task, dtype=torch.long)
        with torch.no_grad(), routing(self.network_, task_ids=ids):
            return self.network_(torch.from_numpy(np.asarray(lagged, np.float64))).numpy()

    def get_state(self) -> dict[str, np.ndarray]:
        state = {k: v.detach().numpy().copy() for k, v in self.network_.state_dict().items()}
        state["task"] = np.asarray(self.task_)
        return state

    @classmethod
    def from_state(cls, state: dict, order: int, ridge: float, hidden: int, n_modes: int,
                   rank: int) -> LoRAMoEPredictor:
        model = cls(order, ridge, hidden, n_modes, rank)
        weight = np.asarray(state["linear.base.weight"])
        if weight.ndim != 2 or weight.shape[1] != order * weight.shape[0]:
            raise ValueError(f"predictor weights of shape {weight.shape} do not fit order "
                             f"{order}")
        model._build(_Trunk(weight.shape[1], hidden, weight.shape[0]))
        tensors = {k: torch.from_numpy(np.asarray(v, dtype=np.float64 if "logits" not in k
                                                  else np.float32))
                   for k, v in state.items() if k != "task"}
        try:
            model.network_.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ValueError(f"predictor weights do not fit hidden={hidden}, n_modes={n_modes}, "
                             f"rank={rank}: {exc}") from exc
        model.task_ = int(np.asarray(state["task"]).reshape(-1)[0])
        model._export()
        return model
