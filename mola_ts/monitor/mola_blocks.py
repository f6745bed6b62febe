"""One MOLA block: its orthogonal LSTM autoencoder(s), T^2 code statistics and CUSUM settings.

A block of MOLA (monitoring spec §1-§3) owns a few variables. :class:`OLAEBlock` holds, per
network of the block (``n_ensemble`` of them), a :class:`BlockNetwork`: the trained OLAE's
weights, the mean and precision of its training codes (Hotelling T^2) and the quantile-bin
edges and allowance of its quantile CUSUM W. :meth:`OLAEBlock.levels` turns windows of the
block's inputs into the block's T^2, W (and SPE) from a given CUSUM state, row-wise exactly
(float64 numpy, see :class:`~mola_ts.monitor.olae.ExactOLAE`), so a stream equals a batch.

The block's saved form (:meth:`OLAEBlock.to_state`) is the dict the first MOLAMonitor stored
per block (``name``, ``columns``, ``members`` with ``olae``, ``t2_mean``, ``t2_precision``,
``edges``, ``cusum_k``), so files of that version load.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..training import TrainConfig, seed_everything, train
from .charts import QuantileCUSUM, fit_t2, quantile_edges, t2_statistic
from .olae import OLAE, ExactOLAE, olae_loss

__all__ = ["BlockNetwork", "OLAEBlock", "OLAESpec", "train_olae", "joint_cusum"]


def joint_cusum(positions: list[np.ndarray], states: list[tuple[np.ndarray, float]],
                allowances: list[float], n_bins: int, ok: np.ndarray
                ) -> tuple[list[np.ndarray], list[tuple[np.ndarray, float]]]:
    """Advance the quantile CUSUMs (spec §3) of several networks together, one row at a time.

    ``positions[b]`` (n, q_b) are network b's flat indicator positions
    (:meth:`~mola_ts.monitor.charts.QuantileCUSUM.bin_indices`), ``states[b]`` its
    ``(U_obs, U_exp)`` and ``allowances[b]`` its k. The recursion is the one of
    :class:`~mola_ts.monitor.charts.QuantileCUSUM`, written for all networks at once (one set of
    array operations per row instead of one per row and network). Rows not ``ok`` give W = 0 and
    leave the state. Returns each network's W (n,) and new state (the given ones are kept).
    """
    n_net, n = len(positions), len(ok)
    sizes = [p.shape[1] * n_bins for p in positions]
    width = max(sizes) + 1  # one scratch column takes the padding of shorter networks
    u = np.zeros((n_net, width))
    valid = np.zeros((n_net, width))
    for b, (u_obs, _) in enumerate(states):
        u[b, :sizes[b]] = u_obs
        valid[b, :sizes[b]] = 1.0
    u_exp = np.array([float(st[1]) for st in states])
    k = np.asarray(allowances, dtype=np.float64)
    q = np.array([p.shape[1] for p in positions], dtype=np.float64)
    q_max = int(q.max())
    hot = np.full((n, n_net, q_max), width - 1, dtype=np.int64)
    pad = np.zeros((n_net, q_max))
    for b, p in enumerate(positions):
        hot[:, b, :p.shape[1]] = p
        pad[b, :p.shape[1]] = 1.0
    hot += (np.arange(n_net) * width)[None, :, None]
    f0 = 1.0 / n_bins
    w_out = np.zeros((n, n_net))
    flat = u.reshape(-1)  # a view: updates through it change u
    for t in np.flatnonzero(ok):
        h = hot[t]
        e = u_exp + f0
        d = (u - e[:, None]) * valid
        c = (np.einsum("bq,bq->b", d, d)
             + 2.0 * np.einsum("bq->b", d.reshape(-1)[h] * pad) + q) / e
        reset = c <= k
        shrink = np.where(reset, 0.0, (c - k) / c)
        flat[h] += pad
        u *= shrink[:, None]
        flat[width - 1::width] = 0.0
        u_exp = e * shrink
        d = (u - u_exp[:, None]) * valid
        w_out[t] = np.where(reset, 0.0, np.einsum("bq,bq->b", d, d)
                            / np.where(reset, 1.0, u_exp))
    new_states = [(u[b, :sizes[b]].copy(), float(u_exp[b])) for b in range(n_net)]
    return [w_out[:, b].copy() for b in range(n_net)], new_states


@dataclass(frozen=True)
class OLAESpec:
    """Shape and loss of one block's OLAE: hidden size, code size, window, orthogonality."""

    hidden_size: int
    code_size: int
    window: int
    ortho_weight: float
    ortho_target: str


def train_olae(train_windows: np.ndarray, val_windows: np.ndarray, spec: OLAESpec,
               config: TrainConfig, seed: int | None
               ) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    """Train one OLAE on windows (n, w, variables); early stopping on ``val_windows``.

    ``config`` holds the training settings (epochs, batch size, lr, patience, device); the
    seed, ``drop_last`` and the evaluation batch follow from ``seed`` and the data. Returns the
    weights as float64 arrays and the per-epoch history.
    """
    hidden_size, code_size, window = spec.hidden_size, spec.code_size, spec.window
    ortho_target = spec.ortho_target
    seed_everything(seed)
    n_vars = train_windows.shape[2]
    model = OLAE(n_vars, hidden_size, min(code_size, n_vars), window)
    ortho_weight = float(spec.ortho_weight)

    def loss_fn(m, batch):
        return olae_loss(m, batch[0], ortho_weight, ortho_target)[0]

    def val_fn(m, batch):
        _, mse, ortho = olae_loss(m, batch[0], ortho_weight, ortho_target)
        return {"loss": mse, "ortho": ortho}

    train_data = (torch.from_numpy(np.ascontiguousarray(train_windows, dtype=np.float32)),)
    val_data = (torch.from_numpy(np.ascontiguousarray(val_windows, dtype=np.float32)),)
    config = replace(config, random_state=seed,
                     drop_last=len(train_windows) > config.batch_size,
                     eval_batch_size=max(len(val_windows), 1))
    result = train(model, train_data, loss_fn, config, val_data=val_data, val_fn=val_fn)
    model.cpu()
    state = {k: v.detach().double().numpy().copy() for k, v in model.state_dict().items()}
    history = [{k: float(v) for k, v in rec.items()} for rec in result.history]
    return state, history


