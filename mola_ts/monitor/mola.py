"""MOLA: the multi-block orthogonal LSTM autoencoder process monitor (monitoring spec §1-§4).

Offline (``fit``), from in-control data only: standardise with the training mean/std; split the
variables into blocks; hold out the last ``validation_fraction`` of the samples (not shuffled);
train one OLAE per block on sliding windows of the first part (early stopping on the held-out
reconstruction loss); per block compute Hotelling T^2 and the quantile CUSUM W on the latent
codes (and the SPE of the last sample of the window); set every control limit on the held-out
stream; fuse T^2 and W (and SPE when ``use_spe``) into a block index by the Bayesian combination
and the block indices into the global index PFI by the order-weighted combination (W-BF).

Online: :meth:`MOLAMonitor.stream` keeps the window buffer, the CUSUM state of every block, the
W-BF episode and the last valid value of every variable (the sensor-dropout policy); its state
can be saved and restored exactly. :meth:`MOLAMonitor.statistics` is exactly a fresh stream fed
the whole run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..data import check_columns_match, check_series
from ..persistence import EstimatorFileError, SaveLoadMixin, load_estimator, save_estimator
from ..training import seed_everything, train
from .base import MonitorMixin, check_finite_scale, validate_fit_runs
from .blocks import resolve_blocks
from .charts import QuantileCUSUM, control_limit, fit_t2, quantile_edges, t2_statistic
from .fusion import OrderWeights, bayesian_combination, fault_probability
from .olae import OLAE, ORTHO_TARGETS, ExactOLAE, olae_loss

__all__ = ["MOLAMonitor", "MonitorStream"]

_LEVELS = ("T2", "W", "SPE")
_MISSING = ("hold", "raise")
_ON_STALE = ("flag", "raise")


# the parameters that shape the trained networks (recalibrate must not see them change)
_NETWORK_PARAMS = ("blocks", "n_blocks", "window", "hidden_size", "code_size", "ortho_weight",
                   "ortho_target", "epochs", "batch_size", "lr", "patience",
                   "validation_fraction", "n_ensemble", "random_state", "device")
# the parameters the scoring of a fitted monitor depends on (statistics() checks them)
_SCORING_PARAMS = ("blocks", "n_blocks", "window", "hidden_size", "code_size", "n_ensemble",
                   "alpha", "n_bins", "cusum_allowance", "use_spe", "limit_method",
                   "threshold_scale", "fusion_gamma", "base_weight", "episode_reset")


def _member_mean(parts: list[np.ndarray]) -> np.ndarray:
    """Mean of the members' arrays, summed in member order (row-wise, batch-invariant)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total / len(parts) if len(parts) > 1 else total


