"""The reference (pure PyTorch) gated wide-LoRA delta: the contract every kernel must meet.

With the experts of a layer stacked row-wise, ``A`` (R x d_in) and ``B`` (d_out x R), and
``expert_index`` (R,) naming the expert each of the R rank rows belongs to, the LoRA-MoE delta of
a batch of tokens ``x`` (N x d_in) with dense gates ``gates`` (N x E) is

    delta = scale * ((x @ A.T) * gates[:, expert_index]) @ B.T            (N x d_out)

Two skinny matmuls and one gathered elementwise product: no loop over experts. Heterogeneous
ranks are a different ``expert_index``; a shared A (MoSLD) is ``A`` repeated per expert; task,
top-k and Sparsegen gates are dense gate matrices with zeros for inactive experts.
"""

from __future__ import annotations

import torch

__all__ = ["gated_lora_delta_reference"]


def gated_lora_delta_reference(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                               gates: torch.Tensor, expert_index: torch.Tensor,
                               scale: float) -> torch.Tensor:
    """``scale * ((x @ A.T) * gates[:, expert_index]) @ B.T`` for 2-D ``x`` (tokens, d_in)."""
    h = x @ A.t()  # (N, R): the shrink
    h = h * gates.index_select(1, expert_index).to(h.dtype)  # per-rank-row gate
    return (h @ B.t()) * scale  # (N, d_out): the expand