@dataclass
class BlockNetwork:
    """One trained OLAE of a block with the statistics of its training codes."""

    weights: dict[str, np.ndarray]
    window: int
    t2_mean: np.ndarray | None = None
    t2_precision: np.ndarray | None = None
    edges: np.ndarray | None = None
    cusum_k: float | None = None
    _exact: ExactOLAE | None = field(default=None, repr=False)

    @property
    def exact(self) -> ExactOLAE:
        """The row-wise exact float64 evaluator of the network."""
        if self._exact is None:
            self._exact = ExactOLAE(self.weights, self.window)
        return self._exact

    def fit_statistics(self, windows: np.ndarray, n_bins: int, cusum_allowance: float) -> None:
        """T^2 mean/precision, CUSUM bin edges and allowance of the codes of ``windows``."""
        codes = self.exact.encode(windows)
        self.t2_mean, self.t2_precision = fit_t2(codes)
        self.edges = quantile_edges(codes, n_bins)
        self.cusum_k = float(cusum_allowance * codes.shape[1] * (n_bins - 1))

    def to_state(self) -> dict:
        return {"olae": self.weights, "t2_mean": self.t2_mean,
                "t2_precision": self.t2_precision, "edges": self.edges,
                "cusum_k": self.cusum_k}

    @classmethod
    def from_state(cls, state: dict, window: int) -> BlockNetwork:
        weights = {k: np.asarray(v, dtype=np.float64) for k, v in state["olae"].items()}
        return cls(weights, int(window), np.asarray(state["t2_mean"], dtype=np.float64),
                   np.asarray(state["t2_precision"], dtype=np.float64),
                   np.asarray(state["edges"], dtype=np.float64), float(state["cusum_k"]))


@dataclass
class OLAEBlock:
    """A block: its name, the positions of its variables and its network(s)."""

    name: str
    columns: list[int]
    networks: list[BlockNetwork]

    def fit_statistics(self, windows: np.ndarray, n_bins: int, cusum_allowance: float) -> None:
        """Fit every network's code statistics on windows (n, w, all variables)."""
        win = np.ascontiguousarray(windows[:, :, self.columns])
        for net in self.networks:
            net.fit_statistics(win, n_bins, cusum_allowance)

    def init_cusum_state(self) -> list[tuple[np.ndarray, float]]:
        """The CUSUM state at rest of every network: ``(U_obs, U_exp scalar)``."""
        return [(np.zeros(net.edges.shape[0] * (net.edges.shape[1] + 1)), 0.0)
                for net in self.networks]

    def check_cusum_state(self, saved) -> list[tuple[np.ndarray, float]]:
        """A saved CUSUM state of this block as ``(U_obs, U_exp)`` pairs (ValueError if not)."""
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.networks):
            raise ValueError(f"the CUSUM state of block {self.name!r} must hold "
                             f"{len(self.networks)} pairs (one per network)")
        out = []
        for net, pair in zip(self.networks, saved, strict=True):
            cusum = QuantileCUSUM(net.edges, net.cusum_k)
            u_obs, u_exp = pair
            cusum.set_state(u_obs, u_exp)
            if cusum.u_obs.shape != (cusum.n_features * cusum.n_bins,) or \
                    not np.isfinite(cusum.u_obs).all():
                raise ValueError(f"the CUSUM state of block {self.name!r} holds a vector of "
                                 f"shape {cusum.u_obs.shape}, the block needs "
                                 f"({cusum.n_features * cusum.n_bins},) finite values")
            out.append((cusum.u_obs, float(cusum._u_exp)))
        return out

    def levels(self, windows: np.ndarray, ok: np.ndarray, spe: bool
               ) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """T^2 (and SPE) of windows (n, w, all variables), networks' mean (summed in order), 0
        on rows not ``ok``; and each network's CUSUM bin positions (n, q) for :func:`joint_cusum`.
        """
        win = np.ascontiguousarray(windows[:, :, self.columns])
        n = len(win)
        sums = {"T2": np.zeros(n)}
        if spe:
            sums["SPE"] = np.zeros(n)
        positions = []
        for net in self.networks:
            with np.errstate(over="ignore", invalid="ignore"):
                codes = net.exact.encode(win)
                sums["T2"] += t2_statistic(codes, net.t2_mean, net.t2_precision)
                if spe:
                    err = win[:, -1] - net.exact.decode(codes)[:, -1]
                    sums["SPE"] += np.einsum("ni,ni->n", err, err)
            if not np.isfinite(codes).all():
                codes = np.nan_to_num(codes)
            positions.append(QuantileCUSUM(net.edges, net.cusum_k).bin_indices(codes))
        k = len(self.networks)
        out = {lev: (v / k if k > 1 else v) for lev, v in sums.items()}
        for v in out.values():
            v[~ok] = 0.0
        return out, positions

    def to_state(self) -> dict:
        return {"name": self.name, "columns": list(self.columns),
                "members": [net.to_state() for net in self.networks]}

    @classmethod
    def from_state(cls, state: dict, window: int) -> OLAEBlock:
        return cls(str(state["name"]), [int(c) for c in state["columns"]],
                   [BlockNetwork.from_state(m, window) for m in state["members"]])
