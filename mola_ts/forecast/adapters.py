"""The MoLA adapter network: a frozen foundation with LoRA-MoE layers routed by segment, its
training objective and its per-segment early stopping.

This module owns the torch side of :class:`~mola_ts.forecast.MoLAForecaster`:
:class:`SegmentAdapter` (the adapted network; every segment of the horizon is one routing task,
all segments run in one batched forward), :func:`segment_loss` / :func:`segment_metrics` (what
:func:`mola_ts.training.train` optimises and tracks) and :class:`SegmentEarlyStopping` (a
:class:`mola_ts.training.Stopper` that stops and freezes each segment on its own validation MSE).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..data import check_number
from ..nn import (
    AllocationPlan,
    LoRAMoEConfig,
    collect_aux,
    inject,
    lora_layers,
    pin_task_gates,
    routing,
)
from ..training import stage, unwrap_model
from .backbones import InstanceNorm

__all__ = ["SegmentAdapter", "SegmentEarlyStopping", "SegmentStopLines", "segment_mse",
           "segment_loss", "segment_metrics"]


class SegmentAdapter(nn.Module):
    """A frozen foundation network with LoRA-MoE layers routed by segment id.

    Parameters
    ----------
    foundation : nn.Module
        A backbone mapping (B, L, C) to (B, S, C); deep-copied, never modified.
    n_segments : int
        K, the number of segments (task ids 0..K-1).
    config : LoRAMoEConfig or AllocationPlan
        Layer config (``router="task"`` with ``n_tasks=K``, ``"topk"`` or ``"ldmole"``), or
        a per-layer allocation plan on such a config.
    target_modules : str or sequence of str
        Modules to wrap (see :func:`mola_ts.nn.inject`).
    adapter : {"mola", "lora"}
        "lora": expert k belongs to segment k alone (one-hot gates, frozen).
    router_features : int
        With an LD-MoLE config: width of the segment embedding and of the window projection
        (the routing input is their concatenation, ``2 * router_features`` wide).
    random_state : int, optional
        Seed of the adapter initialisation.
    segments_per_step : int, optional
        Training draws this many of the active segments at random for every step (one
        stacked forward of that many copies instead of all K); None: every active segment.
    foundation_dropout : bool
        False: :meth:`train` leaves the frozen network in eval mode (no dropout in it), and
        only the adapters' own dropout and DropConnect follow it. True (default): every
        module follows ``train()``.

    Notes
    -----
    When the backbone exposes ``forward_prefix`` / ``forward_suffix`` and no adapted module
    lies in its ``PREFIX_MODULES`` (the iTransformer and patch backbones with the default
    feed-forward targets), the frozen prefix (normalisation, embedding, first attention block)
    runs once per window and only its output is stacked K times: the same result as stacking
    the window, at a lower cost.
    """

    def __init__(self, foundation: nn.Module, n_segments: int, config: LoRAMoEConfig,
                 target_modules, *, adapter: str = "mola", router_features: int = 16,
                 random_state: int | None = None, segments_per_step: int | None = None,
                 foundation_dropout: bool = True):
        super().__init__()
        self.n_segments = int(n_segments)
        self.foundation_dropout = bool(foundation_dropout)
        self.segments_per_step = segments_per_step
        self.adapter = adapter
        self.network = copy.deepcopy(foundation)
        self.network.eval()
        inject(self.network, target_modules, config, random_state=random_state)
        if isinstance(config, AllocationPlan):
            config = config.config  # the routing settings every layer shares
        self.dynamic = config.router != "task"
        if adapter == "lora":
            if config.n_experts != self.n_segments:
                raise ValueError("adapter='lora' needs one expert per segment")
            pin_task_gates(self.network, self.n_segments)
        if self.dynamic:
            lookback = foundation.lookback
            generator = None if random_state is None else torch.Generator().manual_seed(
                int(random_state) + 1)
            self.segment_embedding = nn.Parameter(
                torch.randn(self.n_segments, router_features, generator=generator))
            self.window_projection = nn.Linear(lookback, router_features)
        # The frozen computation before the first adapted module is the same for every
        # segment: run it once per window and stack only its output.
        prefix = getattr(type(self.network), "PREFIX_MODULES", None)
        adapted = list(lora_layers(self.network))
        self.shared_prefix = prefix is not None and not any(
            name == p or name.startswith(p + ".") for name in adapted for p in prefix)
        self.register_buffer("active", torch.ones(self.n_segments, dtype=torch.bool),
                             persistent=False)
        self._frozen: list[tuple[torch.Tensor, int, int, int, torch.Tensor]] = []

    def train(self, mode: bool = True) -> SegmentAdapter:
        """Train mode; with ``foundation_dropout=False`` for the adapters only (the frozen
        network stays as at inference: no dropout, no random draws)."""
        super().train(mode)
        if not self.foundation_dropout:
            self.network.eval()
            for layer in lora_layers(self.network).values():
                layer.train(mode)
        return self

    def training_segments(self) -> torch.Tensor:
        """The segments of the next training step: the active ones, or ``segments_per_step``
        of them drawn at random (torch's global generator, seeded by the fit)."""
        active = self.active_segments()
        m = self.segments_per_step
        if m is None or len(active) <= m:
            return active
        pick = torch.randperm(len(active))[:m]
        return active[pick.to(active.device)].sort().values

    # -- per-segment freezing ----------------------------------------------------------------
    def _segment_slices(self, k: int):
        """(parameter, dim, start, stop) of the parameters owned by segment ``k`` alone."""
        if self.dynamic:
            yield self.segment_embedding, 0, k, k + 1
            return
        for layer in lora_layers(self.network).values():
            if self.adapter == "mola":
                yield layer.router.task_logits, 0, k, k + 1
            else:
                r = layer.ranks[k]
                start = sum(layer.ranks[:k])
                yield layer.lora_A, 0, start, start + r
                yield layer.lora_B, 1, start, start + r

    def freeze_segment(self, k: int) -> None:
        """Stop training segment ``k``: its own parameters keep their current values."""
        self.active[k] = False
        for param, dim, start, stop in self._segment_slices(k):
            saved = param.detach().narrow(dim, start, stop - start).clone()
            self._frozen.append((param, dim, start, stop, saved))

    @torch.no_grad()
    def apply_frozen(self) -> None:
        """Write the frozen values back (Adam's momentum would otherwise move them)."""
        for param, dim, start, stop, saved in self._frozen:
            param.narrow(dim, start, stop - start).copy_(saved)

    def release_segments(self) -> None:
        """Forget the freezing state (after training): every segment is active again."""
        self._frozen = []
        self.active.fill_(True)

    def active_segments(self) -> torch.Tensor:
        return torch.nonzero(self.active).flatten()

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
        """Forecast segments ``segments`` (default all) of windows ``x`` (B, L, C).

        Returns (B, len(segments) * S, C): the segment forecasts concatenated in the given
        order. One batched pass: the window is stacked once per segment with its segment id.
        """
        if self._frozen:
            self.apply_frozen()
        device = x.device
        if segments is None:
            segments = torch.arange(self.n_segments, device=device)
        n, batch = len(segments), x.shape[0]
        ids = segments.to(device).repeat_interleave(batch)
        router_input = None
        if self.dynamic:
            normed, _, _ = InstanceNorm.normalize(x)
            window = self.window_projection(normed.mean(dim=2))  # (B, d)
            router_input = torch.cat([self.segment_embedding.index_select(0, ids),
                                      window.repeat(n, 1)], dim=1)
        with routing(self.network, task_ids=ids, router_input=router_input):
            if self.shared_prefix:
                state = self.network.forward_prefix(x)
                state = [None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))
                         for t in state]
                out = self.network.forward_suffix(*state)  # (n * B, S, C)
            else:
                out = self.network(x.repeat(n, 1, 1))
        steps, channels = out.shape[1], out.shape[2]
        return out.reshape(n, batch, steps, channels).transpose(0, 1).reshape(
            batch, n * steps, channels)


