"""One-step predictors of a process, whose residuals (innovations) the monitors watch.

Normal operation of a plant wanders: slow random-walk-like variables leave the range of any
finite training run (monitoring spec §7). A statistic of the process *level* sees that wander as
a fault; the one-step prediction residual ``e_t = x_t - E[x_t | x_{t-1}, ..]`` does not, because
the predictor follows the level. :class:`RidgeVAR` is the default predictor, a ridge-penalised
vector autoregression of order p on standardised variables; :class:`MLPPredictor` is a small
neural option with the same interface.

Everything is row-wise (``np.einsum`` contractions, no BLAS), so one row scored alone and the
same row scored in a batch give identical bits: streams equal batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["lag_matrix", "RidgeVAR", "MLPPredictor", "make_predictor", "PREDICTORS"]

PREDICTORS = ("var", "mlp", "lora-moe")


def lag_matrix(values: np.ndarray, order: int) -> np.ndarray:
    """Rows ``[x_{t-1}, .., x_{t-p}]`` for t = p .. n-1, shape (n - p, p * d)."""
    n = len(values)
    if n <= order:
        return np.empty((0, order * values.shape[1]))
    return np.concatenate([values[order - j - 1: n - j - 1] for j in range(order)], axis=1)


def _design(segments: Sequence[np.ndarray], order: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacked lag rows and targets of every segment long enough (lags never cross segments)."""
    zs, ys = [], []
    for seg in segments:
        if len(seg) > order:
            zs.append(lag_matrix(seg, order))
            ys.append(seg[order:])
    if not zs:
        raise ValueError(f"no segment is longer than the predictor's order {order}")
    return np.concatenate(zs), np.concatenate(ys)


class RidgeVAR:
    """``x_t = c + sum_i A_i x_{t-i} + e_t`` fitted by ridge regression (intercept unpenalised).

    Parameters
    ----------
    order : int
        Lags p.
    ridge : float
        Penalty on the squared lag coefficients (on standardised variables, not scaled by the
        number of rows: its weight fades as the data grow).
    """

    def __init__(self, order: int = 1, ridge: float = 1.0):
        self.order = int(order)
        self.ridge = float(ridge)

    def fit(self, segments: Sequence[np.ndarray]) -> RidgeVAR:
        """Fit on standardised segments (each (n_i, d), contiguous in time)."""
        z, y = _design(segments, self.order)
        z1 = np.concatenate([np.ones((len(z), 1)), z], axis=1)
        penalty = self.ridge * np.eye(z1.shape[1])
        penalty[0, 0] = 0.0
        coef = np.linalg.solve(z1.T @ z1 + penalty, z1.T @ y)
        self.intercept_ = coef[0].copy()
        self.coef_ = coef[1:].copy()  # (p d, d)
        return self

    def predict_lagged(self, lagged: np.ndarray) -> np.ndarray:
        """Predictions of rows whose lag features (n, p d) are given (row-wise exact)."""
        return np.einsum("ni,ij->nj", lagged, self.coef_) + self.intercept_

    def get_state(self) -> dict[str, np.ndarray]:
        return {"intercept": self.intercept_, "coef": self.coef_}

    @classmethod
    def from_state(cls, state: dict, order: int, ridge: float) -> RidgeVAR:
        model = cls(order, ridge)
        model.intercept_ = np.asarray(state["intercept"], dtype=np.float64)
        model.coef_ = np.asarray(state["coef"], dtype=np.float64)
        if model.coef_.ndim != 2 or model.coef_.shape != (order * len(model.intercept_),
                                                          len(model.intercept_)):
            raise ValueError(f"predictor coefficients of shape {model.coef_.shape} do not fit "
                             f"order {order} and {len(model.intercept_)} variables")
        return model


