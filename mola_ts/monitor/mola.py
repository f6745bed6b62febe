"""MOLA: the multi-block orthogonal LSTM autoencoder process monitor (monitoring spec §1-§4, §7).

Per block an orthogonal LSTM autoencoder (OLAE, :mod:`.mola_blocks`) encodes windows of the
block's inputs; Hotelling T^2 and the quantile CUSUM W on its codes are fused into a block index
by the Bayesian combination, and the block indices into the global index PFI by the
order-weighted combination (W-BF). Two designs (``design``):

- ``"residual"`` (default): the inputs are the one-step prediction residuals (innovations) of a
  ridge VAR on all the standardised variables, each divided by its out-of-fold standard
  deviation. The predictor follows the slowly wandering level of a plant, so the autoencoders see
  what the level's own dynamics do not explain (spec §7).
- ``"level"``: the first implementation: windows of the standardised levels.

Limits (``limit``): ``"crossfit"`` (default) sets every limit from out-of-fold statistics of
``n_folds`` time-block folds over all the normal data (fold models fitted on the other folds;
the final model on everything); ``"holdout"`` is the first implementation's last
``validation_fraction`` of each run. Explanations live in :mod:`.explain`, the stream in
:mod:`.stream`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..persistence import SaveLoadMixin
from ..training import TrainConfig, resolve_seed
from .base import MonitorMixin
from .blocks import resolve_blocks
from .calibration import calibrated_limit, finite_scores
from .charts import control_limit
from .fusion import OrderWeights
from .mola_blocks import BlockNetwork, OLAEBlock, OLAESpec, train_olae
from .mola_core import NETWORK_PARAMS, SCORING_PARAMS, MOLAEngine, check_mola_params, prepare_runs
from .predictor import RidgeVAR
from .stream import MonitorStream

__all__ = ["MOLAMonitor"]


class MOLAMonitor(MOLAEngine, MonitorMixin, SaveLoadMixin, BaseEstimator):
    """Multi-block orthogonal LSTM autoencoder monitor with T^2, quantile CUSUM and W-BF fusion.

    Sign convention: :meth:`score_samples` is the fused fault score (higher = more abnormal):
    with ``fusion_scale="evidence"`` (default) the fault evidence ``-log10(1 - PFI)``, computed
    without rounding so it does not pin at PFI = 1; with ``"probability"`` PFI itself.
    :meth:`decision_function` is ``score - threshold_``; :meth:`predict` is 1 where positive.
    Every score is finite. The first rows of a run (``window - 1``, plus ``predictor_order`` for
    the residual design) are *warm-up* rows: ``warmup`` is 1, every statistic and the score are
    0, and they never alarm. A sample beyond the widened training range of the inputs
    (``range_margin``) is flagged ``out_of_range`` and alarms with a large finite score (PFI 1;
    at least ten times the threshold on the evidence scale).

    Parameters
    ----------
    blocks : {"auto", "tep", "tep_loops", "correlation", "single"}, mapping or list of lists, \
