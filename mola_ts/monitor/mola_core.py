"""MOLA's scoring engine: inputs, windows, block levels, fusion and the stream protocol.

:class:`MOLAEngine` is the part of :class:`~mola_ts.monitor.MOLAMonitor` that turns raw rows
into statistics: standardise, (residual design) one-step residuals of the ridge VAR scaled by
their out-of-fold standard deviation, windows, per-block T^2 / W (/ SPE) through
:class:`~mola_ts.monitor.mola_blocks.OLAEBlock`, the Bayesian block indices and the W-BF
fusion. It implements the stream protocol of :mod:`mola_ts.monitor.stream`, so ``statistics``
is exactly a fresh stream fed the whole run.

Fusion scales. The Bayesian combination (spec §4) of statistics S_i with limits L_i gives
``P_i(F|x) = 1 / (1 + exp(-l_i))`` with the logit ``l_i = log(alpha/(1-alpha)) + S_i/L_i -
L_i/S_i``. With ``fusion_scale="probability"`` the block index and PFI are the BIC
probabilities, which round to 1 for every strong fault (and for a wandering normal run, which
then cannot be told from a fault). With ``"evidence"`` they are ``-log10(1 - BIC)``, computed
from ``log(1 - P_i) = -log(1 + exp(l_i))`` without rounding: the same order below saturation,
and growing without bound (about ``S/L / ln 10``) above it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import Segment, time_block_folds
from .base import check_finite_scale, check_random_state, validate_fit_runs
from .calibration import finite_scores
from .fusion import OrderWeights, bayesian_combination, fault_probability
from .mola_blocks import OLAEBlock, joint_cusum
from .olae import ORTHO_TARGETS
from .predictor import RidgeVAR, lag_matrix

__all__ = ["MOLAEngine", "check_mola_params", "prepare_runs", "DESIGNS", "LIMITS",
           "FUSION_SCALES", "NETWORK_PARAMS", "SCORING_PARAMS"]

DESIGNS = ("residual", "level")
LIMITS = ("crossfit", "holdout")
FUSION_SCALES = ("evidence", "probability")
_LN10 = float(np.log(10.0))

# the parameters that shape the trained networks (recalibrate must not see them change)
NETWORK_PARAMS = ("blocks", "n_blocks", "design", "input_transform", "window", "hidden_size",
                  "code_size",
                  "ortho_weight", "ortho_target", "epochs", "batch_size", "lr", "patience",
                  "validation_fraction", "n_ensemble", "predictor_order", "predictor_ridge",
                  "limit", "n_folds", "random_state", "device")
# the parameters the scoring of a fitted monitor depends on (statistics() checks them)
SCORING_PARAMS = ("blocks", "n_blocks", "design", "input_transform", "window", "hidden_size",
                  "code_size",
                  "n_ensemble", "predictor_order", "predictor_ridge", "limit", "n_folds",
                  "alpha", "n_bins", "cusum_allowance", "code_statistics", "use_spe",
                  "limit_method",
                  "threshold_scale", "fusion_scale", "fusion_gamma", "base_weight",
                  "episode_reset")


def check_mola_params(m) -> None:
    """Raise a ValueError/TypeError naming the first bad constructor argument of ``m``."""
    def integer(name: str, minimum: int = 1) -> None:
        value = getattr(m, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")

    for name in ("window", "hidden_size", "code_size", "epochs", "batch_size", "patience",
                 "episode_reset", "n_blocks", "n_ensemble", "predictor_order"):
        integer(name)
    integer("n_folds", 2)
    integer("n_bins", 2)
    if m.n_threads is not None:
        integer("n_threads")
    for name, lo, hi in (("validation_fraction", 0.0, 1.0), ("alpha", 0.0, 0.5),
                         ("cusum_allowance", 0.0, 1.0)):
        value = getattr(m, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value < hi:
            raise ValueError(f"{name} must lie in ({lo}, {hi}), got {value!r}")
    for name, choices in (("design", DESIGNS), ("limit", LIMITS),
                          ("fusion_scale", FUSION_SCALES), ("ortho_target", ORTHO_TARGETS),
                          ("limit_method", ("empirical", "kde")),
                          ("code_statistics", ("fit", "holdout")),
                          ("input_transform", ("none", "asinh"))):
        if getattr(m, name) not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {getattr(m, name)!r}")
    for name in ("threshold_scale", "lr"):
        value = getattr(m, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    for name in ("ortho_weight", "predictor_ridge", "fusion_gamma"):
        value = getattr(m, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if isinstance(m.base_weight, bool) or not isinstance(m.base_weight, (int, float)) \
            or not m.base_weight > 0:
        raise ValueError(f"base_weight must be a number > 0, got {m.base_weight!r}")
    if m.range_margin is not None and (
            isinstance(m.range_margin, bool) or not isinstance(m.range_margin, (int, float))
            or not np.isfinite(m.range_margin) or m.range_margin < 0):
        raise ValueError(f"range_margin must be None or a finite number >= 0, got "
                         f"{m.range_margin!r}")
    check_random_state(m.random_state)


def prepare_runs(m, X) -> dict[str, Any]:
    """Validate the runs and standardise them (mean/std of the rows the limits may use:
    every row with ``limit="crossfit"``, the first part of each run with ``"holdout"``)."""
    runs = validate_fit_runs(X, min_rows=m._min_fit_rows(),
                             what_for=f"window={m.window} and the {m.limit} limits need enough "
                                      "windows in every model's fit and scored parts")
    if m.limit == "holdout":
        rows = np.concatenate([v[:len(v) - int(round(m.validation_fraction * len(v)))]
                               for v in runs.values])
    else:
        rows = np.concatenate(runs.values)
    with np.errstate(over="ignore", invalid="ignore"):
        mean, scale = rows.mean(axis=0), rows.std(axis=0, ddof=1)
    check_finite_scale(mean, scale, runs.columns, " in the training rows")
    return {"runs": runs, "mean": mean, "scale": scale,
            "std_runs": [(v - mean) / scale for v in runs.values]}


def _finite(values: np.ndarray) -> np.ndarray:
    """``values`` unchanged when finite, else clipped by :func:`finite_scores` (a fast path)."""
    return values if np.isfinite(values).all() else finite_scores(values)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """``log(sum(exp(x)))`` over the last axis (-inf where all are -inf); exact per row."""
    top = x.max(axis=-1)
    shift = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return shift + np.log(np.einsum("...i->...", np.exp(x - shift[..., None])))


def fault_evidence(stats: np.ndarray, limits: np.ndarray, alpha: float,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """``-log10(1 - BIC)`` of statistics (..., k) against their limits (k,) or (..., k),
    combined over the last axis without rounding."""
    s = np.asarray(stats, dtype=np.float64)
    pos = s > 0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(pos, limits / np.where(pos, s, 1.0), np.inf)
        logit = np.log(alpha / (1.0 - alpha)) + s / limits - inv
        log_q = -np.logaddexp(0.0, logit)
        a = np.where(pos, -inv, -np.inf)
        if weights is not None:
            a = a + np.log(weights)
        total = _logsumexp(a)
        out = (total - _logsumexp(a + log_q)) / _LN10
    out = np.where(np.isneginf(total), 0.0, out)
    return np.maximum(_finite(out), 0.0)


class MOLAEngine:
    """Scoring internals and the stream protocol of :class:`~mola_ts.monitor.MOLAMonitor`."""

    def _min_fit_rows(self) -> int:
        """Rows ``fit`` needs at the least (each model then checks its own windows)."""
        need = int(self.window) + self._lags() + 9 + 2 * int(self.code_size)
        return int(np.ceil(need / min(self.validation_fraction, 1 - self.validation_fraction)))

    def _plan(self, lengths: list[int]) -> list[tuple[tuple[Segment, ...], tuple[Segment, ...]]]:
        """``(fit segments, scored segments)`` of every model; the last one is the final model.

        ``"holdout"``: one model on the first part of each run, scored on the last part.
        ``"crossfit"``: one model per time-block fold, then the final model on everything.
        """
        if self.limit == "holdout":
            fit, held = [], []
            for r, n in enumerate(lengths):
                cut = n - int(round(self.validation_fraction * n))
                fit.append(Segment(r, 0, cut))
                held.append(Segment(r, cut, n))
            return [(tuple(fit), tuple(held))]
        folds = time_block_folds(lengths, self.n_folds)
        everything = tuple(Segment(r, 0, n) for r, n in enumerate(lengths))
        return [(f.fit, f.held_out) for f in folds] + [(everything, ())]

    def _residual_scale(self, std: list[np.ndarray], plan) -> np.ndarray:
        """Per variable, the standard deviation of the out-of-fold one-step residuals."""
        parts = []
        for fit, held in plan:
            if not held:
                continue
            var = RidgeVAR(self.predictor_order, self.predictor_ridge).fit(
                [std[s.run][s.start:s.stop] for s in fit])
            for s in held:
                seg = std[s.run][max(0, s.start - self.predictor_order):s.stop]
                parts.append(self._residuals(var, seg))
        res = np.concatenate(parts)
        scale = res.std(axis=0, ddof=1)
        return np.where(scale > 0, scale, 1.0)

    def _lags(self) -> int:
        return int(self.predictor_order) if self.design == "residual" else 0

    def _history(self) -> int:
        """Rows a stream keeps: the lags of the first residual and the rest of a window."""
        return self._lags() + int(self.window) - 1

    def _levels_used(self) -> tuple[str, ...]:
        return ("T2", "W", "SPE") if self.use_spe else ("T2", "W")

    @staticmethod
    def _residuals(predictor, rows: np.ndarray) -> np.ndarray:
        lagged = lag_matrix(rows, predictor.order)
        return rows[predictor.order:] - predictor.predict_lagged(lagged)

    def _inputs(self, core: dict, rows: np.ndarray) -> np.ndarray:
        """The autoencoders' inputs of standardised ``rows`` (the first ``_lags()`` have none)."""
        if self.design == "level":
            out = rows
        elif len(rows) <= self._lags():
            return np.empty((0, rows.shape[1]))
        else:
            out = self._residuals(core["predictor"], rows) / self.residual_scale_
        # "asinh": linear near 0, logarithmic in the tails, so a large deviation still moves
        # the LSTM's gates instead of pinning them (the option of non-saturating inputs)
        return np.arcsinh(out) if getattr(self, "input_transform", "none") == "asinh" else out

    def _windows(self, inputs: np.ndarray) -> np.ndarray:
        w = int(self.window)
        if len(inputs) < w:
            return np.empty((0, w, inputs.shape[1]))
        return np.lib.stride_tricks.sliding_window_view(inputs, w, axis=0).transpose(0, 2, 1)

    def _final_core(self) -> dict:
        if getattr(self, "_cache", None) is None:
            pred = getattr(self, "predictor_state_", None)
            self._cache = {
                "predictor": None if pred is None else RidgeVAR.from_state(
                    pred, self.predictor_order, self.predictor_ridge),
                "blocks": [OLAEBlock.from_state(b, self.window) for b in self.block_states_]}
        return self._cache

    @staticmethod
    def _init_cusums(blocks: list[OLAEBlock]) -> list:
        return [b.init_cusum_state() for b in blocks]

    def _raw_levels(self, core: dict, full: np.ndarray, n_hist: int, cusums: list,
                    ok: np.ndarray | None = None):
        """Levels of the rows after ``n_hist`` history rows of standardised ``full``.

        Returns ``(raw, warm, inputs, cusums)``: ``raw[level]`` (n, blocks) (0 on warm-up and
        unmonitorable rows), the warm-up mask, each row's inputs (0 before the first lag) and
        the new CUSUM state.
        """
        p, w = self._lags(), int(self.window)
        n_new = len(full) - n_hist
        ok = np.ones(n_new, dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
        with np.errstate(over="ignore", invalid="ignore"):
            inputs_full = self._inputs(core, full)
        inputs = np.zeros((n_new, full.shape[1]))
        have = max(0, p - n_hist)
        if have < n_new:
            inputs[have:] = inputs_full[n_hist + have - p:]
        first = min(max(0, p + w - 1 - n_hist), n_new)
        warm = np.zeros(n_new, dtype=bool)
        warm[:first] = True
        blocks = core["blocks"]
        raw = {lev: np.zeros((n_new, len(blocks))) for lev in self._levels_used()}
        raw["W"] = np.zeros((n_new, len(blocks)))
        new_cusums = cusums
        if first < n_new:
            start = n_hist + first - p - w + 1
            windows = self._windows(inputs_full)[start:]
            positions, states, allowances, owner = [], [], [], []
            for bi, block in enumerate(blocks):
                levels, block_positions = block.levels(windows, ok[first:], self.use_spe)
                for lev in levels:
                    raw[lev][first:, bi] = _finite(levels[lev])
                positions += block_positions
                states += list(cusums[bi])
                allowances += [net.cusum_k for net in block.networks]
                owner += [bi] * len(block.networks)
            w_stats, new_states = joint_cusum(positions, states, allowances, self.n_bins,
                                              ok[first:])
            new_cusums = [[] for _ in blocks]
            for bi, w_stat, state in zip(owner, w_stats, new_states, strict=True):
                new_cusums[bi].append(state)
                if len(new_cusums[bi]) == 1:
                    raw["W"][first:, bi] = w_stat
                else:
                    raw["W"][first:, bi] += w_stat
            for bi, block in enumerate(blocks):  # an ensemble's W is its networks' mean
                if len(block.networks) > 1:
                    raw["W"][first:, bi] /= len(block.networks)
                raw["W"][first:, bi] = _finite(raw["W"][first:, bi])
        return raw, warm, _finite(inputs), new_cusums

    def _block_indices(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """Block index (n, blocks): the Bayesian combination of each block's levels."""
        levels = self._levels_used()
        stats = np.stack([raw[lev] for lev in levels], axis=2)  # (n, blocks, levels)
        limits = np.array([[self.limits_[state["name"]][lev] for lev in levels]
                           for state in self.block_states_])
        if self.fusion_scale == "evidence":
            return fault_evidence(stats, limits, self.alpha)
        return bayesian_combination(*fault_probability(stats, limits, self.alpha))

    def _fuse_blocks(self, index: np.ndarray, order: OrderWeights, scored: np.ndarray):
        """``(PFI, score, W-BF weights)`` of block indices; advances the episode on scored rows."""
        limits = np.array([self.limits_[s["name"]]["index"] for s in self.block_states_])
        weights = np.zeros(index.shape)
        for i in np.flatnonzero(scored):
            weights[i] = order.step(index[i] > limits)
        w = np.where(scored[:, None], weights, 1.0)
        if self.fusion_scale == "evidence":
            score = fault_evidence(index, limits, self.alpha, w)
            pfi = -np.expm1(-score * _LN10)
        else:
            pfi = bayesian_combination(*fault_probability(index, limits, self.alpha), w)
            score = pfi
        return np.where(scored, pfi, 0.0), np.where(scored, score, 0.0), weights

    def _out_of_range(self, inputs: np.ndarray) -> np.ndarray:
        bounds = getattr(self, "training_range_", None)
        if self.range_margin is None or bounds is None:
            return np.zeros(len(inputs), dtype=bool)
        low, high = bounds
        margin = float(self.range_margin) * (high - low)
        return ((inputs < low - margin) | (inputs > high + margin)).any(axis=1)

    # ------------------------------------------------------------------ stream protocol
    def _stream_init_state(self) -> dict:
        n = len(self.feature_names_)
        order = OrderWeights(len(self.block_states_), self.fusion_gamma, self.base_weight,
                             self.episode_reset)
        return {"buffer": np.empty((0, n)),
                "cusums": self._init_cusums(self._final_core()["blocks"]),
                "order_weights": order.get_state()}

    def _stream_check_state(self, state: dict, n_seen: int) -> dict:
        keys = ("buffer", "cusums", "order_weights")
        if not isinstance(state, dict) or set(keys) - set(state):
            raise ValueError(f"the MOLA stream state must hold {list(keys)}")
        n_vars, keep = len(self.feature_names_), min(int(n_seen), self._history())
        buffer = np.array(state["buffer"], dtype=np.float64)
        if buffer.shape != (keep, n_vars) or not np.isfinite(buffer).all():
            raise ValueError(f"state['buffer'] must hold min(n_seen, {self._history()}) = {keep} "
                             f"finite rows of {n_vars} variables, got shape {buffer.shape}; was "
                             "the state taken from a stream of this monitor?")
        blocks = self._final_core()["blocks"]
        saved = state["cusums"]
        if not isinstance(saved, (list, tuple)) or len(saved) != len(blocks):
            raise ValueError("state['cusums'] does not match the monitor's blocks and networks; "
                             "was the state taken from a stream of this monitor?")
        cusums = [b.check_cusum_state(s) for b, s in zip(blocks, saved, strict=True)]
        order = OrderWeights(len(blocks), self.fusion_gamma, self.base_weight,
                             self.episode_reset)
        saved_order = state["order_weights"]
        if saved_order is None or len(saved_order) != 3:
            raise ValueError("state['order_weights'] must be (orders, next order, quiet count)")
        order.set_state(*saved_order)
        if order.order.shape != (len(blocks),):
            raise ValueError(f"state['order_weights'] has {order.order.shape} block orders, the "
                             f"monitor has {len(blocks)} blocks")
        return {"buffer": buffer, "cusums": cusums, "order_weights": order.get_state()}

    def _stream_step(self, state: dict, values: np.ndarray, monitorable: np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):
            z = (values - self.mean_) / self.scale_
        buffer = state["buffer"]
        full = np.concatenate([buffer, z]) if len(buffer) else z
        core = self._final_core()
        raw, warm, inputs, cusums = self._raw_levels(core, full, len(buffer), state["cusums"],
                                                     monitorable)
        scored = ~warm & monitorable
        index = np.where(scored[:, None], self._block_indices(raw), 0.0)
        order = OrderWeights(len(self.block_states_), self.fusion_gamma, self.base_weight,
                             self.episode_reset)
        order.set_state(*state["order_weights"])
        pfi, score, weights = self._fuse_blocks(index, order, scored)
        out_of_range = self._out_of_range(inputs) & scored
        if out_of_range.any():
            pfi = np.where(out_of_range, 1.0, pfi)
            big = 1.0 if self.fusion_scale == "probability" else 10.0 * self.threshold_
            score = np.where(out_of_range, np.maximum(score, big), score)
        n = len(values)
        columns: dict[str, np.ndarray] = {}
        for bi, block in enumerate(self.block_states_):
            name = block["name"]
            for lev in self._levels_used():
                columns[f"{name}.{lev}"] = raw[lev][:, bi]
                columns[f"{name}.{lev}_limit"] = np.full(n, self.limits_[name][lev])
            columns[f"{name}.index"] = index[:, bi]
            columns[f"{name}.index_limit"] = np.full(n, self.limits_[name]["index"])
            columns[f"{name}.weight"] = weights[:, bi]
        columns["PFI"] = pfi
        pfi_limit = (self.threshold_ if self.fusion_scale == "probability"
                     else float(-np.expm1(-self.threshold_ * _LN10)))
        columns["PFI_limit"] = np.full(n, pfi_limit)  # the threshold on the PFI scale
        columns["score"] = score
        columns["score_limit"] = np.full(n, self.threshold_)
        columns["alarm"] = (scored & ((score > self.threshold_) | out_of_range)).astype(np.int64)
        columns["warmup"] = warm.astype(np.int64)
        columns["out_of_range"] = out_of_range.astype(np.int64)
        keep = self._history()
        new_state = {"buffer": full[max(0, len(full) - keep):].copy() if keep else full[:0].copy(),
                     "cusums": cusums, "order_weights": order.get_state()}
        return columns, new_state
