"""Kernels for the gated wide-LoRA delta and the dispatcher the LoRA-MoE layer calls.

``gated_lora_delta(x, A, B, gates, expert_index, scale)`` is the one entry point. It runs the fused
Triton kernels (:mod:`.triton_fused`) on CUDA tensors when Triton is importable, and the PyTorch
reference (:mod:`.reference`) otherwise. The environment variable ``MOLA_TS_KERNELS`` forces a
path, read at every call:

``auto`` (default)
    kernels for CUDA tensors of a supported dtype (float16, bfloat16, float32 with ``x``, ``A``
    and ``B`` sharing it) when Triton imports; the reference for everything else.
``triton``
    always the kernels; raises when Triton is missing or the tensors cannot run there. With
    ``TRITON_INTERPRET=1`` set before the kernels are first imported, they run on CPU tensors in
    Triton's interpreter (slow: for tests only).
``reference``
    always the reference.

Importing this package never imports Triton (a Linux x86_64-only dependency); the kernels module
is imported on first use.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType
from typing import Literal

import torch

from .reference import gated_lora_delta_reference

__all__ = ["gated_lora_delta", "gated_lora_delta_reference", "kernel_backend", "triton_available"]

_MODES = ("auto", "triton", "reference")


@functools.cache
def _triton_module() -> ModuleType | None:
    """The fused-kernels module, or None when Triton cannot be imported (cached)."""
    try:
        return importlib.import_module(".triton_fused", __name__)
    except ImportError:
        return None


def triton_available() -> bool:
    """Whether the fused Triton kernels can be imported on this machine."""
    return _triton_module() is not None


def _mode() -> str:
    mode = os.environ.get("MOLA_TS_KERNELS", "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(f"MOLA_TS_KERNELS must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode


def kernel_backend(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   gates: torch.Tensor) -> Literal["triton", "reference"]:
    """The path :func:`gated_lora_delta` takes for these tensors under ``MOLA_TS_KERNELS``.

    Raises
    ------
    ValueError
        ``MOLA_TS_KERNELS`` has an unknown value, or is ``triton`` with tensors the kernels
        cannot take (CPU tensors outside the interpreter, several devices).
    TypeError
        ``MOLA_TS_KERNELS=triton`` with an unsupported dtype combination.
    ImportError
        ``MOLA_TS_KERNELS=triton`` and Triton cannot be imported.
    """
    mode = _mode()
    if mode == "reference":
        return "reference"
    fused = _triton_module()
    if mode == "triton":
        if fused is None:
            raise ImportError("MOLA_TS_KERNELS=triton but Triton cannot be imported (it is "
                              "installed on Linux x86_64 only); unset it to use the reference")
        fused.check_kernel_inputs(x, A, B, gates)
        return "triton"
    if fused is None or x.device.type != "cuda":
        return "reference"
    try:
        fused.check_kernel_inputs(x, A, B, gates)
    except (TypeError, ValueError):
        return "reference"
    return "triton"


def _check_shapes(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gates: torch.Tensor,
                  expert_index: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (tokens, d_in), got shape {tuple(x.shape)}")
    n, d_in = x.shape
    if A.dim() != 2 or A.shape[1] != d_in:
        raise ValueError(f"A must have shape (R, d_in={d_in}), got {tuple(A.shape)}")
    rank = A.shape[0]
    if B.dim() != 2 or B.shape[1] != rank:
        raise ValueError(f"B must have shape (d_out, R={rank}), got {tuple(B.shape)}")
    if gates.dim() != 2 or gates.shape[0] != n:
        raise ValueError(f"gates must have shape (N={n}, E), got {tuple(gates.shape)}")
    if expert_index.shape != (rank,):
        raise ValueError(f"expert_index must have shape (R={rank},), got "
                         f"{tuple(expert_index.shape)}")
    if expert_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"expert_index must be an int64 (or int32) tensor, got "
                        f"{expert_index.dtype}")


def gated_lora_delta(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gates: torch.Tensor,
                     expert_index: torch.Tensor, scale: float) -> torch.Tensor:
    """The LoRA-MoE delta ``scale * ((x @ A.T) * gates[:, expert_index]) @ B.T``.

    Parameters
    ----------
    x : Tensor, shape (N, d_in)
        Tokens.
    A : Tensor, shape (R, d_in)
        The experts' input matrices stacked row-wise (R = sum of the ranks; a shared A is
        passed repeated once per expert).
    B : Tensor, shape (d_out, R)
        The experts' output matrices stacked column-wise.
    gates : Tensor, shape (N, E)
        Dense gates with zeros for inactive experts (softmax, top-k, Sparsegen or task gates).
    expert_index : Tensor, shape (R,)
        The expert of each rank row (int64), in ``[0, E)``.
    scale : float
        The LoRA scale.

    Returns
    -------
    Tensor, shape (N, d_out)
        The delta, differentiable with respect to ``x``, ``A``, ``B`` and ``gates``. The path
        (fused kernels or reference) is chosen by :func:`kernel_backend`.

    Examples
    --------
    >>> import torch
    >>> x, A, B = torch.randn(5, 8), torch.randn(4, 8), torch.randn(6, 4)
    >>> gates, expert_index = torch.rand(5, 2), torch.tensor([0, 0, 1, 1])
    >>> gated_lora_delta(x, A, B, gates, expert_index, 0.5).shape
    torch.Size([5, 6])
    """
    _check_shapes(x, A, B, gates, expert_index)
    if kernel_backend(x, A, B, gates) == "triton":
        return _triton_module().gated_lora_delta_triton(x, A, B, gates, expert_index, scale)
    return gated_lora_delta_reference(x, A, B, gates, expert_index, scale)
