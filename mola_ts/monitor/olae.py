"""The orthogonal LSTM autoencoder (OLAE) of one block (monitoring spec §2).

Encoder: an LSTM over a window of ``w`` samples, its last hidden state -> Linear -> code
``z`` (q numbers). Decoder: ``z`` repeated ``w`` times -> LSTM -> Linear -> the reconstructed
window. Training loss: ``MSE(window, reconstruction) + lambda * orthogonality`` where the
orthogonality term is ``||R - I||_F^2`` with ``R = Zc^T Zc / B`` over a batch of B codes centred
and scaled to unit variance (a correlation matrix: the codes are pushed to be uncorrelated), or
``||W W^T - I||_F^2`` on the encoder's output weights ``W`` (q x h), or both.

:class:`ExactOLAE` evaluates a trained OLAE in float64 numpy with row-wise operations only, so a
window's code and reconstruction are bit-identical whether it is scored alone or in a batch:
this is what lets streaming scoring equal batch scoring exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..training import unwrap_model

__all__ = [
    "OLAE",
    "ORTHO_TARGETS",
    "code_orthogonality",
    "weight_orthogonality",
    "olae_loss",
    "ExactOLAE",
]

ORTHO_TARGETS = ("codes", "weights", "both")


class OLAE(nn.Module):
    """LSTM encoder -> code -> LSTM decoder for windows of shape (B, w, n_features)."""

    def __init__(self, n_features: int, hidden_size: int, code_size: int, window: int):
        super().__init__()
        self.window = int(window)
        self.encoder = nn.LSTM(n_features, hidden_size, batch_first=True)
        self.to_code = nn.Linear(hidden_size, code_size)
        self.decoder = nn.LSTM(code_size, hidden_size, batch_first=True)
        self.to_output = nn.Linear(hidden_size, n_features)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (B, q) of windows (B, w, n_features)."""
        out, _ = self.encoder(x)
        return self.to_code(out[:, -1])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed windows (B, w, n_features) of codes (B, q)."""
        out, _ = self.decoder(z.unsqueeze(1).expand(-1, self.window, -1))
        return self.to_output(out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z


def code_orthogonality(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``||Zc^T Zc / B - I||_F^2`` of a batch of codes centred and scaled to unit variance."""
    if z.shape[0] < 2:
        return z.new_zeros(())
    zc = z - z.mean(dim=0, keepdim=True)
    zc = zc / torch.sqrt(zc.pow(2).mean(dim=0, keepdim=True) + eps)
    gram = zc.T @ zc / z.shape[0]
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    return (gram - eye).pow(2).sum()


def weight_orthogonality(weight: torch.Tensor) -> torch.Tensor:
    """``||W W^T - I||_F^2`` of the encoder's output weights (q x h): orthonormal rows."""
    eye = torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return (weight @ weight.T - eye).pow(2).sum()


def olae_loss(model: OLAE, x: torch.Tensor, ortho_weight: float, ortho_target: str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, reconstruction MSE, orthogonality penalty)`` of one batch of windows.

    ``model`` may be the OLAE's DDP wrapper (the loss of a torchrun launch): the forward runs
    through it, the code weights are read from the module inside.
    """
    recon, z = model(x)
    mse = torch.mean((recon - x) ** 2)
    if ortho_target == "codes":
        ortho = code_orthogonality(z)
    elif ortho_target == "weights":
        ortho = weight_orthogonality(unwrap_model(model).to_code.weight)
    elif ortho_target == "both":
        ortho = code_orthogonality(z) + weight_orthogonality(unwrap_model(model).to_code.weight)
    else:
        raise ValueError(f"ortho_target must be one of {ORTHO_TARGETS}, got {ortho_target!r}")
    return mse + ortho_weight * ortho, mse, ortho


def _mm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    # x @ w.T with numpy's own loops (no BLAS): each row's result is independent of the batch.
    return np.einsum("bi,gi->bg", x, w)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class ExactOLAE:
    """Batch-invariant float64 numpy evaluation of a trained :class:`OLAE`.

    Parameters
    ----------
    state : dict of str -> ndarray
        The OLAE's ``state_dict`` as arrays (see :meth:`from_module`).
    window : int
    """

    def __init__(self, state: dict[str, np.ndarray], window: int):
        self.state = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
        self.window = int(window)
        self.hidden_size = self.state["encoder.weight_hh_l0"].shape[1]

    @classmethod
    def from_module(cls, module: OLAE) -> ExactOLAE:
        state = {k: v.detach().cpu().double().numpy().copy()
                 for k, v in module.state_dict().items()}
        return cls(state, module.window)

    def _lstm(self, prefix: str, inputs, n: int, constant_input: bool) -> np.ndarray:
        s = self.state
        w_ih, w_hh = s[f"{prefix}.weight_ih_l0"], s[f"{prefix}.weight_hh_l0"]
        bias = s[f"{prefix}.bias_ih_l0"] + s[f"{prefix}.bias_hh_l0"]
        h = np.zeros((n, self.hidden_size))
        c = np.zeros((n, self.hidden_size))
        hs = self.hidden_size
        outputs = []
        fixed = _mm(inputs, w_ih) + bias if constant_input else None
        for t in range(self.window):
            pre = fixed if constant_input else _mm(inputs[:, t], w_ih) + bias
            gates = pre + _mm(h, w_hh)
            sig = _sigmoid(gates)  # elementwise: the i, f, o gates (g's part is unused)
            g = np.tanh(gates[:, 2 * hs:3 * hs])
            c = sig[:, hs:2 * hs] * c + sig[:, :hs] * g
            h = sig[:, 3 * hs:] * np.tanh(c)
            outputs.append(h)
        return np.stack(outputs, axis=1)

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Codes (n, q) of windows (n, w, n_features)."""
        windows = np.asarray(windows, dtype=np.float64)
        last = self._lstm("encoder", windows, len(windows), constant_input=False)[:, -1]
        return _mm(last, self.state["to_code.weight"]) + self.state["to_code.bias"]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Reconstructed windows (n, w, n_features) of codes (n, q)."""
        out = self._lstm("decoder", np.asarray(codes, dtype=np.float64), len(codes),
                         constant_input=True)
        n, w, h = out.shape
        flat = _mm(out.reshape(n * w, h), self.state["to_output.weight"])
        return (flat + self.state["to_output.bias"]).reshape(n, w, -1)
