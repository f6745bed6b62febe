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

This module owns the estimator :class:`MoLAForecaster`; the adapted network, its objective and
per-segment early stopping are in :mod:`mola_ts.forecast.adapters`.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..data import WindowDataset, check_number
from ..nn import AllocationPlan, LoRAMoEConfig, parameter_report
from ..training import evaluate, resolve_device, seed_everything, stage, train
from .adapters import (
    SegmentAdapter,
    SegmentEarlyStopping,
    SegmentStopLines,
    segment_loss,
    segment_metrics,
)
from .covariates import share_layout
from .diversity import DiversityMixin
from .fitting import freeze
from .layers import LAYER_ROUTERS, check_layers, layer_config, layer_plan, search_segment_plan
from .neural import DirectForecaster, NeuralForecaster
from .segments import RolloutMixin, mean_segment_history, never_improved

__all__ = ["MoLAForecaster"]

ADAPTERS = ("mola", "lora")
SEGMENT_ROUTERS = LAYER_ROUTERS


class MoLAForecaster(DiversityMixin, RolloutMixin, NeuralForecaster):
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
    router : {"segment", "topk", "ldmole"}
        "segment": input-independent logits per segment (the paper). "topk" / "ldmole":
        a top-k softmax gate / LD-MoLE dynamic routing from a segment embedding plus the
        window (beyond the paper).
    layers : dict, optional
        Every other option of the LoRA-MoE layers, as plain data: router and ``top_k``,
        allocation ``plan`` (uniform, MoLA presets such as ``"mola2468"``, HILO groups,
        ``"guilomo"``: a GuiLoMo search run on the training windows), MoSLD ``shared_A`` and
        ``dropconnect``, LoRA ``dropout``, ``n_experts`` and ``rank``. None: the paper's
        layers. The keys and their checks: :mod:`mola_ts.forecast.layers`.
    foundation : DirectForecaster, optional
        A fitted foundation (``horizon == segment_length``, same lookback and columns) reused
        as is; an unfitted one is cloned and fitted as the foundation. Wrap a fitted one in
        ``sklearn.frozen.FrozenEstimator`` to keep it fitted through ``clone``.
    foundation_epochs, foundation_patience, foundation_lr : foundation training
        Adam, at most 5 epochs, patience 2, lr 5e-4 in the reference.
    epochs, patience, lr : adaptation training
        At most 10 epochs, per-segment patience 3, lr 1e-3 in the reference.
    segments_per_step : int, optional
        Adaptation cost: every training step trains this many of the active segments, drawn
        at random (one stacked forward of that many copies of the frozen network instead of
        K), the loss scaled to stand for all of them; validation and early stopping still
        see every segment. None (default): every segment at every step, as in the paper.
    validation_stride : int
        Adaptation cost: the per-segment early stopping reads every n-th validation window
        (1, the default: every window, as in the paper).
    foundation_dropout : bool
        Whether the frozen foundation's own dropout stays on while the adapters train (True,
        the default: ``train()`` reaches every module, as in a plain fine-tuning loop). False
        runs the frozen network as at inference during adaptation (no dropout, no random
        draws in it; about a quarter less CPU per epoch); the adapters' own dropout and
        DropConnect still follow ``train()``.
    batch_size, lr_schedule, scale, validation_fraction, calendar, device, random_state, verbose :
        As in :class:`~mola_ts.forecast.DirectForecaster` (shared by both stages; covariates
        from ``fit(y, X=...)`` and ``calendar`` reach the foundation as covariate tokens).
    n_ensemble : int
        K adapters trained with seeds ``random_state + 1000 k`` on the one frozen foundation
        (trained once): a deep ensemble at the cost of K adaptations. The point forecast is
        their mean; 1 (default) is the plain MoLA forecaster.
    diversity : {"adapters", "bootstrap", "foundations"}
        How the members differ: seeds alone, bootstrap-resampled windows, or one foundation
        each (a true deep ensemble); see :mod:`mola_ts.forecast.diversity`.
    uncertainty : {None, "laplace", "noise"}
        Predictive distribution for ``predict_interval`` / ``predict_quantiles`` /
        ``predict_distribution``: "laplace" fits, post hoc, each adapter's own head per
        segment and its last-layer Laplace (with K > 1 the mixture of Laplace
        approximations, uncertainty spec §1); "noise" keeps only the fitted noise (the MAP
        Gaussian, with K > 1 the deep ensemble). None: point forecasts only (the probabilistic
        methods raise a ValueError naming this parameter). Details in
        :mod:`mola_ts.forecast.predictive`.
    uncertainty_data : {"train", "validation"}
        Windows the Laplace (curvature, evidence-tuned prior precision and noise) is fitted
        on: the training windows (the Laplace approximation of the training posterior) or the
        validation windows (noise of held-out data).
    conformal : {"auto", "split", "adaptive", None}
        Conformal correction of the intervals on the validation windows: "auto" (default:
        split or adaptive, whichever covers the second half of the validation windows better
        when calibrated on the first), "split", "adaptive" (learns from ``update``) or None;
        see :mod:`mola_ts.forecast.calibrated`.

    Attributes
    ----------
    foundation_ : DirectForecaster
        The fitted foundation (reuse it for other horizons that are multiples of S). One this
        fit trained has the user's column names and forecasts from the end of ``y``.
    layers_ : dict
        The resolved layer configuration (every key of ``layers``, defaults filled in).
    layer_plan_ : dict or None
        The allocation plan the adapters were built from (``AllocationPlan.to_dict()``; with
        ``plan="guilomo"`` the searched one), None for the uniform plan.
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
        Per-epoch adaptation losses, both the mean over segments (scaled units):
        ``train_loss`` over the segments still training that epoch, ``val_loss`` over all.
    rollout_segments_ : list of int
        Segments adaptation never improved over their starting point (a
        :class:`~mola_ts.forecast.DegenerateSegmentsWarning` says which) whose forecasts come
        from the foundation rolled out recursively, because its validation loss was lower than
        the adapter's. Usually empty.
    unimproved_segments_ : list of int
        Segments whose adaptation never beat their starting point on the validation rows
        (a warning when that is every segment; a stage line otherwise).
    rollout_val_loss_ : ndarray of shape (n_segments,) or None
        The roll-out's validation loss per segment, where that comparison was made.
    seed_ : int
        The seed drawn from ``random_state`` at fit (an int is used as it is).
    segment_val_loss_ : ndarray
        Best validation MSE of each segment (scaled units).
    foundation_seconds_, adapt_seconds_ : float
        Wall-clock time of the two stages (0 for a reused foundation); ``adapt_seconds_``
        sums the K adaptations.

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.forecast import MoLAForecaster
    >>> y = np.sin(np.arange(160) / 5.0)[:, None].repeat(2, axis=1)
    >>> tiny = {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 8}
    >>> model = MoLAForecaster(lookback=12, horizon=8, segment_length=4, backbone_params=tiny,
    ...                        n_experts=2, rank=2, epochs=1, foundation_epochs=1)
    >>> model.fit(y).predict().shape
    (8, 2)

    Three adapters on that foundation (reused as it is), each with a last-layer Laplace: the
    Laplace mixture.

    >>> mixture = MoLAForecaster(lookback=12, horizon=8, segment_length=4,
    ...                          foundation=model.foundation_, n_experts=2, rank=2, epochs=1,
    ...                          n_ensemble=3, uncertainty="laplace").fit(y)
    >>> mixture.foundation_ is model.foundation_, mixture.predict_distribution().n_components
    (True, 3)
    >>> mixture.predict_quantiles(alpha=[0.1, 0.5, 0.9]).shape
    (8, 6)
    """

    def __init__(self, lookback: int = 96, horizon: int = 96, *, segment_length: int = 24,
                 backbone: str = "itransformer", backbone_params: dict | None = None,
                 adapter: str = "mola", n_experts: int = 6, rank: int = 8,
                 lora_alpha: float | None = None, init_std: float = 0.01,
                 target_modules=None, router: str = "segment", layers: dict | None = None,
                 foundation=None,
                 foundation_epochs: int = 5, foundation_patience: int | None = 2,
                 foundation_lr: float = 5e-4, epochs: int = 10, patience: int = 3,
                 lr: float = 1e-3, segments_per_step: int | None = None,
                 validation_stride: int = 1, foundation_dropout: bool = True,
                 batch_size: int = 32, lr_schedule: str | None = "halve",
                 scale: bool = True, validation_fraction: float | None = 0.1,
                 n_ensemble: int = 1, diversity: str = "adapters",
                 uncertainty: str | None = None,
                 uncertainty_data: str = "train", calendar=None,
                 conformal: str | None = "auto",
                 device: str = "cpu", random_state=0, verbose: int = 0):
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
        self.layers = layers
        self.foundation = foundation
        self.foundation_epochs = foundation_epochs
        self.foundation_patience = foundation_patience
        self.foundation_lr = foundation_lr
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.segments_per_step = segments_per_step
        self.validation_stride = validation_stride
        self.foundation_dropout = foundation_dropout
        self.batch_size = batch_size
        self.lr_schedule = lr_schedule
        self.scale = scale
        self.validation_fraction = validation_fraction
        self.n_ensemble = n_ensemble
        self.diversity = diversity
        self.uncertainty = uncertainty
        self.uncertainty_data = uncertainty_data
        self.calendar = calendar
        self.conformal = conformal
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- checks ------------------------------------------------------------------------------
    def _n_segments(self) -> int:
        s = check_number(self.segment_length, "segment_length", min_val=1)
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
        self._diversity()
        if self.adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        if self.router not in SEGMENT_ROUTERS:
            raise ValueError(f"router must be one of {SEGMENT_ROUTERS}, got {self.router!r}")
        if self.router != "segment" and self.adapter != "mola":
            raise ValueError(f"router={self.router!r} mixes shared experts: it needs "
                             "adapter='mola'")
        check_number(self.n_experts, "n_experts", min_val=1)
        check_number(self.rank, "rank", min_val=1)
        self._resolved_layers()
        if self.segments_per_step is not None:
            check_number(self.segments_per_step, "segments_per_step", min_val=1)
        check_number(self.validation_stride, "validation_stride", min_val=1)
        if not isinstance(self.foundation_dropout, (bool, np.bool_)):
            raise ValueError(f"foundation_dropout must be True or False, got "
                             f"{self.foundation_dropout!r}")
        check_number(self.foundation_epochs, "foundation_epochs", min_val=1)

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
            validation_fraction=0, device=self.device, random_state=self.seed_,
            verbose=self.verbose)

    def _train_foundation(self, template, train_values, val_values):
        """Fit ``template`` on the training rows (covariate columns as X); it takes this
        model's columns, index, end of series and covariate layout."""
        stage("foundation: training", self.verbose)
        start, c = time.perf_counter(), self.n_features_in_
        xs = [None if v is None or not self.n_covariates_ else v[:, c:]
              for v in (train_values, val_values)]
        fnd = template.fit(train_values[:, :c], None if val_values is None else
                           val_values[:, :c], X=xs[0], X_val=xs[1])
        share_layout(self, fnd)
        return fnd, time.perf_counter() - start

    def _get_foundation(self, train_values, val_values) -> tuple[DirectForecaster, float]:
        given = self.foundation
        if given is None:
            return self._train_foundation(self._foundation_template(), train_values, val_values)
        inner = getattr(given, "estimator", given)  # sklearn.frozen.FrozenEstimator
        if not isinstance(inner, DirectForecaster):
            raise TypeError(
                f"foundation must be a DirectForecaster (or FrozenEstimator of one), got "
                f"{type(inner).__name__}"
            )
        try:
            check_is_fitted(inner, "model_")
        except NotFittedError:
            fnd, elapsed = self._train_foundation(clone(inner), train_values, val_values)
        else:
            fnd, elapsed = inner, 0.0
        if fnd.horizon != self.segment_length or fnd.lookback != self.lookback:
            raise ValueError(
                f"foundation forecasts {fnd.horizon} steps from a lookback of {fnd.lookback}; "
                f"this MoLAForecaster needs segment_length={self.segment_length} and "
                f"lookback={self.lookback}"
            )
        if (fnd.n_features_in_, getattr(fnd, "n_covariates_", 0)) != \
                (self.n_features_in_, self.n_covariates_):
            raise ValueError(
                f"foundation was fitted on {fnd.n_features_in_} columns and "
                f"{getattr(fnd, 'n_covariates_', 0)} covariates, y has {self.n_features_in_} "
                f"and {self.n_covariates_}"
            )
        return fnd, elapsed

    # -- adaptation --------------------------------------------------------------------------
    def _resolved_layers(self) -> dict:
        return check_layers(self.layers, adapter=self.adapter, params={
            "router": self.router, "n_experts": self.n_experts, "rank": self.rank})

    def _lora_config(self) -> LoRAMoEConfig:
        k = self._n_segments()
        alpha = float(self.rank if self.lora_alpha is None else self.lora_alpha)
        if self.adapter == "lora":
            return LoRAMoEConfig(n_experts=k, rank=self.rank, alpha=alpha, init="gaussian",
                                 init_std=self.init_std, router="task", n_tasks=k)
        resolved = self._resolved_layers()
        alpha = float(resolved["rank"] if self.lora_alpha is None else self.lora_alpha)
        return layer_config(resolved, n_segments=k, alpha=alpha, init_std=self.init_std,
                            router_dim=2 * self._router_features)

    def _layer_spec(self, network: nn.Module):
        """The config or allocation plan the adapted layers are built from."""
        plan = getattr(self, "layer_plan_", None)
        if plan is not None:  # fitted (or loaded): the plan the adapters were trained with
            return AllocationPlan.from_dict(plan)
        config = self._lora_config()
        if self.adapter == "lora":
            return config
        return layer_plan(self._resolved_layers(), config, network, self._targets(network))

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
        network = self._member_foundation(member).model_
        seed = self._member_seed(member) + 7
        return SegmentAdapter(network, self._n_segments(), self._layer_spec(network),
                              self._targets(network), adapter=self.adapter,
                              router_features=self._router_features, random_state=seed,
                              segments_per_step=self.segments_per_step,
                              foundation_dropout=bool(self.foundation_dropout))

    def _train_module(self, train_values: np.ndarray, val_values: np.ndarray | None) -> None:
        self.foundation_, self.foundation_seconds_ = self._get_foundation(train_values,
                                                                          val_values)
        self.scaler_ = self.foundation_.scaler_
        self.n_segments_ = self._n_segments()
        self._fit_member_foundations(train_values, val_values)
        self.layers_ = self._resolved_layers()
        self.layer_plan_ = None
        if self.adapter == "mola" and self.layers_["plan"] == "guilomo":
            start = time.perf_counter()
            self.layer_plan_ = search_segment_plan(self, train_values).to_dict()
            self.search_seconds_ = time.perf_counter() - start
        else:
            spec = self._layer_spec(self.foundation_.model_)
            self.layer_plan_ = spec.to_dict() if isinstance(spec, AllocationPlan) else None
            self.search_seconds_ = 0.0
        members, seconds, stale = [], [], set()
        n_members = self._n_members()
        for k in range(n_members):
            stage(f"adaptation: member {k + 1}/{n_members}, {self.n_segments_} segments",
                  self.verbose)
            start = time.perf_counter()
            module, result, stopper, report = self._adapt(k, train_values, val_values)
            members.append(module)
            seconds.append(time.perf_counter() - start)
            if stopper is not None:
                stale.update(never_improved(stopper.best_losses, stopper.initial_losses))
            if k == 0:
                self.n_trainable_parameters_ = report.trainable
                self.n_parameters_ = report.total
                stops = None if stopper is None else stopper.stop_epochs
                self.history_ = mean_segment_history(result.history, stops, self.n_segments_)
                self.segment_val_loss_ = None if stopper is None else stopper.best_losses.copy()
                self.segment_stop_epochs_ = None if stopper is None else stopper.stop_epochs + 1
        self.model_ = members[0]
        self.members_ = members
        self.member_seconds_ = seconds
        self._set_timings()
        self._check_degenerate(sorted(stale), val_values)

    def _adapt(self, member: int, train_values: np.ndarray, val_values: np.ndarray | None):
        """Train ensemble member ``member``: one adapter on the frozen foundation."""
        seed = self._member_seed(member)
        seed_everything(seed)
        module = self._build_module(member)
        train_set, val_set = self._datasets(train_values, val_values, self.horizon)
        if val_set is not None and self.validation_stride > 1:
            val_set = WindowDataset(self._to_scaled(val_values), self.lookback, self.horizon,
                                    stride=self.validation_stride)
        train_set = self._member_train_set(member, train_set)
        stopper = None
        if val_set is not None:
            device = resolve_device(self.device)
            module.to(device)
            initial = evaluate(module, val_set, segment_metrics, device=device)
            stopper = SegmentEarlyStopping(module, self.patience, initial["segment_loss"])
        config = self._train_config(epochs=self.epochs, lr=self.lr, patience=None,
                                    random_state=seed)
        callbacks = () if stopper is None else (SegmentStopLines(stopper, self.verbose),)
        result = train(module, train_set, segment_loss, config, val_data=val_set,
                       val_fn=segment_metrics, stopper=stopper, callbacks=callbacks)
        module.release_segments()
        report = parameter_report(module)  # before freezing: counts the trained adapter
        return freeze(module), result, stopper, report

    def _set_timings(self) -> None:
        self.adapt_seconds_ = float(sum(self.member_seconds_)) + float(
            getattr(self, "search_seconds_", 0.0))  # a GuiLoMo search is part of adapting
        self.train_seconds_ = self.adapt_seconds_ + self.foundation_seconds_

    def _head_network(self, module: SegmentAdapter) -> nn.Module:
        return module.network

    # -- foundation reuse / persistence ------------------------------------------------------
    def _params_to_save(self) -> dict:
        params = super()._params_to_save()
        params["foundation"] = None  # the fitted foundation is saved in the state
        return params
