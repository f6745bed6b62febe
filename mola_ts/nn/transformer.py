"""Transformer encoder blocks built only from plain ``nn.Linear`` layers.

Every projection (query, key, value, output, and the two feed-forward layers) is an ordinary
``nn.Linear`` with a stable name, so a LoRA-MoE adapter can wrap any of them by name
(``"ffn.fc1"``, ``"attn.q_proj"``, ...). Inputs are ``(..., tokens, d_model)``: any number of
leading batch dimensions is allowed, which lets a channel-independent model keep the sample
dimension first (per-sample routing broadcasts over the middle dimensions).

Layout of one block (``norm_first=False``, the post-norm of the original Transformer and of
iTransformer)::

    x = norm1(x + dropout(attn(x)))
    x = norm2(x + dropout(fc2(dropout(act(fc1(x))))))

and with ``norm_first=True`` (pre-norm)::

    x = x + dropout(attn(norm1(x)))
    x = x + dropout(fc2(dropout(act(fc1(norm2(x))))))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultiHeadSelfAttention", "FeedForward", "EncoderLayer", "TransformerEncoder"]

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


class MultiHeadSelfAttention(nn.Module):
    """Full (unmasked by default) multi-head self-attention with separate q/k/v/out projections.

    Parameters
    ----------
    d_model : int
        Token width; must be divisible by ``n_heads``.
    n_heads : int
        Number of heads (head width ``d_model // n_heads``; scores scaled by its inverse sqrt).
    dropout : float
        Dropout on the attention weights during training.
    bias : bool
        Whether the four projections have a bias.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model < 1 or n_heads < 1 or d_model % n_heads:
            raise ValueError(
                f"d_model must be a positive multiple of n_heads; got d_model={d_model}, "
                f"n_heads={n_heads}"
            )
        self.d_model = d_model
        self.n_heads = n_heads
        self.dropout = float(dropout)
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        # (..., T, d) -> (..., h, T, d / h)
        *lead, n_tokens, _ = t.shape
        return t.reshape(*lead, n_tokens, self.n_heads, -1).transpose(-2, -3)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over the token axis of ``x`` (..., T, d_model); ``attn_mask`` as in SDPA."""
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(
            self.v_proj(x))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = out.transpose(-2, -3).reshape(x.shape)
        return self.out_proj(out)


class FeedForward(nn.Module):
    """Position-wise feed-forward: ``fc2(dropout(act(fc1(x))))`` (d_model -> d_ff -> d_model)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "gelu",
                 bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.act = _activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class EncoderLayer(nn.Module):
    """One encoder block: self-attention then feed-forward, each with a residual and LayerNorm.

    Parameters
    ----------
    d_model, n_heads, d_ff : int
        Token width, attention heads, feed-forward width.
    dropout : float
        Used on the attention weights, after the activation and on both residual branches.
    activation : {"gelu", "relu"}
    norm_first : bool
        Pre-norm when True; post-norm (the original Transformer and iTransformer) when False.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "gelu", norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadSelfAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def attention_block(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """The first half of the block: self-attention with its residual and norm."""
        if self.norm_first:
            return x + self.dropout(self.attn(self.norm1(x), attn_mask))
        return self.norm1(x + self.dropout(self.attn(x, attn_mask)))

    def ffn_block(self, x: torch.Tensor) -> torch.Tensor:
        """The second half of the block: feed-forward with its residual and norm."""
        if self.norm_first:
            return x + self.dropout(self.ffn(self.norm2(x)))
        return self.norm2(x + self.dropout(self.ffn(x)))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.ffn_block(self.attention_block(x, attn_mask))


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` with an optional final LayerNorm.

    Module names are stable for adapter targeting: ``layers.{i}.attn.{q,k,v,out}_proj`` and
    ``layers.{i}.ffn.fc{1,2}``.

    Examples
    --------
    >>> import torch
    >>> enc = TransformerEncoder(n_layers=2, d_model=16, n_heads=4, d_ff=32)
    >>> enc(torch.zeros(3, 7, 16)).shape
    torch.Size([3, 7, 16])
    """

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int,
                 dropout: float = 0.1, activation: str = "gelu", norm_first: bool = False,
                 final_norm: bool = True):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, activation, norm_first)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``x`` of shape (..., tokens, d_model); the shape is preserved."""
        for layer in self.layers:
            x = layer(x, attn_mask)
        return self.norm(x)