default="auto"
        The variable partition (:mod:`mola_ts.monitor.blocks`). ``"auto"``: for the 52 TEP
        variables the unit partition (``"tep"``) in the level design and the control-loop
        partition (``"tep_loops"``: each valve with its measurement) in the residual design,
        otherwise the correlation clustering.
    n_blocks : int, default=4
        Blocks of the ``"correlation"`` partition.
    design : {"residual", "level"}, default="residual"
        What the autoencoders see (see the module docstring).
    input_transform : {"none", "asinh"}, default="none"
        ``"asinh"`` passes the inputs through ``arcsinh`` (non-saturating: logarithmic tails).
    window : int, default=5
        Samples per window; a window is scored at its last sample (causal).
    hidden_size : int, default=16
        LSTM hidden size of encoder and decoder.
    code_size : int, default=4
        Latent code size; a block gets ``q = min(block size, code_size)``.
    ortho_weight, ortho_target : float, {"codes", "weights", "both"}, default=1.0, "codes"
        Orthogonality penalty of the OLAE loss (spec §2).
    epochs, batch_size, lr, patience : int, int, float, int, default=60, 32, 1e-3, 10
        Adam training with early stopping on the last ``validation_fraction`` of each fit run.
    validation_fraction : float, default=0.3
        Share of each (fold's) run kept for early stopping; with ``limit="holdout"`` it also
        sets every limit (the first implementation).
    n_ensemble : int, default=1
        Networks per block (seeds ``random_state + b + 1000 k``); their statistics are averaged.
    predictor_order, predictor_ridge : int, float, default=1, 1.0
        The ridge VAR(p) of the residual design (on standardised variables).
    limit : {"crossfit", "holdout"}, default="crossfit"
        Where the limits come from (see the module docstring).
    n_folds : int, default=2
        Time-block folds of ``limit="crossfit"`` (>= 2; K + 1 models are trained).
    alpha : float, default=0.01
        Significance of every limit and the fault prior of the Bayesian combination.
    n_bins, cusum_allowance : int, float, default=10, 0.15
        Quantile CUSUM bins per code feature and allowance (share of ``q (m - 1)``; the chart
        remembers about ``1 / cusum_allowance`` samples in control). The first implementation
        used 0.5, which forgets too fast to accumulate the small persistent shifts that
        residuals show.
    code_statistics : {"holdout", "fit"}, default="holdout"
        Codes that set the T^2 mean/covariance and the CUSUM bins: of the early-stopping
        windows (no gradient step saw them, so new normal codes fall in the bins as often) or
        of the windows the networks were trained on (the first implementation).
    use_spe : bool, default=False
        Fuse the SPE of the last sample too (the decoder is skipped when False).
    limit_method : {"empirical", "kde"}, default="empirical"
    threshold_scale : float, default=1.0
        The threshold is this times the (1 - alpha) quantile of the calibration scores.
    range_margin : float or None, default=1.0
        Out-of-range guard: an input beyond ``[min - m (max - min), max + m (max - min)]`` of
        its training values alarms (``None``: off).
    fusion_scale : {"evidence", "probability"}, default="evidence"
        Scale of the block indices and of the score: the fault evidence ``-log10(1 - BIC)``
        (does not saturate) or the BIC probability of the paper and the first implementation.
    fusion_gamma, base_weight, episode_reset : float, float, int, default=0.5, 0.1, 10
        W-BF order weights (spec §4).
    random_state : int, numpy RandomState or Generator, or None, default=0
        One int seed (``seed_``) is drawn from it at fit; the networks use ``seed_ + b +
        1000 k``. Only an int makes two fits give the same model.
    device : str, default="cpu"
        Training device; scoring is float64 numpy on the CPU.
    n_threads : int or None, default=1
        torch CPU threads while training (restored afterwards).
    verbose : int, default=0

    Attributes
    ----------
    blocks_, block_kind_ : the partition used.
    limits_ : dict
        ``limits_[block]["T2" | "W" | "SPE" | "index"]`` and ``limits_["PFI"]`` (= threshold_).
    threshold_ : float
        The score's alarm threshold.
    limit_info_ : dict
        Support of the threshold (:func:`~mola_ts.monitor.calibration.calibrated_limit`).
    block_states_ : list of dict
        The final model's blocks (:meth:`OLAEBlock.to_state`).
    fold_states_ : list of dict
        Per cross-fit fold: its segments and its model (what it was fitted on is ``fit``).
    validation_statistics_ : dict
        The out-of-fold (or held-out) values behind the limits.
    seed_ : int
        The seed drawn from ``random_state`` at fit.
    decision_scores_, labels_ : ndarray of shape (n_training_samples,)
        pyod's attributes: ``score_samples`` and alarms (1) of the training runs (in-sample,
        concatenated; see :class:`~mola_ts.monitor.base.MonitorMixin`).

    Examples
    --------
    >>> from mola_ts.data import load_tep
    >>> from mola_ts.monitor import MOLAMonitor
    >>> monitor = MOLAMonitor(epochs=5).fit(load_tep(0, "train"))  # doctest: +SKIP
    >>> alarms = monitor.predict(load_tep(1, "test"))  # doctest: +SKIP
    """

    _scoring_params = SCORING_PARAMS
    _probability_columns = ("PFI", "score")
    _refit_hint = ("call recalibrate(X) for the calibration settings or fit for the network "
                   "settings")

    def __init__(self, blocks: Any = "auto", n_blocks: int = 4, design: str = "residual",
                 input_transform: str = "none", window: int = 5, hidden_size: int = 16,
                 code_size: int = 4,
                 ortho_weight: float = 1.0, ortho_target: str = "codes", epochs: int = 60,
                 batch_size: int = 32, lr: float = 1e-3, patience: int = 10,
                 validation_fraction: float = 0.3, n_ensemble: int = 1,
                 predictor_order: int = 1, predictor_ridge: float = 1.0,
                 limit: str = "crossfit", n_folds: int = 2, alpha: float = 0.01,
                 n_bins: int = 10, cusum_allowance: float = 0.15,
                 code_statistics: str = "holdout", use_spe: bool = False,
                 limit_method: str = "empirical", threshold_scale: float = 1.0,
                 range_margin: float | None = 1.0, fusion_scale: str = "evidence",
                 fusion_gamma: float = 0.5, base_weight: float = 0.1, episode_reset: int = 10,
                 random_state: int | None = 0, device: str = "cpu", n_threads: int | None = 1,
                 verbose: int = 0):
        self.blocks = blocks
        self.n_blocks = n_blocks
        self.design = design
        self.input_transform = input_transform
        self.window = window
        self.hidden_size = hidden_size
        self.code_size = code_size
        self.ortho_weight = ortho_weight
        self.ortho_target = ortho_target
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.n_ensemble = n_ensemble
        self.predictor_order = predictor_order
        self.predictor_ridge = predictor_ridge
        self.limit = limit
        self.n_folds = n_folds
        self.alpha = alpha
        self.n_bins = n_bins
        self.cusum_allowance = cusum_allowance
        self.code_statistics = code_statistics
        self.use_spe = use_spe
        self.limit_method = limit_method
        self.threshold_scale = threshold_scale
        self.range_margin = range_margin
        self.fusion_scale = fusion_scale
        self.fusion_gamma = fusion_gamma
        self.base_weight = base_weight
        self.episode_reset = episode_reset
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None) -> MOLAMonitor:
        """Fit on in-control data.

        Parameters
        ----------
        X : DataFrame or ndarray (n_samples, n_variables), or a list of them
            Normal operating data in time order; a list holds independent runs with the same
            columns (windows, lags and folds never bridge two runs).
        y : ignored
        """
        check_mola_params(self)
        data = prepare_runs(self, X)
        self.seed_ = resolve_seed(self.random_state)
        runs = data["runs"]
        self.feature_names_ = list(runs.columns)
        self.named_features_ = bool(runs.named)
        self.n_features_in_ = len(runs.columns)
        if runs.named:
            self.feature_names_in_ = np.asarray(runs.columns, dtype=object)
        self.mean_, self.scale_ = data["mean"], data["scale"]
        self.design_ = self.design
        std = data["std_runs"]
        plan = self._plan([len(r) for r in std])
        if self.design == "residual":
            self.residual_scale_ = self._residual_scale(std, plan)
        previous_threads = torch.get_num_threads()
        if self.n_threads is not None:
            torch.set_num_threads(int(self.n_threads))
        try:
            cores = [self._train_core(std, fit, held, runs.columns) for fit, held in plan]
        finally:
            torch.set_num_threads(previous_threads)
        final = cores[-1]
        self.blocks_ = {b.name: [runs.columns[j] for j in b.columns] for b in final["blocks"]}
        self.block_kind_ = final["kind"]
        self.predictor_state_ = (None if final["predictor"] is None
                                 else final["predictor"].get_state())
        self.block_states_ = [b.to_state() for b in final["blocks"]]
        self.training_history_ = final["history"]
        self.fold_states_ = [
            {"fit": [list(map(int, (s.run, s.start, s.stop))) for s in fit],
             "held_out": [list(map(int, (s.run, s.start, s.stop))) for s in held],
             "predictor": None if c["predictor"] is None else c["predictor"].get_state(),
             "blocks": [b.to_state() for b in c["blocks"]]}
            for (fit, held), c in zip(plan[:-1], cores[:-1], strict=True)]  # the fold models
        self.network_params_ = self._network_params()
        inputs = np.concatenate([self._inputs(final, std[s.run][s.start:s.stop])
                                 for s in plan[-1][0]])
        self.training_range_ = np.stack([inputs.min(axis=0), inputs.max(axis=0)])
        self._calibrate(std, plan, cores)
        self._remember_scoring_params()
        self._set_training_scores(data["runs"])
        return self

    def recalibrate(self, X) -> MOLAMonitor:
        """Redo the code statistics and every limit of :meth:`fit` with the current parameters.

        The trained networks (final and fold models) are kept; ``X`` must be the data
        :meth:`fit` was called with (checked through the mean). For the settings that do not
        shape the networks: ``alpha``, ``n_bins``, ``cusum_allowance``, ``use_spe``,
        ``limit_method``, ``threshold_scale``, ``fusion_scale``, ``fusion_gamma``,
        ``base_weight``, ``episode_reset``.
        """
        check_is_fitted(self)
        check_mola_params(self)
        current = self._network_params()
        saved = getattr(self, "network_params_", {})
        changed = [k for k in NETWORK_PARAMS if k in saved and current[k] != saved[k]]
        if changed:
            raise ValueError(f"recalibrate keeps the trained networks, but {changed} changed "
                             "since fit; call fit instead")
        data = prepare_runs(self, X)
        if data["mean"].shape != self.mean_.shape or not np.allclose(
                data["mean"], self.mean_, rtol=1e-12, atol=1e-12 * np.abs(self.mean_).max()):
            raise ValueError("recalibrate needs the data fit was called with (it has another "
                             "mean); call fit for new data")
        std = data["std_runs"]
        plan = self._plan([len(r) for r in std])
        cores = [self._core_from_state(s) for s in getattr(self, "fold_states_", [])]
        cores.append(self._core_from_state({"predictor": getattr(self, "predictor_state_", None),
                                            "blocks": self.block_states_}))
        for (fit, _), core in zip(plan, cores, strict=True):
            self._fit_core_statistics(core, std, fit)
        self.block_states_ = [b.to_state() for b in cores[-1]["blocks"]]
        for state, core in zip(getattr(self, "fold_states_", []), cores, strict=False):
            state["blocks"] = [b.to_state() for b in core["blocks"]]
        self._calibrate(std, plan, cores)
        self._remember_scoring_params()
        self._set_training_scores(data["runs"])
        return self

    def _network_params(self) -> dict[str, Any]:
        """The parameters that shape the networks; a generator ``random_state`` as ``seed_``."""
        params = self.get_params(deep=False)
        out = {k: params[k] for k in NETWORK_PARAMS}
        if isinstance(out.get("random_state"), (np.random.RandomState, np.random.Generator)):
            out["random_state"] = int(self.seed_)
        return out

    # ------------------------------------------------------------------ fit internals
    def _fit_windows(self, core: dict, std: list[np.ndarray], fit) -> tuple[np.ndarray, ...]:
        """Training and early-stopping windows of a model's inputs on its fit segments."""
        train_parts, val_parts = [], []
        w = self.window
        for s in fit:
            inputs = self._inputs(core, std[s.run][s.start:s.stop])
            if self.limit == "holdout":  # the first implementation: held-out rows stop early
                train_parts.append(self._windows(inputs))
                continue
            cut = len(inputs) - int(round(self.validation_fraction * len(inputs)))
            train_parts.append(self._windows(inputs[:cut]))
            val_parts.append(self._windows(inputs[max(0, cut - (w - 1)):]))
        if self.limit == "holdout":
            for run in std:
                cut = len(run) - int(round(self.validation_fraction * len(run)))
                history = run[max(0, cut - (w - 1) - self._lags()):]
                val_parts.append(self._windows(self._inputs(core, history)))
        return np.concatenate(train_parts), np.concatenate(val_parts)

    def _train_core(self, std, fit, held, columns) -> dict:
        """Train one model (predictor, blocks, code statistics) on the ``fit`` segments."""
        core: dict[str, Any] = {"predictor": None}
        if self.design == "residual":
            core["predictor"] = RidgeVAR(self.predictor_order, self.predictor_ridge).fit(
                [std[s.run][s.start:s.stop] for s in fit])
        train_w, val_w = self._fit_windows(core, std, fit)
        max_q = min(self.code_size, len(columns))
        need_val = 10 if self.limit == "holdout" else 2  # hold-out windows set limits too
        if len(train_w) < max(2 * max_q + 2, self.n_bins, 10) or len(val_w) < need_val:
            raise ValueError(
                f"X gives a model {len(train_w)} training and {len(val_w)} early-stopping "
                f"windows of {self.window} samples; at least {max(2 * max_q + 2, self.n_bins, 10)}"
                f" and {need_val} are needed (more data, a shorter window or fewer n_folds)")
        blocks = self.blocks
        if isinstance(blocks, str) and blocks == "auto" and self.design == "residual" \
                and resolve_blocks("auto", columns, X=train_w[:, -1])[1] == "tep":
            blocks = "tep_loops"  # a residual breaks inside a control loop (training runs)
        positions, core["kind"] = resolve_blocks(blocks, columns, X=train_w[:, -1],
                                                 n_blocks=self.n_blocks)
        blocks, history = [], {}
        spec = OLAESpec(self.hidden_size, self.code_size, self.window, self.ortho_weight,
                        self.ortho_target)
        config = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                             patience=self.patience, device=self.device)
        for b, (name, cols) in enumerate(positions.items()):
            nets, hists = [], []
            for k in range(self.n_ensemble):
                seed = self.seed_ + b + 1000 * k
                weights, hist = train_olae(train_w[:, :, cols], val_w[:, :, cols], spec,
                                           config, seed)
                nets.append(BlockNetwork(weights, self.window))
                hists.append(hist)
            blocks.append(OLAEBlock(name, list(cols), nets))
            history[name] = hists[0] if self.n_ensemble == 1 else hists
            if self.verbose:
                print(f"[MOLA] block {name}: {len(cols)} variables, {len(hists[0])} epochs, "
                      f"held-out MSE {hists[0][-1].get('val_loss', float('nan')):.4f}",
                      flush=True)
        core["blocks"], core["history"] = blocks, history
        self._fit_core_statistics(core, std, fit, (train_w, val_w))
        return core

    def _fit_core_statistics(self, core, std, fit, windows=None) -> None:
        """T^2 and CUSUM reference of every block: codes of the training windows, or with
        ``code_statistics="holdout"`` of the early-stopping windows (no gradient step saw them)."""
        train_w, val_w = self._fit_windows(core, std, fit) if windows is None else windows
        reference = val_w if self.code_statistics == "holdout" else train_w
        for block in core["blocks"]:
            block.fit_statistics(reference, self.n_bins, self.cusum_allowance)

    def _core_from_state(self, state: dict) -> dict:
        pred = state.get("predictor")
        return {"predictor": None if pred is None else RidgeVAR.from_state(
            pred, self.predictor_order, self.predictor_ridge),
            "blocks": [OLAEBlock.from_state(b, self.window) for b in state["blocks"]]}

    def _calibrate(self, std, plan, cores) -> None:
        """Every limit from the statistics of the scored (out-of-fold) segments."""
        raws = []
        for (_, held), core in zip(plan, cores, strict=True):
            for s in held:
                start = max(0, s.start - self._history())
                raw, warm = self._raw_levels(core, std[s.run][start:s.stop], s.start - start,
                                             self._init_cusums(core["blocks"]))[:2]
                raws.append({k: v[~warm] for k, v in raw.items()})
        names = [b.name for b in cores[-1]["blocks"]]
        levels = self._levels_used()
        pooled = {lev: np.concatenate([r[lev] for r in raws]) for lev in levels}
        limits = {name: {lev: self._limit(pooled[lev][:, bi]) for lev in levels}
                  for bi, name in enumerate(names)}
        self.limits_ = limits
        indices = [self._block_indices(r) for r in raws]
        pooled_index = np.concatenate(indices)
        for bi, name in enumerate(names):
            limits[name]["index"] = self._limit(pooled_index[:, bi])
        scores, pfis = [], []
        for index in indices:
            weights = OrderWeights(len(names), self.fusion_gamma, self.base_weight,
                                   self.episode_reset)
            pfi, score, _ = self._fuse_blocks(index, weights, np.ones(len(index), dtype=bool))
            scores.append(score)
            pfis.append(pfi)
        limit, self.limit_info_ = calibrated_limit(scores, self.alpha,
                                                   method=self.limit_method,
                                                   what="MOLA's fused score")
        self.threshold_ = float(self.threshold_scale) * limit
        self.limits_["PFI"] = self.threshold_
        self.n_validation_samples_ = int(sum(len(s) for s in scores))
        self.validation_statistics_ = {
            name: {**{lev: pooled[lev][:, bi] for lev in levels},
                   "index": pooled_index[:, bi]} for bi, name in enumerate(names)}
        self.validation_statistics_["PFI"] = np.concatenate(pfis)
        self.validation_statistics_["score"] = finite_scores(np.concatenate(scores))
        self._fault_calibrations = {}
        self._cache = None

    def _limit(self, values: np.ndarray) -> float:
        limit = control_limit(values, self.alpha, self.limit_method)
        return limit if limit > 0 else float(np.finfo(np.float64).tiny)

    # ------------------------------------------------------------------ scoring
    def stream(self, missing: str = "hold", max_hold: int = 10, on_stale: str = "flag"
               ) -> MonitorStream:
        """A fresh sample-by-sample scorer (see :class:`~mola_ts.monitor.MonitorStream`)."""
        check_is_fitted(self)
        self._check_scoring_params()
        return MonitorStream(self, missing=missing, max_hold=max_hold, on_stale=on_stale)

    def statistics(self, X) -> pd.DataFrame:
        """Every level with its limit, one row per sample of the finite run ``X``.

        Columns per block ``b``: ``b.T2``, ``b.W`` (and ``b.SPE`` with ``use_spe``),
        ``b.index``, each followed by its ``_limit``, and ``b.weight`` (W-BF); then ``PFI``,
        ``score``, ``score_limit``, ``alarm``, ``warmup``, ``out_of_range`` and the stream's
        data-quality columns. Equal, bit for bit, to feeding ``X`` row by row to :meth:`stream`.
        """
        series = self._check_X(X, min_rows=1, what_for="scoring")
        return MonitorStream(self)._score(series.values, series.index)

    def score_samples(self, X) -> np.ndarray:
        """The fused fault score of every sample (higher = more abnormal; 0 in warm-up)."""
        return self.statistics(X)["score"].to_numpy()

    def _held_out_scores(self) -> np.ndarray:
        """The out-of-fold (or held-out) scores that set the threshold."""
        held = self.validation_statistics_
        return held.get("score", held["PFI"])

    def contributions(self, X, statistic: str = "SPE", n_steps: int = 32) -> pd.DataFrame:
        """Per-variable contributions to a block statistic (see :mod:`.explain`)."""
        from .explain import mola_contributions

        return mola_contributions(self, X, statistic, n_steps)

    # ------------------------------------------------------------------ persistence
    def _restore_state(self, state: dict[str, Any]) -> None:
        super()._restore_state(state)
        if "design_" not in state:  # a file of the first implementation: its design
            self.design, self.limit, self.fusion_scale = "level", "holdout", "probability"
            self.code_statistics = "fit"
            self.design_ = "level"
            self.predictor_state_ = None
        self._cache = None

