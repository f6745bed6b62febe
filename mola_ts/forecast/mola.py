"""MoLA: a foundation forecaster trained one segment ahead, adapted per segment with LoRA experts.

Pan et al., "Mixture of Low Rank Adaptation with Partial Parameter Sharing for Time Series
Forecasting" (arXiv 2505.17872); see ``specs/forecasting.md``.

1. Foundation: a :class:`~mola_ts.forecast.DirectForecaster` with ``horizon = segment_length``
   (S), trained once and frozen. It serves every horizon that is a multiple of S.
2. Adaptation: the horizon H is cut into K = H / S segments. The frozen foundation gets
   LoRA-MoE layers (:func:`mola_ts.nn.inject`) whose router is a lookup of per-segment logits
   by segment id (``router="task"`` of the shared layer). Segment k's forecast is the adapted
   network routed with id k on the same window; all K segments run in one batched forward
   (the window stacked K times with one id per copy) and are concatenated.

``adapter="lora"`` gives every segment its own expert (step-specific LoRA: one-hot, frozen
gates); ``router="ldmole"`` replaces the static segment logits by LD-MoLE dynamic routing fed
with a learned segment embedding and a projection of the normalised window.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..nn import LoRAMoEConfig, collect_aux, inject, lora_layers, parameter_report, routing
from ..nn.routers import MASKED_LOGIT
from ..training import evaluate, resolve_device, seed_everything, unwrap_model
from .backbones import InstanceNorm
from .neural import DirectForecaster, NeuralForecaster, _check_int

__all__ = ["SegmentAdapter", "SegmentEarlyStopping", "MoLAForecaster"]

ADAPTERS = ("mola", "lora")
SEGMENT_ROUTERS = ("segment", "ldmole")


class SegmentAdapter(nn.Module):
    """A frozen foundation network with LoRA-MoE layers routed by segment id.

    Parameters
    ----------
    foundation : nn.Module
        A backbone mapping (B, L, C) to (B, S, C); deep-copied, never modified.
    n_segments : int
        K, the number of segments (task ids 0..K-1).
    config : LoRAMoEConfig
        Layer config (``router="task"`` with ``n_tasks=K``, or ``"ldmole"``).
    target_modules : str or sequence of str
        Modules to wrap (see :func:`mola_ts.nn.inject`).
    adapter : {"mola", "lora"}
        "lora": expert k belongs to segment k alone (one-hot gates, frozen).
    router_features : int
        With an LD-MoLE config: width of the segment embedding and of the window projection
        (the routing input is their concatenation, ``2 * router_features`` wide).
    random_state : int, optional
        Seed of the adapter initialisation.

    Notes
    -----
    When the backbone exposes ``forward_prefix`` / ``forward_suffix`` and no adapted module
    lies in its ``PREFIX_MODULES`` (the iTransformer and patch backbones with the default
    feed-forward targets), the frozen prefix (normalisation, embedding, first attention block)
    runs once per window and only its output is stacked K times: the same result as stacking
    the window (in eval mode), at a lower cost. In training the K copies then share the
    prefix's dropout mask.
    """

    def __init__(self, foundation: nn.Module, n_segments: int, config: LoRAMoEConfig,
                 target_modules, *, adapter: str = "mola", router_features: int = 16,
                 random_state: int | None = None):
        super().__init__()
        self.n_segments = int(n_segments)
        self.adapter = adapter
        self.network = copy.deepcopy(foundation)
        self.network.eval()
        inject(self.network, target_modules, config, random_state=random_state)
        self.dynamic = config.router != "task"
        if adapter == "lora":
            if config.n_experts != self.n_segments:
                raise ValueError("adapter='lora' needs one expert per segment")
            one_hot = torch.full((self.n_segments, self.n_segments), MASKED_LOGIT)
            one_hot.fill_diagonal_(0.0)
            for layer in lora_layers(self.network).values():
                with torch.no_grad():
                    layer.router.task_logits.copy_(one_hot)
                layer.router.task_logits.requires_grad_(False)
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
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        k = model.n_segments
        self.patience = patience
        self.best_losses = np.full(k, np.inf) if initial_losses is None else np.asarray(
            initial_losses, dtype=np.float64).copy()
        self.bad_epochs = np.zeros(k, dtype=int)
        self.stopped = np.zeros(k, dtype=bool)
        self.stop_epochs = np.full(k, -1)
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


def _segment_mse(out: torch.Tensor, target: torch.Tensor, n: int) -> torch.Tensor:
    batch, _, channels = out.shape
    err = (out - target).pow(2).reshape(batch, n, -1, channels)
    return err.mean(dim=(0, 2, 3))


class MoLAForecaster(NeuralForecaster):
    """MoLA forecaster: one frozen foundation, per-segment Mixture-of-LoRA adaptation.

    Parameters
    ----------
    lookback : int
        Rows of history each forecast reads (L).
    horizon : int
        Steps forecast (H); must be a multiple of ``segment_length``.
    segment_length : int
        S, the steps the foundation forecasts (its head width); K = H / S segments.
    backbone : {"itransformer", "patch", "dlinear"}
        Foundation network (ignored when ``foundation`` is given).
    backbone_params : dict, optional
        Foundation sizes, e.g. ``{"d_model": 128, "d_ff": 128}``.
    adapter : {"mola", "lora"}
        "mola": ``n_experts`` experts per adapted layer shared by all segments, mixed by
        per-segment softmax weights (the paper). "lora": independent (A_k, B_k) per segment.
    n_experts : int
        Experts per adapted layer (P) for "mola" (6 in the reference).
    rank : int
        LoRA rank r of every expert (8 in the reference).
    lora_alpha : float, optional
        LoRA alpha (scale alpha / r). None: alpha = r, i.e. scale 1 as in the reference.
    init_std : float
        Std of the Gaussian A init (B starts at zero, so adaptation starts at the foundation).
    target_modules : str or list of str, optional
        Adapted modules; default: both feed-forward projections of every encoder block
        (the backbone's ``ADAPTER_TARGETS``).
    router : {"segment", "ldmole"}
        "segment": input-independent logits per segment (the paper). "ldmole": LD-MoLE
        dynamic routing from a segment embedding plus the window (beyond the paper).
    foundation : DirectForecaster, optional
        A fitted foundation (``horizon == segment_length``, same lookback and columns) reused
        as is; an unfitted one is cloned and fitted as the foundation. Wrap a fitted one in
        ``sklearn.frozen.FrozenEstimator`` to keep it fitted through ``clone``.
    foundation_epochs, foundation_patience, foundation_lr : foundation training
        Adam, at most 5 epochs, patience 2, lr 5e-4 in the reference.
    epochs, patience, lr : adaptation training
        At most 10 epochs, per-segment patience 3, lr 1e-3 in the reference.
    batch_size, lr_schedule, scale, validation_fraction, device, random_state, verbose :
        As in :class:`~mola_ts.forecast.DirectForecaster` (shared by both stages).
    n_ensemble : int
        K adapters trained with seeds ``random_state + 1000 k`` on the one frozen foundation
        (trained once): a deep ensemble at the cost of K adaptations. The point forecast is
        their mean; 1 (default) is the plain MoLA forecaster.
    uncertainty : {None, "laplace", "noise"}
        Predictive distribution for ``predict_interval`` / ``predict_quantiles`` /
        ``predict_distribution``: "laplace" fits, post hoc, a last-layer Laplace on the
        foundation head of every adapter and segment (with K > 1 the mixture of Laplace
        approximations, uncertainty spec §1); "noise" keeps only the fitted noise (the MAP
        Gaussian, with K > 1 the deep ensemble). None: point forecasts only (the probabilistic
        methods raise a ValueError naming this parameter). Details in
        :mod:`mola_ts.forecast.neural`.
    uncertainty_data : {"train", "validation"}
        Windows the Laplace (curvature, evidence-tuned prior precision and noise) is fitted
        on: the training windows (the Laplace approximation of the training posterior) or the
        validation windows (noise of held-out data).

    Attributes
    ----------
    foundation_ : DirectForecaster
        The fitted foundation (reuse it for other horizons that are multiples of S).
    model_ : SegmentAdapter
        The adapted network (ensemble member 0).
    members_ : list of SegmentAdapter
        The K adapters (``members_[0] is model_``), each holding the frozen foundation weights.
    laplace_ : list of list of LastLayerLaplace or None
        ``laplace_[k][j]``: the Laplace of member k's head on segment j.
    member_seconds_, uncertainty_seconds_ : list of float
        Wall-clock time of each adaptation and of fitting its Laplace approximations.
    uncertainty_skipped_windows_ : int
        Windows left out of the Laplace and noise fit (a variable constant over the lookback).
    n_segments_ : int
        K.
    history_ : list of dict
        Per-epoch adaptation losses (``val_loss`` is the mean over segments).
    segment_val_loss_ : ndarray
        Best validation MSE of each segment (scaled units).
    foundation_seconds_, adapt_seconds_ : float
        Wall-clock time of the two stages (0 for a reused foundation); ``adapt_seconds_``
        sums the K adaptations.

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.forecast import MoLAForecaster
    >>> y = np.sin(np.arange(400) / 5.0)[:, None].repeat(2, axis=1)
    >>> small = {"d_model": 16, "d_ff": 16, "n_heads": 2}
    >>> model = MoLAForecaster(lookback=24, horizon=12, segment_length=4, backbone_params=small,
    ...                        n_experts=2, rank=2, epochs=1, foundation_epochs=1)
    >>> model.fit(y).predict().shape
    (12, 2)

    Five adapters on one foundation, each with a last-layer Laplace: the Laplace mixture.

    >>> model = MoLAForecaster(lookback=24, horizon=12, segment_length=4, backbone_params=small,
    ...                        n_experts=2, rank=2, epochs=1, foundation_epochs=1,
    ...                        n_ensemble=5, uncertainty="laplace").fit(y)
    >>> model.predict_distribution().n_components
    5
    >>> model.predict_quantiles(alpha=[0.1, 0.5, 0.9]).shape
    (12, 6)
    """

    def __init__(self, lookback: int = 96, horizon: int = 96, *, segment_length: int = 24,
                 backbone: str = "itransformer", backbone_params: dict | None = None,
                 adapter: str = "mola", n_experts: int = 6, rank: int = 8,
                 lora_alpha: float | None = None, init_std: float = 0.01,
                 target_modules=None, router: str = "segment", foundation=None,
                 foundation_epochs: int = 5, foundation_patience: int | None = 2,
                 foundation_lr: float = 5e-4, epochs: int = 10, patience: int = 3,
                 lr: float = 1e-3, batch_size: int = 32, lr_schedule: str | None = "halve",
                 scale: bool = True, validation_fraction: float | None = 0.1,
                 n_ensemble: int = 1, uncertainty: str | None = None,
                 uncertainty_data: str = "train",
                 device: str = "cpu", random_state: int | None = 0, verbose: int = 0):
        self.lookback = lookback
        self.horizon = horizon
        self.segment_length = segment_length
        self.backbone = backbone
        self.backbone_params = backbone_params
        self.adapter = adapter
        self.n_experts = n_experts
        self.rank = rank
        self.lora_alpha = lora_alpha
        self.init_std = init_std
        self.target_modules = target_modules
        self.router = router
        self.foundation = foundation
        self.foundation_epochs = foundation_epochs
        self.foundation_patience = foundation_patience
        self.foundation_lr = foundation_lr
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.batch_size = batch_size
        self.lr_schedule = lr_schedule
        self.scale = scale
        self.validation_fraction = validation_fraction
        self.n_ensemble = n_ensemble
        self.uncertainty = uncertainty
        self.uncertainty_data = uncertainty_data
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- checks ------------------------------------------------------------------------------
    def _n_segments(self) -> int:
        s = _check_int("segment_length", self.segment_length, 1)
        self._check_horizon()
        if self.horizon % s:
            raise ValueError(
                f"horizon must be a multiple of segment_length: horizon={self.horizon} is not "
                f"divisible by segment_length={s} (e.g. use horizon={s * max(1, self.horizon // s)}"
                f" or a segment_length dividing {self.horizon})"
            )
        return self.horizon // s

    def _check_training_params(self) -> None:
        super()._check_training_params()
        self._n_segments()
        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        if self.router not in SEGMENT_ROUTERS:
            raise ValueError(f"router must be one of {SEGMENT_ROUTERS}, got {self.router!r}")
        if self.router == "ldmole" and self.adapter != "mola":
            raise ValueError("router='ldmole' mixes shared experts: it needs adapter='mola'")
        _check_int("n_experts", self.n_experts, 1)
        _check_int("rank", self.rank, 1)
        _check_int("foundation_epochs", self.foundation_epochs, 1)

    def _min_fit_rows(self) -> int:
        self._n_segments()
        return super()._min_fit_rows()

    # -- foundation --------------------------------------------------------------------------
    def _foundation_template(self) -> DirectForecaster:
        return DirectForecaster(
            self.lookback, self.segment_length, backbone=self.backbone,
            backbone_params=self.backbone_params, epochs=self.foundation_epochs,
            patience=self.foundation_patience, lr=self.foundation_lr,
            batch_size=self.batch_size, lr_schedule=self.lr_schedule, scale=self.scale,
            validation_fraction=0, device=self.device, random_state=self.random_state,
            verbose=self.verbose)

    def _get_foundation(self, train_values, val_values) -> tuple[DirectForecaster, float]:
        given = self.foundation
        if given is None:
            start = time.perf_counter()
            fnd = self._foundation_template().fit(train_values, y_val=val_values)
            return fnd, time.perf_counter() - start
        inner = getattr(given, "estimator", given)  # sklearn.frozen.FrozenEstimator
        if not isinstance(inner, DirectForecaster):
            raise TypeError(
                f"foundation must be a DirectForecaster (or FrozenEstimator of one), got "
                f"{type(inner).__name__}"
            )
        try:
            check_is_fitted(inner, "model_")
        except NotFittedError:
            start = time.perf_counter()
            fnd = clone(inner).fit(train_values, y_val=val_values)
            elapsed = time.perf_counter() - start
        else:
            fnd, elapsed = inner, 0.0
        if fnd.horizon != self.segment_length or fnd.lookback != self.lookback:
            raise ValueError(
                f"foundation forecasts {fnd.horizon} steps from a lookback of {fnd.lookback}; "
                f"this MoLAForecaster needs segment_length={self.segment_length} and "
                f"lookback={self.lookback}"
            )
        if fnd.n_features_in_ != train_values.shape[1]:
            raise ValueError(
                f"foundation was fitted on {fnd.n_features_in_} columns, y has "
                f"{train_values.shape[1]}"
            )
        return fnd, elapsed

    # -- adaptation --------------------------------------------------------------------------
    def _lora_config(self) -> LoRAMoEConfig:
        k = self._n_segments()
        alpha = float(self.rank if self.lora_alpha is None else self.lora_alpha)
        if self.adapter == "lora":
            return LoRAMoEConfig(n_experts=k, rank=self.rank, alpha=alpha, init="gaussian",
                                 init_std=self.init_std, router="task", n_tasks=k)
        if self.router == "segment":
            return LoRAMoEConfig(n_experts=self.n_experts, rank=self.rank, alpha=alpha,
                                 init="gaussian", init_std=self.init_std, router="task",
                                 n_tasks=k)
        return LoRAMoEConfig(n_experts=self.n_experts, rank=self.rank, alpha=alpha,
                             init="gaussian", init_std=self.init_std, router="ldmole",
                             router_dim=2 * self._router_features)

    _router_features = 16

    def _targets(self, network: nn.Module):
        if self.target_modules is not None:
            return self.target_modules
        targets = getattr(type(network), "ADAPTER_TARGETS", None)
        if targets is None:
            raise ValueError(
                f"the foundation {type(network).__name__} has no default adapter targets; "
                "give target_modules"
            )
        return targets[0] if len(targets) == 1 else "|".join(f"(?:{t})" for t in targets)

    def _build_module(self, member: int = 0) -> SegmentAdapter:
        network = self.foundation_.model_
        seed = self._member_seed(member)
        seed = None if seed is None else seed + 7
        return SegmentAdapter(network, self._n_segments(), self._lora_config(),
                              self._targets(network), adapter=self.adapter,
                              router_features=self._router_features, random_state=seed)

    def _loss(self, model: nn.Module, batch) -> torch.Tensor:
        # model: the SegmentAdapter, or its DDP wrapper under torchrun (forward through it)
        adapter: SegmentAdapter = unwrap_model(model)
        x, y = batch
        segments = adapter.active_segments()
        k, n = adapter.n_segments, len(segments)
        out = model(x, segments.to(x.device))
        target = y.reshape(y.shape[0], k, -1, y.shape[2])[:, segments].reshape(out.shape)
        loss = _segment_mse(out, target, n).sum()
        if adapter.dynamic:
            loss = loss + collect_aux(adapter.network).loss
        return loss

    @staticmethod
    def _val_metrics(model: SegmentAdapter, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        out = model(x)
        per_segment = _segment_mse(out, y, model.n_segments)
        return {"loss": per_segment.mean(), "mae": (out - y).abs().mean(),
                "segment_loss": per_segment}

    def _train_module(self, train_values: np.ndarray, val_values: np.ndarray | None) -> None:
        self.foundation_, self.foundation_seconds_ = self._get_foundation(train_values,
                                                                          val_values)
        self.scaler_ = self.foundation_.scaler_
        self.n_segments_ = self._n_segments()
        members, seconds = [], []
        for k in range(self._n_members()):
            start = time.perf_counter()
            module, result, stopper, report = self._adapt(k, train_values, val_values)
            members.append(module)
            seconds.append(time.perf_counter() - start)
            if k == 0:
                self.n_trainable_parameters_ = report.trainable
                self.n_parameters_ = report.total
                self.history_ = result.history
                self.segment_val_loss_ = None if stopper is None else stopper.best_losses.copy()
                self.segment_stop_epochs_ = None if stopper is None else stopper.stop_epochs + 1
        self.model_ = members[0]
        self.members_ = members
        self.member_seconds_ = seconds
        self._set_timings()

    def _adapt(self, member: int, train_values: np.ndarray, val_values: np.ndarray | None):
        """Train ensemble member ``member``: one adapter on the frozen foundation."""
        seed = self._member_seed(member)
        seed_everything(seed)
        module = self._build_module(member)
        train_set, val_set = self._datasets(train_values, val_values, self.horizon)
        stopper = None
        if val_set is not None:
            device = resolve_device(self.device)
            module.to(device)
            initial = evaluate(module, val_set, self._val_metrics, device=device)
            stopper = SegmentEarlyStopping(module, self.patience, initial["segment_loss"])
        result = self._run_train(module, train_set, val_set, loss_fn=self._loss,
                                 val_fn=self._val_metrics, epochs=self.epochs, lr=self.lr,
                                 patience=None, stopper=stopper, random_state=seed)
        module.release_segments()
        report = parameter_report(module)  # before freezing: counts the trained adapter
        module.eval()
        module.requires_grad_(False)
        return module, result, stopper, report

    def _set_timings(self) -> None:
        self.adapt_seconds_ = float(sum(self.member_seconds_))
        self.train_seconds_ = self.adapt_seconds_ + self.foundation_seconds_

    def _head_network(self, module: SegmentAdapter) -> nn.Module:
        return module.network

    # -- foundation reuse / persistence ------------------------------------------------------
    def _params_to_save(self) -> dict:
        params = super()._params_to_save()
        params["foundation"] = None  # the fitted foundation is saved in the state
        return params

    def _state_to_save(self) -> dict:
        state = super()._state_to_save()
        fnd = state.pop("foundation_")
        state["foundation_"] = {"params": fnd._params_to_save(), "state": fnd._state_to_save()}
        return state

    def _restore_state(self, state: dict) -> None:
        state = dict(state)
        fnd = state.pop("foundation_")
        foundation = DirectForecaster(**fnd["params"])
        foundation._restore_state(fnd["state"])
        self.foundation_ = foundation
        super()._restore_state(state)