class MOLAMonitor(MonitorMixin, SaveLoadMixin, BaseEstimator):
    """Multi-block orthogonal LSTM autoencoder monitor with T^2, quantile CUSUM and W-BF fusion.

    Sign convention: :meth:`score_samples` returns the global fault index PFI (in [0, 1],
    higher = more abnormal); :meth:`decision_function` is ``PFI - threshold_`` and
    :meth:`predict` is 1 (alarm) where it is positive. A window of ``window`` samples is scored
    at its last sample, so scoring is causal; the first ``window - 1`` samples of a run are not
    scored (NaN statistics, no alarm).

    Every choice the MOLA paper leaves open is a parameter (spec §2-§4, "ours").

    Parameters
    ----------
    blocks : {"auto", "tep", "tep_loops", "correlation", "single"}, mapping or list of lists, \
default="auto"
        The variable partition (see :mod:`mola_ts.monitor.blocks`): ``"auto"`` is the TEP unit
        partition for the 52 TEP variables and the correlation clustering otherwise;
        ``"tep_loops"`` puts every TEP manipulated variable with the measurement of its control
        loop; a mapping ``{block name: [column names]}`` gives the blocks explicitly.
    n_blocks : int, default=4
        Number of blocks of the ``"correlation"`` partition.
    window : int, default=10
        Samples per window (w).
    hidden_size : int, default=32
        LSTM hidden size (h) of encoder and decoder.
    code_size : int, default=8
        Latent code size; a block gets ``q = min(block size, code_size)``.
    ortho_weight : float, default=1.0
        Weight lambda of the orthogonality penalty.
    ortho_target : {"codes", "weights", "both"}, default="codes"
        Penalise the correlation of the codes over a batch, the non-orthonormality of the
        encoder's output weights, or both.
    epochs, batch_size, lr, patience : training settings (Adam; early stopping with
        ``patience`` on the held-out reconstruction MSE, best weights restored).
    validation_fraction : float, default=0.3
        Share of the samples, taken from the end of each run (not shuffled), held out for early
        stopping and for every control limit.
    n_ensemble : int, default=1
        Networks per block, trained from different seeds (``random_state + b + 1000 k`` for
        block b, member k). Each member has its own T^2 statistics and CUSUM; the block's T^2,
        W and SPE are the members' means, which smooths the idiosyncratic spikes of a single
        network's codes. Training time grows linearly.
    alpha : float, default=0.01
        Significance: every control limit is the (1 - alpha) quantile of its statistic over the
        held-out stream, and alpha is the fault prior of the Bayesian combination.
    n_bins : int, default=10
        Quantile bins per latent feature of the CUSUM (m).
    cusum_allowance : float, default=0.5
        The CUSUM allowance as a share of ``q (m - 1)``, the value of ``C_n`` in the reset state:
        ``k = cusum_allowance * q * (m - 1)``, in (0, 1). In control the chart remembers roughly
        ``1 / cusum_allowance`` samples; smaller values catch smaller persistent shifts but also
        accumulate the slow in-control wander of a plant (on the TEP normal runs, 0.05 and 0.2
        raised far more false alarms on unseen normal data than 0.5; see the TEP demo).
    use_spe : bool, default=False
        Add the SPE (squared reconstruction error of the last sample) to the block fusion. It is
        computed and reported either way (and drives the contributions).
    limit_method : {"empirical", "kde"}, default="empirical"
        Empirical or Gaussian-KDE quantile for the limits.
    threshold_scale : float, default=1.0
        The alarm threshold is ``threshold_scale`` times the (1 - alpha) held-out quantile of
        PFI. The held-out part of the training runs shows the within-run noise of normal
        operation, not how a later or another run drifts; a scale above 1 leaves room for that.
        Choose it on normal data or on a validation protocol, never on test data; it can be
        changed after fitting with :meth:`recalibrate`.
    range_margin : float or None, default=1.0
        Out-of-range alarm, a guard the autoencoder itself cannot give: its LSTM saturates, so
        a spike of a hundred standard deviations in one variable can leave the code statistics
        quiet. A sample with a variable below ``min - range_margin * (max - min)`` or above
        ``max + range_margin * (max - min)`` of that variable's training rows (standardised;
        ``training_range_``) gets ``PFI = +inf`` and alarms, flagged in the ``out_of_range``
        column. ``None`` switches the guard off. Applied at scoring time, so
        :meth:`set_params` changes it without a refit.
    fusion_gamma : float, default=0.5
        W-BF weight decay with the alarm order: ``exp(-gamma (order - 1))``.
    base_weight : float, default=0.1
        W-BF weight of a block not in alarm in the current episode.
    episode_reset : int, default=10
        In-control samples that end a W-BF episode.
    random_state : int or None, default=0
        Seed of weight initialisation and batch shuffling (block b uses ``random_state + b``).
    device : str, default="cpu"
        Training device; scoring always runs in float64 numpy on the CPU.
    n_threads : int or None, default=1
        torch CPU threads while training (the previous setting is restored afterwards); None
        keeps torch's setting. The per-block networks are tiny: one thread is the fastest, and
        several threads on a busy machine can be many times slower.
    verbose : int, default=0
        Print one line per trained block when > 0.

    Attributes
    ----------
    blocks_ : dict of str -> list of str
        The partition used.
    block_kind_ : str
        ``"tep"``, ``"tep_loops"``, ``"correlation"``, ``"single"`` or ``"custom"``.
    limits_ : dict
        ``limits_[block]["T2" | "W" | "SPE" | "index"]`` and ``limits_["PFI"]``.
    threshold_ : float
        The PFI limit (alarm when PFI exceeds it), ``threshold_scale`` included.
    block_states_ : list of dict
        Per block: ``name``, ``columns`` (positions) and ``members``, one dict per network
        (``olae`` weights, ``t2_mean``, ``t2_precision``, CUSUM ``edges`` and ``cusum_k``).
    network_params_ : dict
        The parameters that shaped the trained networks (checked by :meth:`recalibrate`).
    scoring_params_ : dict
        The parameters scoring depends on, as at fit (or the last :meth:`recalibrate`):
        after :meth:`set_params` changes one of them, scoring raises a ValueError until
        :meth:`recalibrate` (calibration settings) or :meth:`fit` (network settings).
    validation_statistics_ : dict
        The held-out stream's values behind the limits: ``[block][level]`` arrays and
        ``["PFI"]`` (for calibration on top, e.g. a probability of fault).
    n_validation_samples_ : int
        Held-out samples that set the limits.
    training_history_ : dict of str -> list of dict
        Per block, per epoch: train loss, held-out reconstruction MSE and orthogonality penalty
        (with ``n_ensemble > 1``, a list of such histories, one per member).

    Examples
    --------
    >>> from mola_ts.data import load_tep
    >>> from mola_ts.monitor import MOLAMonitor
    >>> monitor = MOLAMonitor(epochs=5).fit(load_tep(0, "train"))  # doctest: +SKIP
    >>> alarms = monitor.predict(load_tep(1, "test"))  # doctest: +SKIP
    """

    _scoring_params = _SCORING_PARAMS
    _refit_hint = ("call recalibrate(X) for the calibration settings or fit for the network "
                   "settings")

    def __init__(self, blocks: Any = "auto", n_blocks: int = 4, window: int = 10,
                 hidden_size: int = 32, code_size: int = 8, ortho_weight: float = 1.0,
                 ortho_target: str = "codes", epochs: int = 200, batch_size: int = 32,
                 lr: float = 1e-3, patience: int = 20, validation_fraction: float = 0.3,
                 n_ensemble: int = 1, alpha: float = 0.01, n_bins: int = 10,
                 cusum_allowance: float = 0.5, use_spe: bool = False,
                 limit_method: str = "empirical", threshold_scale: float = 1.0,
                 range_margin: float | None = 1.0, fusion_gamma: float = 0.5,
                 base_weight: float = 0.1, episode_reset: int = 10,
                 random_state: int | None = 0, device: str = "cpu", n_threads: int | None = 1,
                 verbose: int = 0):
        self.blocks = blocks
        self.n_blocks = n_blocks
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
        self.alpha = alpha
        self.n_bins = n_bins
        self.cusum_allowance = cusum_allowance
        self.use_spe = use_spe
        self.limit_method = limit_method
        self.threshold_scale = threshold_scale
        self.range_margin = range_margin
        self.fusion_gamma = fusion_gamma
        self.base_weight = base_weight
        self.episode_reset = episode_reset
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.verbose = verbose

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")

        for name in ("window", "hidden_size", "code_size", "epochs", "batch_size", "patience",
                     "episode_reset", "n_blocks", "n_ensemble"):
            positive_int(name)
        if self.n_threads is not None:
            positive_int("n_threads")
        positive_int("n_bins", 2)
        for name, lo, hi in (("validation_fraction", 0.0, 1.0), ("alpha", 0.0, 0.5),
                             ("cusum_allowance", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not lo < value < hi:
                raise ValueError(f"{name} must lie in ({lo}, {hi}), got {value!r}")
        if isinstance(self.threshold_scale, bool) or not isinstance(
                self.threshold_scale, (int, float)) or not self.threshold_scale > 0:
            raise ValueError(f"threshold_scale must be a number > 0, got "
                             f"{self.threshold_scale!r}")
        if self.range_margin is not None and (
                isinstance(self.range_margin, bool)
                or not isinstance(self.range_margin, (int, float))
                or not np.isfinite(self.range_margin) or self.range_margin < 0):
            raise ValueError(f"range_margin must be None or a finite number >= 0, got "
                             f"{self.range_margin!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.ortho_weight < 0:
            raise ValueError(f"ortho_weight must be >= 0, got {self.ortho_weight!r}")
        if self.ortho_target not in ORTHO_TARGETS:
            raise ValueError(f"ortho_target must be one of {ORTHO_TARGETS}, got "
                             f"{self.ortho_target!r}")
        if self.limit_method not in ("empirical", "kde"):
            raise ValueError(f"limit_method must be 'empirical' or 'kde', got "
                             f"{self.limit_method!r}")
        if self.fusion_gamma < 0 or not self.base_weight > 0:
            raise ValueError(f"fusion_gamma must be >= 0 and base_weight > 0, got "
                             f"{self.fusion_gamma!r} and {self.base_weight!r}")
        if self.random_state is not None and (isinstance(self.random_state, bool) or not
                                              isinstance(self.random_state, (int, np.integer))):
            raise TypeError(f"random_state must be an int or None, got "
                            f"{type(self.random_state).__name__} {self.random_state!r}")

    def _min_fit_rows(self) -> int:
        # both parts must give at least 10 scored windows (plus enough for codes' statistics)
        need = self.window + 9 + 2 * self.code_size
        return int(math.ceil(need / min(self.validation_fraction, 1 - self.validation_fraction)))

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None) -> MOLAMonitor:
        """Fit on in-control data.

        Parameters
        ----------
        X : DataFrame or ndarray of shape (n_samples, n_variables), or a list of them
            Normal operating data in time order. A list holds independent runs with the same
            columns (e.g. ``[d00, d00_te[:160]]``): windows never cross a run boundary and the
            last ``validation_fraction`` of each run is held out.
        y : ignored
        """
        self._check_params()
        data = self._prepare(X)
        self.mean_, self.scale_ = data["mean"], data["scale"]
        runs = data["runs"]
        self.feature_names_ = list(runs.columns)
        self.named_features_ = bool(runs.named)
        self.n_features_in_ = len(runs.columns)
        if runs.named:
            self.feature_names_in_ = np.asarray(runs.columns, dtype=object)
        positions, kind = resolve_blocks(self.blocks, runs.columns,
                                         X=data["train_rows_std"], n_blocks=self.n_blocks)
        self.blocks_ = {name: [runs.columns[j] for j in cols] for name, cols in positions.items()}
        self.block_kind_ = kind
        train_windows, val_windows = data["train_windows"], data["val_windows"]
        max_q = min(self.code_size, max(len(c) for c in positions.values()))
        if len(train_windows) < max(2 * max_q + 2, self.n_bins, 10) or len(val_windows) < 10:
            raise ValueError(
                f"X gives {len(train_windows)} training and {len(val_windows)} held-out windows "
                f"of {self.window} samples; at least {max(2 * max_q + 2, self.n_bins, 10)} and "
                "10 are needed (more data or a shorter window)"
            )

        self.block_states_ = []
        self.training_history_ = {}
        previous_threads = torch.get_num_threads()
        if self.n_threads is not None:
            torch.set_num_threads(int(self.n_threads))
        try:
            self._fit_blocks(positions, train_windows, val_windows, self.random_state)
        finally:
            torch.set_num_threads(previous_threads)
        self.network_params_ = {k: self.get_params(deep=False)[k] for k in _NETWORK_PARAMS}
        train_std = data["train_rows_std"]
        self.training_range_ = np.stack([train_std.min(axis=0), train_std.max(axis=0)])
        self._exact = None
        self._fit_code_statistics(train_windows)
        self._calibrate(data["val_segments"])
        self._remember_scoring_params()
        return self

    def recalibrate(self, X) -> MOLAMonitor:
        """Redo the statistics and limits of :meth:`fit` with the current parameters.

        The trained networks are kept; the code statistics (T^2 mean and covariance, CUSUM
        bins and allowance) and every limit are recomputed on ``X``, which must be the data
        :meth:`fit` was called with (checked through the training mean). Use it after
        :meth:`set_params` of the parameters that do not shape the networks: ``alpha``,
        ``n_bins``, ``cusum_allowance``, ``use_spe``, ``limit_method``, ``threshold_scale``,
        ``fusion_gamma``, ``base_weight``, ``episode_reset``. Changing any other parameter
        needs a new :meth:`fit` (a ValueError says which).
        """
        check_is_fitted(self)
        self._check_params()
        current = self.get_params(deep=False)
        changed = [k for k in _NETWORK_PARAMS if current[k] != self.network_params_[k]]
        if changed:
            raise ValueError(f"recalibrate keeps the trained networks, but {changed} changed "
                             "since fit; call fit instead")
        data = self._prepare(X)
        if data["mean"].shape != self.mean_.shape or not np.allclose(
                data["mean"], self.mean_, rtol=1e-12, atol=1e-12 * np.abs(self.mean_).max()):
            raise ValueError("recalibrate needs the data fit was called with (its training part "
                             "has another mean); call fit for new data")
        self._exact = None
        self._fit_code_statistics(data["train_windows"])
        self._calibrate(data["val_segments"])
        self._remember_scoring_params()
        return self

    def _prepare(self, X) -> dict[str, Any]:
        """Validate the runs, split each into training and held-out rows, standardise, window."""
        runs = validate_fit_runs(X, min_rows=self._min_fit_rows(),
                                 what_for=f"window={self.window} needs enough windows in the "
                                          f"training and the held-out part")
        w = self.window
        train_segments, val_segments = [], []  # (run, start, stop) row ranges
        for r, values in enumerate(runs.values):
            cut = len(values) - int(round(self.validation_fraction * len(values)))
            if cut > 0:
                train_segments.append((r, 0, cut))
            if cut < len(values):
                val_segments.append((r, cut, len(values)))
        train_rows = np.concatenate([runs.values[r][a:b] for r, a, b in train_segments])
        with np.errstate(over="ignore", invalid="ignore"):
            mean = train_rows.mean(axis=0)
            scale = train_rows.std(axis=0, ddof=1)
        check_finite_scale(mean, scale, runs.columns, " in the training part")
        std_runs = [(v - mean) / scale for v in runs.values]

        def windows_of(segments, history: bool) -> np.ndarray:
            parts = []
            for r, a, b in segments:
                start = max(0, a - (w - 1)) if history else a
                seg = std_runs[r][start:b]
                if len(seg) >= w:
                    view = np.lib.stride_tricks.sliding_window_view(seg, w, axis=0)
                    parts.append(view.transpose(0, 2, 1))
            if not parts:
                return np.empty((0, w, len(runs.columns)))
            return np.concatenate(parts)

        return {"runs": runs, "mean": mean, "scale": scale,
                "train_rows_std": (train_rows - mean) / scale,
                "train_windows": windows_of(train_segments, history=False),
                "val_windows": windows_of(val_segments, history=True),
                "val_segments": [(std_runs[r], a, b) for r, a, b in val_segments]}

    def _fit_blocks(self, positions: dict[str, list[int]], train_windows: np.ndarray,
                    val_windows: np.ndarray, base_seed: int | None) -> None:
        for b, (name, cols) in enumerate(positions.items()):
            members, histories = [], []
            for k in range(self.n_ensemble):
                seed = None if base_seed is None else int(base_seed) + b + 1000 * k
                state, history = self._train_block(train_windows[:, :, cols],
                                                   val_windows[:, :, cols], seed)
                members.append({"olae": state})
                histories.append(history)
            self.block_states_.append({"name": name, "columns": list(cols), "members": members})
            self.training_history_[name] = histories[0] if self.n_ensemble == 1 else histories
            if self.verbose:
                mse = np.mean([h[-1].get("val_loss", float("nan")) for h in histories])
                print(f"[MOLA] block {name}: {len(cols)} variables, "
                      f"q={min(self.code_size, len(cols))}, {self.n_ensemble} network(s), "
                      f"{np.mean([len(h) for h in histories]):.0f} epochs, held-out MSE "
                      f"{mse:.4f}", flush=True)

    def _fit_code_statistics(self, train_windows: np.ndarray) -> None:
        """Per network: T^2 mean/precision, CUSUM bin edges and allowance of its training codes."""
        for state, exacts in zip(self.block_states_, self._exact_models(), strict=True):
            win = np.ascontiguousarray(train_windows[:, :, state["columns"]])
            for member, exact in zip(state["members"], exacts, strict=True):
                codes = exact.encode(win)
                member["t2_mean"], member["t2_precision"] = fit_t2(codes)
                member["edges"] = quantile_edges(codes, self.n_bins)
                member["cusum_k"] = float(self.cusum_allowance * codes.shape[1]
                                          * (self.n_bins - 1))

    def _calibrate(self, segments: list[tuple[np.ndarray, int, int]]) -> None:
        """Set every limit from held-out segments ``(standardised run, start, stop)``."""
        w = self.window
        raw_parts = []
        for run, a, b in segments:
            stream = MonitorStream(self, _unfused=True)
            stream._prime(run[max(0, a - (w - 1)):a])
            raw_parts.append(stream._advance(run[a:b]))
        names = [s["name"] for s in self.block_states_]
        self.limits_ = {}
        for bi, name in enumerate(names):
            values = {lev: np.concatenate([p[lev][:, bi] for p in raw_parts]) for lev in _LEVELS}
            self.limits_[name] = {lev: self._limit(values[lev]) for lev in _LEVELS}
        index_parts = [self._block_indices(p) for p in raw_parts]
        for bi, name in enumerate(names):
            self.limits_[name]["index"] = self._limit(
                np.concatenate([p[:, bi] for p in index_parts]))
        pfi = np.concatenate([self._fuse_blocks(p, OrderWeights(
            len(names), self.fusion_gamma, self.base_weight, self.episode_reset))[0]
            for p in index_parts])
        self.threshold_ = float(self.threshold_scale) * self._limit(pfi)
        self.limits_["PFI"] = self.threshold_
        self.n_validation_samples_ = int(np.isfinite(pfi).sum())
        # the held-out stream's levels, kept for calibration on top (e.g. a fault probability)
        self.validation_statistics_ = {
            name: {**{lev: np.concatenate([p[lev][:, bi] for p in raw_parts]) for lev in _LEVELS},
                   "index": np.concatenate([p[:, bi] for p in index_parts])}
            for bi, name in enumerate(names)}
        self.validation_statistics_["PFI"] = pfi
        self._fault_calibrations = {}  # fitted on these statistics by predict_fault_probability

    def _out_of_range(self, z: np.ndarray) -> np.ndarray:
        """Rows of standardised ``z`` with a variable beyond the widened training range."""
        bounds = getattr(self, "training_range_", None)  # None: a model saved before the guard
        if self.range_margin is None or bounds is None:
            return np.zeros(len(z), dtype=bool)
        low, high = bounds
        margin = float(self.range_margin) * (high - low)
        with np.errstate(invalid="ignore"):
            return ((z < low - margin) | (z > high + margin)).any(axis=1)

    def _limit(self, values: np.ndarray) -> float:
        limit = control_limit(values, self.alpha, self.limit_method)
        return limit if limit > 0 else float(np.finfo(np.float64).tiny)

    def _train_block(self, train_windows: np.ndarray, val_windows: np.ndarray,
                     seed: int | None) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
        seed_everything(seed)
        n_vars = train_windows.shape[2]
        model = OLAE(n_vars, self.hidden_size, min(self.code_size, n_vars), self.window)
        ortho_weight, target = float(self.ortho_weight), self.ortho_target

        def loss_fn(m, batch):
            return olae_loss(m, batch[0], ortho_weight, target)[0]

        def val_fn(m, batch):
            _, mse, ortho = olae_loss(m, batch[0], ortho_weight, target)
            return {"loss": mse, "ortho": ortho}

        train_data = (torch.from_numpy(np.ascontiguousarray(train_windows, dtype=np.float32)),)
        val_data = (torch.from_numpy(np.ascontiguousarray(val_windows, dtype=np.float32)),)
        result = train(model, train_data, loss_fn,
                       {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                        "patience": self.patience, "device": self.device, "random_state": seed,
                        "drop_last": len(train_windows) > self.batch_size,
                        "eval_batch_size": max(len(val_windows), 1)},
                       val_data=val_data, val_fn=val_fn)
        model.cpu()
        state = {k: v.detach().double().numpy().copy() for k, v in model.state_dict().items()}
        history = [{k: float(v) for k, v in rec.items()} for rec in result.history]
        return state, history

    # ------------------------------------------------------------------ internals
    def _exact_models(self) -> list[list[ExactOLAE]]:
        """Per block, the batch-invariant numpy evaluators of its networks."""
        if getattr(self, "_exact", None) is None:
            self._exact = [[ExactOLAE(m["olae"], self.window) for m in s["members"]]
                           for s in self.block_states_]
        return self._exact

    def _level_matrix(self, raw: dict[str, np.ndarray], bi: int) -> tuple[np.ndarray, np.ndarray]:
        levels = ("T2", "W", "SPE") if self.use_spe else ("T2", "W")
        name = self.block_states_[bi]["name"]
        stats = np.stack([raw[lev][:, bi] for lev in levels], axis=1)
        limits = np.array([self.limits_[name][lev] for lev in levels])
        return stats, limits

    def _block_indices(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """Block index P_b (n, n_blocks): BIC of T^2 and W (and SPE) of each block."""
        out = []
        for bi in range(len(self.block_states_)):
            stats, limits = self._level_matrix(raw, bi)
            p_x_f, p_f_x = fault_probability(stats, limits, self.alpha)
            out.append(bayesian_combination(p_x_f, p_f_x))
        return np.stack(out, axis=1)

    def _fuse_blocks(self, index: np.ndarray, weights_state: OrderWeights
                     ) -> tuple[np.ndarray, np.ndarray]:
        """PFI (n,) and W-BF weights (n, n_blocks) of block indices, advancing the episode."""
        limits = np.array([self.limits_[s["name"]]["index"] for s in self.block_states_])
        n = len(index)
        weights = np.full(index.shape, np.nan)
        for i in range(n):
            if np.isfinite(index[i]).all():
                weights[i] = weights_state.step(index[i] > limits)
        p_x_f, p_f_x = fault_probability(index, limits, self.alpha)
        pfi = bayesian_combination(p_x_f, p_f_x, np.nan_to_num(weights, nan=1.0))
        return np.where(np.isfinite(weights).all(axis=1), pfi, np.nan), weights

    # ------------------------------------------------------------------ scoring
    def stream(self, missing: str = "hold", max_hold: int = 10, on_stale: str = "flag"
               ) -> MonitorStream:
        """A fresh sample-by-sample scorer (empty window buffer, CUSUMs and W-BF at rest).

        ``missing``, ``max_hold`` and ``on_stale`` set the sensor-dropout policy for NaN or
        inf values in streamed samples (see :class:`MonitorStream`).
        """
        check_is_fitted(self)
        self._check_scoring_params()
        return MonitorStream(self, missing=missing, max_hold=max_hold, on_stale=on_stale)

    def statistics(self, X) -> pd.DataFrame:
        """Every level with its limit, one row per sample of the run ``X``.

        Columns, per block ``b``: ``b.T2``, ``b.W``, ``b.SPE``, ``b.index`` (the block index
        P_b), each followed by its ``_limit`` column, and ``b.weight`` (its W-BF weight); then
        ``PFI``, ``PFI_limit``, ``alarm`` (1/0) and the data-quality columns of a stream
        (``sensor_fault`` 0, ``missing_variables`` empty, ``monitorable`` 1: ``X`` must be
        finite here; a NaN or inf raises a ValueError naming its columns and rows, and
        ``monitor.stream(missing="hold").update(X)`` applies the sensor-dropout policy to a
        whole run instead). The first ``window - 1`` rows are NaN (no alarm). Equal, bit for
        bit, to feeding ``X`` row by row to :meth:`stream`.
        """
        series = self._check_X(X, min_rows=self.window,
                               what_for=f"one window of window={self.window} samples")
        return MonitorStream(self)._score(series.values, series.index)

    def score_samples(self, X) -> np.ndarray:
        """The global fault index PFI of every sample (higher = more abnormal; NaN unscored)."""
        return self.statistics(X)["PFI"].to_numpy()

    def predict_fault_probability(self, X, *, coverage: float = 0.9,
                                  prior_fault: float | None = None,
                                  tail_fraction: float = 0.1) -> pd.DataFrame:
        """Calibrated probability of fault per sample, with its credible band (uncertainty §4).

        A :class:`~mola_ts.uncertainty.FaultProbability` is fitted on the global index PFI of
        the held-out normal stream that set the limits (``validation_statistics_["PFI"]``):
        a generalised Pareto tail above its ``1 - tail_fraction`` quantile with a Laplace band,
        the in-control p-value of each new PFI, and Bayes' rule with the prior
        ``prior_fault`` (default: the monitor's ``alpha``).

        Returns a DataFrame indexed like :meth:`statistics` with ``PFI``, ``p_value`` (the
        in-control tail probability), ``fault_probability`` and its band
        ``fault_probability_lower`` / ``fault_probability_upper`` at ``coverage``. Unscored
        rows (the first ``window - 1``) are NaN; an overflowing (infinite) PFI gets probability
        1 with a band of [1, 1]. The calibration is fitted once per setting (deterministic, so
        it is refitted rather than saved after :meth:`load`).
        """
        from mola_ts.uncertainty import FaultProbability

        check_is_fitted(self)
        prior = self.alpha if prior_fault is None else prior_fault
        key = (float(coverage), float(prior), float(tail_fraction))
        cache = getattr(self, "_fault_calibrations", None)
        if cache is None:
            cache = self._fault_calibrations = {}
        if key not in cache:
            held_out = np.asarray(self.validation_statistics_["PFI"], dtype=np.float64)
            cache[key] = FaultProbability(prior_fault=prior, coverage=coverage,
                                          tail_fraction=tail_fraction).fit(
                held_out[np.isfinite(held_out)])
        calibration = cache[key]
        stats = self.statistics(X)
        pfi = stats["PFI"].to_numpy(dtype=np.float64)
        out = pd.DataFrame(index=stats.index)
        out["PFI"] = pfi
        columns = ("p_value", "fault_probability", "fault_probability_lower",
                   "fault_probability_upper")
        values = {c: np.full(len(pfi), np.nan) for c in columns}
        finite = np.isfinite(pfi)
        if finite.any():
            values["p_value"][finite] = calibration.tail_probability(pfi[finite])
            point, lower, upper = calibration.fault_probability(pfi[finite])
            values["fault_probability"][finite] = point
            values["fault_probability_lower"][finite] = lower
            values["fault_probability_upper"][finite] = upper
        overflow = np.isposinf(pfi)
        values["p_value"][overflow] = 0.0
        for c in columns[1:]:
            values[c][overflow] = 1.0
        for c in columns:
            out[c] = values[c]
        return out

    def contributions(self, X, statistic: str = "SPE", n_steps: int = 32) -> pd.DataFrame:
        """Per-variable contributions, one row per sample (NaN for the first ``window - 1``).

        ``statistic="SPE"``: the squared reconstruction error of each variable at the last
        sample of its window; they sum, over a block's variables, exactly to the block's SPE.
        ``statistic="T2"``: integrated gradients (``n_steps`` midpoint steps) of the block's
        T^2 with respect to the window, from the all-mean window (the training mean) to the
        sample's window, summed over the window's time steps; over a block's variables they sum
        to ``T2(window) - T2(mean window)`` up to the quadrature error.
        """
        if statistic not in ("SPE", "T2"):
            raise ValueError(f"statistic must be 'SPE' or 'T2', got {statistic!r}")
        series = self._check_X(X, min_rows=self.window,
                               what_for=f"one window of window={self.window} samples")
        z = (series.values - self.mean_) / self.scale_
        windows = np.lib.stride_tricks.sliding_window_view(z, self.window, axis=0)
        windows = windows.transpose(0, 2, 1)
        out = np.full(z.shape, np.nan)
        for bi, state in enumerate(self.block_states_):
            cols = state["columns"]
            win = np.ascontiguousarray(windows[:, :, cols])
            parts = []
            for member, exact in zip(state["members"], self._exact_models()[bi], strict=True):
                if statistic == "SPE":
                    recon = exact.decode(exact.encode(win))
                    parts.append((win[:, -1] - recon[:, -1]) ** 2)
                else:
                    parts.append(self._t2_integrated_gradients(member, win, n_steps))
            out[self.window - 1:, cols] = _member_mean(parts)
        index = series.index if series.index is not None else pd.RangeIndex(len(z))
        return pd.DataFrame(out, index=index, columns=self.feature_names_)

    def _t2_integrated_gradients(self, member: dict, win: np.ndarray, n_steps: int
                                 ) -> np.ndarray:
        n_vars = win.shape[2]
        module = OLAE(n_vars, self.hidden_size, len(member["t2_mean"]), self.window).double()
        module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                                member["olae"].items()})
        mean = torch.from_numpy(member["t2_mean"])
        precision = torch.from_numpy(member["t2_precision"])
        x = torch.from_numpy(win)
        total = torch.zeros_like(x)
        for step in range(n_steps):
            point = (x * ((step + 0.5) / n_steps)).requires_grad_(True)
            d = module.encode(point) - mean
            t2 = torch.einsum("ni,ij,nj->n", d, precision, d)
            (grad,) = torch.autograd.grad(t2.sum(), point)
            total += grad
        return (x * total / n_steps).sum(dim=1).numpy()

    # ------------------------------------------------------------------ persistence
    def _restore_state(self, state: dict[str, Any]) -> None:
        super()._restore_state(state)  # MonitorMixin's
        self._exact = None


class MonitorStream:
    """Sample-by-sample MOLA scoring that keeps the window buffer, CUSUM and W-BF state.

    Obtain one with :meth:`MOLAMonitor.stream`. :meth:`update` accepts one sample (a 1-D array
    or Series of the variables) or a block of rows, and returns their statistics (the columns
    of :meth:`MOLAMonitor.statistics`). Finite data fed row by row, in chunks of any size or as
    one block give exactly (bit for bit) the batch result.

    **Sensor dropouts** (NaN or inf in some variables of a sample) are never a silent pass:

    - ``missing="hold"`` (default): each missing variable takes its last valid value in this
      stream; the sample is scored and flagged: ``sensor_fault`` is 1 and
      ``missing_variables`` lists the variables that were held.
    - A variable may be held for at most ``max_hold`` consecutive samples. A sample in which a
      variable has been missing for longer, or in which every variable is missing, is
      *unmonitorable*. With ``on_stale="flag"`` (default) it gets ``monitorable = 0``, NaN
      statistics and no alarm, and it advances neither the CUSUMs nor the W-BF episode (its
      held values do enter the window buffer, so the next ``window - 1`` windows still contain
      them); with ``on_stale="raise"`` :meth:`update` raises a ValueError.
    - A variable that is missing before it has had any valid value in this stream raises a
      ValueError: there is nothing to hold.
    - ``missing="raise"``: any NaN or inf raises a ValueError naming the variables and the
      sample.

    An update that raises leaves the stream unchanged: no row of the rejected block is scored.
    Rows with a DatetimeIndex (a DataFrame, or a Series taken from a row of one) must arrive in
    increasing time order, also across calls; a row at or before the last one raises.

    **Memory**: the state is the last ``window - 1`` standardised samples, the CUSUM vectors of
    every network, the W-BF episode, the last valid value and hold count of every variable, the
    last timestamp and the number of samples seen: O(window x variables) numbers whatever the
    length of the stream. :meth:`get_state` / :meth:`set_state` copy it in memory;
    :meth:`save` / :meth:`load` write the monitor and the stream to one file, and a restored
    stream continues exactly as an uninterrupted one.

    Parameters
    ----------
    monitor : MOLAMonitor
        A fitted monitor.
    missing : {"hold", "raise"}, default="hold"
        What a NaN or inf in a streamed sample gets (see above).
    max_hold : int, default=10
        Consecutive samples a variable may be held (>= 0; 0 never holds, so every sample with a
        missing variable is unmonitorable). Choose it from the sampling period and from how
        long the process may drift unseen (10 samples of the Tennessee Eastman plant are 30
        minutes).
    on_stale : {"flag", "raise"}, default="flag"
        What an unmonitorable sample gets (see above).
    """

    def __init__(self, monitor: MOLAMonitor, *, missing: str = "hold", max_hold: int = 10,
                 on_stale: str = "flag", _unfused: bool = False):
        check_is_fitted(monitor)
        if missing not in _MISSING:
            raise ValueError(f"missing must be one of {_MISSING}, got {missing!r}")
        if on_stale not in _ON_STALE:
            raise ValueError(f"on_stale must be one of {_ON_STALE}, got {on_stale!r}")
        if isinstance(max_hold, bool) or not isinstance(max_hold, (int, np.integer)) \
                or max_hold < 0:
            raise ValueError(f"max_hold must be an int >= 0, got {max_hold!r}")
        self.monitor = monitor
        self.missing = missing
        self.max_hold = int(max_hold)
        self.on_stale = on_stale
        self._unfused = _unfused
        n_features = len(monitor.mean_)
        self.buffer = np.empty((0, n_features))
        self.cusums = [[QuantileCUSUM(m["edges"], m["cusum_k"]) for m in s["members"]]
                       for s in monitor.block_states_]
        self.order_weights = None if _unfused else OrderWeights(
            len(monitor.block_states_), monitor.fusion_gamma, monitor.base_weight,
            monitor.episode_reset)
        self.n_seen = 0
        self.last_value = np.full(n_features, np.nan)  # last valid raw value of each variable
        self.hold_count = np.zeros(n_features, dtype=np.int64)  # consecutive held samples
        self.last_time: str | None = None  # ISO time of the last row with a DatetimeIndex

    def __repr__(self) -> str:
        return (f"MonitorStream(n_seen={self.n_seen}, missing={self.missing!r}, "
                f"max_hold={self.max_hold}, on_stale={self.on_stale!r})")

    # ------------------------------------------------------------------ scoring core
    def _prime(self, standardized_rows: np.ndarray) -> None:
        """Fill the window buffer with history rows without scoring them."""
        keep = self.monitor.window - 1
        full = np.concatenate([self.buffer, np.asarray(standardized_rows, dtype=np.float64)])
        self.buffer = full[max(0, len(full) - keep):].copy() if keep > 0 else full[:0].copy()

    def _advance(self, z: np.ndarray, monitorable: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
        """Raw levels (T2, W, SPE), each (n, n_blocks) with NaN rows before the first window.

        Rows not ``monitorable`` get NaN and do not advance the CUSUMs. A statistic that
        overflows float64 (a finite but absurdly large input) is +inf, never NaN.
        """
        mon = self.monitor
        w = mon.window
        n_new = len(z)
        ok = np.ones(n_new, dtype=bool) if monitorable is None else monitorable
        full = np.concatenate([self.buffer, z]) if len(self.buffer) else z
        n_hist = len(full) - n_new
        first = max(0, (w - 1) - n_hist)  # first new row with a complete window
        n_blocks = len(mon.block_states_)
        raw = {lev: np.full((n_new, n_blocks), np.nan) for lev in _LEVELS}
        if first < n_new:
            ok_w = ok[first:]
            all_ok = bool(ok_w.all())
            windows = np.lib.stride_tricks.sliding_window_view(full, w, axis=0)
            windows = windows.transpose(0, 2, 1)[n_hist + first - (w - 1):]
            for bi, (state, exacts) in enumerate(zip(mon.block_states_, mon._exact_models(),
                                                     strict=True)):
                win = np.ascontiguousarray(windows[:, :, state["columns"]])
                parts: dict[str, list[np.ndarray]] = {lev: [] for lev in _LEVELS}
                for member, exact, cusum in zip(state["members"], exacts, self.cusums[bi],
                                                strict=True):
                    with np.errstate(over="ignore", invalid="ignore"):
                        codes = exact.encode(win)
                        recon = exact.decode(codes)
                        err = win[:, -1] - recon[:, -1]
                        parts["T2"].append(t2_statistic(codes, member["t2_mean"],
                                                        member["t2_precision"]))
                        parts["SPE"].append(np.einsum("ni,ni->n", err, err))
                    if all_ok:
                        parts["W"].append(cusum.update(codes))
                    else:
                        w_stat = np.full(len(codes), np.nan)
                        w_stat[ok_w] = cusum.update(codes[ok_w])
                        parts["W"].append(w_stat)
                for lev in _LEVELS:  # an ensemble's statistic is its members' mean
                    value = _member_mean(parts[lev])
                    value = np.where(np.isnan(value) & ok_w, np.inf, value)
                    if not all_ok:
                        value[~ok_w] = np.nan
                    raw[lev][first:, bi] = value
        keep = w - 1
        self.buffer = full[max(0, len(full) - keep):].copy() if keep > 0 else full[:0].copy()
        self.n_seen += n_new
        return raw

    def _score(self, values: np.ndarray, index: pd.Index | None,
               missing: np.ndarray | None = None,
               monitorable: np.ndarray | None = None) -> pd.DataFrame:
        """Statistics of finite raw ``values`` (n, variables), advancing the stream."""
        mon = self.monitor
        start = self.n_seen
        n = len(values)
        with np.errstate(over="ignore", invalid="ignore"):
            z = (values - mon.mean_) / mon.scale_
        raw = self._advance(z, monitorable)
        index_values = mon._block_indices(raw)
        pfi, weights = mon._fuse_blocks(index_values, self.order_weights)
        columns: dict[str, np.ndarray] = {}
        for bi, state in enumerate(mon.block_states_):
            name = state["name"]
            for lev in _LEVELS:
                columns[f"{name}.{lev}"] = raw[lev][:, bi]
                columns[f"{name}.{lev}_limit"] = np.full(n, mon.limits_[name][lev])
            columns[f"{name}.index"] = index_values[:, bi]
            columns[f"{name}.index_limit"] = np.full(n, mon.limits_[name]["index"])
            columns[f"{name}.weight"] = weights[:, bi]
        out_of_range = mon._out_of_range(z)
        if monitorable is not None:
            out_of_range &= monitorable.astype(bool)
        pfi = np.where(out_of_range & ~np.isnan(pfi), np.inf, pfi)
        columns["PFI"] = pfi
        columns["PFI_limit"] = np.full(n, mon.threshold_)
        columns["alarm"] = np.where(~np.isnan(pfi) & (pfi > mon.threshold_), 1, 0)
        faulty = np.zeros(n, dtype=bool) if missing is None else missing.any(axis=1)
        columns["sensor_fault"] = faulty.astype(np.int64)
        held = np.empty(n, dtype=object)
        held.fill(())
        for i in np.flatnonzero(faulty):
            held[i] = tuple(mon.feature_names_[j] for j in np.flatnonzero(missing[i]))
        columns["missing_variables"] = held
        columns["monitorable"] = (np.ones(n, dtype=np.int64) if monitorable is None
                                  else monitorable.astype(np.int64))
        columns["out_of_range"] = out_of_range.astype(np.int64)
        if index is None:
            index = pd.RangeIndex(start, start + n)
        return pd.DataFrame(columns, index=index)

    # ------------------------------------------------------------------ the public stream
    def _validate(self, x):
        mon = self.monitor
        if isinstance(x, pd.Series):
            x = x.to_frame().T
        elif isinstance(x, (np.ndarray, list, tuple)):
            try:
                one_row = np.ndim(x) == 1
            except ValueError:  # a ragged nested list: check_series says so
                one_row = False
            if one_row:
                x = np.asarray(x)[None, :]
        series = check_series(x, name="x", min_rows=1, allow_nan=True, allow_inf=True)
        return check_columns_match(series, mon.feature_names_, name="x",
                                   by_name=mon.named_features_)

    def _label(self, index: pd.Index | None, i: int) -> str:
        if index is not None:
            return f"{index[i]!s} (sample {self.n_seen + i} of the stream)"
        return f"{self.n_seen + i} of the stream"

    def _check_time(self, index: pd.Index | None) -> str | None:
        """The new last timestamp; raise when ``index`` does not continue the stream's time."""
        if not isinstance(index, pd.DatetimeIndex) or len(index) == 0:
            return self.last_time
        if self.last_time is not None:
            previous = pd.Timestamp(self.last_time)
            try:
                later = bool(index[0] > previous)
            except TypeError:
                raise ValueError(f"x's timestamp {index[0]} cannot be compared with the "
                                 f"stream's last one {previous} (one has a time zone, the "
                                 "other none)") from None
            if not later:
                raise ValueError(f"x starts at {index[0]}, not after the stream's last sample "
                                 f"at {previous}: samples must arrive in time order, each "
                                 "once (repeat or reorder them upstream)")
        return index[-1].isoformat()

    def _fill_missing(self, values: np.ndarray, index: pd.Index | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply the dropout policy without touching the stream.

        Returns the filled values, the missing mask, the monitorable rows and the new last
        values and hold counts.
        """
        names = self.monitor.feature_names_
        bad = ~np.isfinite(values)
        n = len(values)
        monitorable = np.ones(n, dtype=bool)
        last = self.last_value.copy()
        count = self.hold_count.copy()
        if not bad.any():
            last[:] = values[-1]
            count[:] = 0
            return values, bad, monitorable, last, count
        for i in range(n):
            row_bad = bad[i]
            if not row_bad.any():
                count[:] = 0
                last[:] = values[i]
                continue
            gone = [names[j] for j in np.flatnonzero(row_bad)]
            if self.missing == "raise":
                raise ValueError(f"x: sample {self._label(index, i)} has NaN or inf in "
                                 f"{gone[:8]}{' ...' if len(gone) > 8 else ''} and the stream "
                                 "was made with missing='raise'")
            never = row_bad & np.isnan(last)
            if never.any():
                first = [names[j] for j in np.flatnonzero(never)]
                raise ValueError(f"x: sample {self._label(index, i)} has NaN or inf in "
                                 f"{first[:8]} before any valid value of them in this stream, "
                                 "so there is no value to hold; start the stream with a "
                                 "complete sample")
            values[i, row_bad] = last[row_bad]
            count[row_bad] += 1
            count[~row_bad] = 0
            last[:] = values[i]
            stale = count > self.max_hold
            if stale.any() or row_bad.all():
                if self.on_stale == "raise":
                    why = ("every variable is missing" if row_bad.all() else
                           f"{[names[j] for j in np.flatnonzero(stale)][:8]} have been missing "
                           f"for more than max_hold={self.max_hold} samples")
                    raise ValueError(f"x: sample {self._label(index, i)} cannot be monitored: "
                                     f"{why} (on_stale='raise')")
                monitorable[i] = False
        return values, bad, monitorable, last, count

    def update(self, x) -> pd.DataFrame:
        """Score one sample (1-D array/Series of the variables) or a block of rows.

        Returns one row of statistics per sample (the columns of
        :meth:`MOLAMonitor.statistics`), indexed by the input's index or, for arrays, by the
        sample's position in the stream. NaN/inf follow the stream's dropout policy.
        """
        self.monitor._check_scoring_params()
        series = self._validate(x)
        last_time = self._check_time(series.index)
        values, missing, monitorable, last, count = self._fill_missing(series.values,
                                                                      series.index)
        frame = self._score(values, series.index, missing, monitorable)
        self.last_value, self.hold_count, self.last_time = last, count, last_time
        return frame

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """A copy of the stream's state (window buffer, CUSUM vectors, W-BF episode, last
        valid values and hold counts, last timestamp, samples seen)."""
        return {
            "buffer": self.buffer.copy(),
            "cusums": [[c.get_state() for c in block] for block in self.cusums],
            "order_weights": (None if self.order_weights is None
                              else self.order_weights.get_state()),
            "n_seen": self.n_seen,
            "last_value": self.last_value.copy(),
            "hold_count": self.hold_count.copy(),
            "last_time": self.last_time,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a state returned by :meth:`get_state` (checked against the monitor)."""
        mon = self.monitor
        n_vars = len(mon.mean_)
        keys = ("buffer", "cusums", "order_weights", "n_seen", "last_value", "hold_count",
                "last_time")
        if not isinstance(state, dict) or set(keys) - set(state):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state must be a dict with the keys {list(keys)} (from "
                             f"get_state), got {got}")
        n_seen = state["n_seen"]
        if isinstance(n_seen, bool) or not isinstance(n_seen, (int, np.integer)) or n_seen < 0:
            raise ValueError(f"state['n_seen'] must be an int >= 0, got {n_seen!r}")
        buffer = np.array(state["buffer"], dtype=np.float64)
        if buffer.shape != (min(int(n_seen), mon.window - 1), n_vars) or \
                not np.isfinite(buffer).all():
            raise ValueError(f"state['buffer'] must hold min(n_seen, window - 1) = "
                             f"{min(int(n_seen), mon.window - 1)} finite rows of {n_vars} "
                             f"variables, got shape {buffer.shape}; was the state taken from "
                             "a stream of this monitor?")
        cusums = [[QuantileCUSUM(c.edges, c.k) for c in block] for block in self.cusums]
        saved = state["cusums"]
        if not isinstance(saved, (list, tuple)) or len(saved) != len(cusums) or any(
                not isinstance(s, (list, tuple)) or len(s) != len(b)
                for s, b in zip(saved, cusums, strict=True)):
            raise ValueError("state['cusums'] does not match the monitor's blocks and "
                             "networks; was the state taken from a stream of this monitor?")
        for block, block_saved in zip(cusums, saved, strict=True):
            for cusum, (u_obs, u_exp) in zip(block, block_saved, strict=True):
                cusum.set_state(u_obs, u_exp)
                if cusum.u_obs.shape != (cusum.n_features * cusum.n_bins,):
                    raise ValueError(f"state['cusums'] holds a vector of shape "
                                     f"{cusum.u_obs.shape}, the monitor's CUSUM needs "
                                     f"({cusum.n_features * cusum.n_bins},)")
        order_weights = None
        if self.order_weights is not None:
            order, next_order, quiet = state["order_weights"]
            order_weights = OrderWeights(self.order_weights.n_blocks, self.order_weights.gamma,
                                         self.order_weights.base_weight,
                                         self.order_weights.reset_after)
            order_weights.set_state(order, next_order, quiet)
            if order_weights.order.shape != (order_weights.n_blocks,):
                raise ValueError(f"state['order_weights'] has {order_weights.order.shape} "
                                 f"block orders, the monitor has {order_weights.n_blocks} "
                                 "blocks")
        last_value = np.array(state["last_value"], dtype=np.float64)
        hold_count = np.array(state["hold_count"], dtype=np.int64)
        if last_value.shape != (n_vars,) or hold_count.shape != (n_vars,) or \
                (hold_count < 0).any():
            raise ValueError(f"state['last_value'] and state['hold_count'] must have "
                             f"{n_vars} entries (counts >= 0), got shapes {last_value.shape} "
                             f"and {hold_count.shape}")
        last_time = state["last_time"]
        if last_time is not None:
            if not isinstance(last_time, str):
                raise ValueError(f"state['last_time'] must be None or an ISO time, got "
                                 f"{last_time!r}")
            pd.Timestamp(last_time)  # raises on a malformed time
        self.buffer, self.cusums, self.order_weights = buffer, cusums, order_weights
        self.n_seen, self.last_value, self.hold_count = int(n_seen), last_value, hold_count
        self.last_time = last_time

    def save(self, path):
        """Write the monitor and this stream's state to one file (see :mod:`mola_ts.persistence`).

        :meth:`load` gives a stream that continues exactly where this one stands.
        """
        if self._unfused:
            raise ValueError("an internal calibration stream cannot be saved")
        mon = self.monitor
        params = {"monitor": mon._params_to_save(), "missing": self.missing,
                  "max_hold": self.max_hold, "on_stale": self.on_stale}
        state = {"monitor": mon._state_to_save(), "stream": self.get_state()}
        return save_estimator(self, path, state, params=params)

    @classmethod
    def load(cls, path) -> MonitorStream:
        """Read a stream written by :meth:`save` (its monitor included)."""
        params, state = load_estimator(path, cls.__name__)
        try:
            monitor = MOLAMonitor(**params["monitor"])
            monitor._restore_state(state["monitor"])
            stream = cls(monitor, missing=params["missing"], max_hold=params["max_hold"],
                         on_stale=params["on_stale"])
            stream.set_state(state["stream"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EstimatorFileError(f"{path}: the saved stream does not fit MonitorStream "
                                     f"({type(exc).__name__}: {exc})") from exc
        return stream