class SegmentEarlyStopping:
    """Per-segment early stopping (a :class:`mola_ts.training.Stopper`).

    Each segment is tracked on its own validation MSE (``metrics["segment_loss"]``); after
    ``patience`` epochs without improvement it stops: it leaves the training loss and its own
    parameters (its mixture logits) freeze, while the shared experts keep training for the
    other segments. Whenever any active segment improves, the adapter weights are saved;
    ``restore`` loads the last saved weights. Training ends when every segment has stopped.

    Parameters
    ----------
    model : SegmentAdapter
        The adapter being trained.
    patience : int
        Epochs without improvement before a segment stops.
    initial_losses : array-like, optional
        Per-segment validation MSE before training (the foundation's); the starting weights
        are then the first saved state, as in the reference implementation.
    """

    def __init__(self, model: SegmentAdapter, patience: int, initial_losses=None):
        self.patience = check_number(patience, "patience", min_val=1)
        k = model.n_segments
        self.best_losses = np.full(k, np.inf) if initial_losses is None else np.asarray(
            initial_losses, dtype=np.float64).copy()
        self.bad_epochs = np.zeros(k, dtype=int)
        self.stopped = np.zeros(k, dtype=bool)
        self.stop_epochs = np.full(k, -1)
        self.initial_losses = self.best_losses.copy()
        self.best_epoch = -1
        self.best_score = float(np.mean(self.best_losses)) if initial_losses is not None \
            else None
        self.best_state = None if initial_losses is None else self._snapshot(model)

    @staticmethod
    def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, epoch: int, metrics: dict, model: nn.Module) -> bool:
        losses = np.asarray(torch.as_tensor(metrics["segment_loss"]).cpu(), dtype=np.float64)
        model.apply_frozen()
        improved = False
        for k in np.flatnonzero(~self.stopped):
            if losses[k] < self.best_losses[k]:
                self.best_losses[k] = losses[k]
                self.bad_epochs[k] = 0
                improved = True
            else:
                self.bad_epochs[k] += 1
                if self.bad_epochs[k] >= self.patience:
                    self.stopped[k] = True
                    self.stop_epochs[k] = epoch
                    model.freeze_segment(int(k))
        if improved:
            self.best_state = self._snapshot(model)
            self.best_epoch = epoch
            self.best_score = float(np.mean(losses))
        return bool(self.stopped.all())

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


