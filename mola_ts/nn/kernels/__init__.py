"""Kernels for the gated wide-LoRA delta and the dispatcher the LoRA-MoE layer calls.

``gated_lora_delta(x, A, B, gates, expert_index, scale)`` is the one entry point. Today it runs
the PyTorch reference (:mod:`.reference`); fused Triton kernels plug in behind the same call.
``MOLA_TS_KERNELS=auto|triton|reference`` will force a path once the kernels exist.
"""

from __future__ import annotations

import torch

from .reference import gated_lora_delta_reference

__all__ = ["gated_lora_delta", "gated_lora_delta_reference"]


def gated_lora_delta(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gates: torch.Tensor,
                     expert_index: torch.Tensor, scale: float) -> torch.Tensor:
    """The LoRA-MoE delta for 2-D ``x`` (tokens, d_in); see :mod:`.reference` for the formula."""
    return gated_lora_delta_reference(x, A, B, gates, expert_index, scale)