class MLPPredictor:
    """A one-hidden-layer tanh network on the lag features, plus the linear (VAR) part.

    ``x_t = c + A z_t + W2 tanh(W1 z_t + b1)`` with ``z_t`` the p lags, trained by full-batch
    L-BFGS (PyTorch, float64) on the squared one-step error with an L2 penalty ``ridge``; the
    linear part starts from the ridge VAR solution, so the network only has to learn what the
    VAR misses. Scoring is plain numpy (row-wise exact).
    """

    def __init__(self, order: int = 1, ridge: float = 1.0, hidden: int = 32,
                 max_iter: int = 200, random_state: int | None = 0):
        self.order = int(order)
        self.ridge = float(ridge)
        self.hidden = int(hidden)
        self.max_iter = int(max_iter)
        self.random_state = random_state

    def fit(self, segments: Sequence[np.ndarray]) -> MLPPredictor:
        import torch

        z, y = _design(segments, self.order)
        linear = RidgeVAR(self.order, self.ridge).fit(segments)
        gen = torch.Generator().manual_seed(0 if self.random_state is None
                                            else int(self.random_state))
        zt, yt = torch.from_numpy(z), torch.from_numpy(y)
        d_in, d_out = z.shape[1], y.shape[1]
        w1 = (torch.randn(d_in, self.hidden, generator=gen, dtype=torch.float64)
              / np.sqrt(d_in)).requires_grad_(True)
        b1 = torch.zeros(self.hidden, dtype=torch.float64, requires_grad=True)
        w2 = torch.zeros(self.hidden, d_out, dtype=torch.float64, requires_grad=True)
        a = torch.from_numpy(linear.coef_.copy()).requires_grad_(True)
        c = torch.from_numpy(linear.intercept_.copy()).requires_grad_(True)
        params = [w1, b1, w2, a, c]
        opt = torch.optim.LBFGS(params, max_iter=self.max_iter, line_search_fn="strong_wolfe")
        n = float(len(z))

        def closure():
            opt.zero_grad()
            pred = c + zt @ a + torch.tanh(zt @ w1 + b1) @ w2
            loss = ((pred - yt) ** 2).sum() / n + self.ridge / n * (
                (a ** 2).sum() + (w1 ** 2).sum() + (w2 ** 2).sum())
            loss.backward()
            return loss

        opt.step(closure)
        self.intercept_ = c.detach().numpy().copy()
        self.coef_ = a.detach().numpy().copy()
        self.w1_, self.b1_ = w1.detach().numpy().copy(), b1.detach().numpy().copy()
        self.w2_ = w2.detach().numpy().copy()
        return self

    def predict_lagged(self, lagged: np.ndarray) -> np.ndarray:
        hidden = np.tanh(np.einsum("ni,ij->nj", lagged, self.w1_) + self.b1_)
        return (np.einsum("ni,ij->nj", lagged, self.coef_)
                + np.einsum("ni,ij->nj", hidden, self.w2_) + self.intercept_)

    def get_state(self) -> dict[str, np.ndarray]:
        return {"intercept": self.intercept_, "coef": self.coef_, "w1": self.w1_,
                "b1": self.b1_, "w2": self.w2_}

    @classmethod
    def from_state(cls, state: dict, order: int, ridge: float, hidden: int) -> MLPPredictor:
        model = cls(order, ridge, hidden)
        for key in ("intercept", "coef", "w1", "b1", "w2"):
            setattr(model, f"{key}_", np.asarray(state[key], dtype=np.float64))
        d = len(model.intercept_)
        shapes = {"coef": (order * d, d), "w1": (order * d, hidden), "b1": (hidden,),
                  "w2": (hidden, d)}
        for key, shape in shapes.items():
            if getattr(model, f"{key}_").shape != shape:
                raise ValueError(f"predictor weights {key} of shape "
                                 f"{getattr(model, f'{key}_').shape} do not fit {shape}")
        return model


def make_predictor(kind: str, order: int, ridge: float, *, hidden: int = 32,
                   random_state: int | None = 0):
    """A fresh predictor of ``kind`` (``"var"`` or ``"mlp"``; the residual monitor builds its
    ``"lora-moe"`` one, :class:`~mola_ts.monitor.lora_predictor.LoRAMoEPredictor`)."""
    if kind == "var":
        return RidgeVAR(order, ridge)
    if kind == "mlp":
        return MLPPredictor(order, ridge, hidden, random_state=random_state)

    raise ValueError(f"predictor must be one of {PREDICTORS}, got {kind!r}")