class SegmentStopLines:
    """A :func:`mola_ts.training.train` callback writing a stage line when a segment stops."""

    def __init__(self, stopper: SegmentEarlyStopping, verbose):
        self.stopper, self.verbose = stopper, verbose
        self.reported = np.zeros_like(stopper.stopped)

    def __call__(self, epoch: int, record: dict, model: nn.Module) -> bool:
        new = np.flatnonzero(self.stopper.stopped & ~self.reported)
        n = len(self.stopper.stopped)
        for k in new:
            stage(f"segment {k + 1}/{n} stopped after epoch {epoch + 1} (best validation MSE "
                  f"{self.stopper.best_losses[k]:.4g})", self.verbose)
        self.reported |= self.stopper.stopped
        return False


def segment_mse(out: torch.Tensor, target: torch.Tensor, n: int) -> torch.Tensor:
    """MSE of each of the ``n`` segments of forecasts ``out`` (B, n S, C): shape (n,)."""
    batch, _, channels = out.shape
    err = (out - target).pow(2).reshape(batch, n, -1, channels)
    return err.mean(dim=(0, 2, 3))


def segment_loss(model: nn.Module, batch) -> torch.Tensor:
    """Training objective of an adapter: the summed MSE of its active segments (or of the
    ``segments_per_step`` drawn among them, scaled to all), plus the routers' auxiliary losses
    with dynamic routing.

    ``model`` is the :class:`SegmentAdapter`, or its DDP wrapper under torchrun (the forward
    goes through the wrapper).
    """
    adapter: SegmentAdapter = unwrap_model(model)
    x, y = batch
    active = len(adapter.active_segments())
    segments = adapter.training_segments()
    k, n = adapter.n_segments, len(segments)
    out = model(x, segments.to(x.device))
    y = y[..., :out.shape[-1]]  # covariates are read, not forecast
    target = y.reshape(y.shape[0], k, -1, y.shape[2])[:, segments.to(y.device)].reshape(
        out.shape)
    # drawn segments stand for every active one: the sum over them, scaled up to all
    loss = segment_mse(out, target, n).sum() * (active / n)
    if adapter.dynamic:
        loss = loss + collect_aux(adapter.network).loss
    return loss


def segment_metrics(model: SegmentAdapter, batch) -> dict[str, torch.Tensor]:
    """Validation metrics of an adapter: ``loss`` (mean over segments), ``mae`` and the
    per-segment MSE ``segment_loss`` that :class:`SegmentEarlyStopping` tracks."""
    x, y = batch
    out = model(x)
    y = y[..., :out.shape[-1]]
    per_segment = segment_mse(out, y, model.n_segments)
    return {"loss": per_segment.mean(), "mae": (out - y).abs().mean(),
            "segment_loss": per_segment}
