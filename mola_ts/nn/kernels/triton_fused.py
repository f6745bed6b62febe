"""Fused Triton kernels for the gated wide-LoRA delta, forward and backward.

Same contract as :func:`~mola_ts.nn.kernels.reference.gated_lora_delta_reference`::

    delta = scale * ((x @ A.T) * gates[:, expert_index]) @ B.T

The delta is memory-bound: with R = 64 rank rows and d = 4096, a token does ~2R flops per element
it reads. What costs is traffic over the (N, d) tensors, so every kernel streams each of them once:

* forward, ``_fwd_kernel``, one pass per token tile: ``h = x A^T`` (loop over d_in), gates gathered
  per rank row and applied in registers, then ``y = (s h g) B^T`` written chunk by chunk over d_out.
  ``h`` (N x R, fp32) is stored for the backward; the (N, d_out) output is written once, already
  scaled (the reference writes it, then reads and writes it again for ``* scale``).
* backward, ``_bwd_expand_kernel``, one pass over ``dy``: ``dhs = dy B`` (a d_out reduction, kept in
  registers) and ``dB += dy^T (s h g)`` (a token reduction, flushed with fp32 atomics per tile).
* backward, ``_bwd_shrink_kernel``, one pass over ``x``: ``dh = s g dhs`` in registers, the gate
  gradient (a one-hot segment sum over each expert's rank rows), ``dx = dh A`` and
  ``dA += dh^T x`` (fp32 atomics per tile).

Only (N, R)-sized tensors (``h`` and ``dhs``, R = 64 is 1/64 of d = 4096) go through memory between
passes; ``h`` is saved rather than recomputed because recomputing it means re-reading ``x`` in the
pass over ``dy``. fp32 atomics make ``dA``/``dB`` (and ``h``/``dhs`` when a pass is split) vary in
the last bits from run to run on a GPU.

Importing this module imports Triton: the package's dispatcher imports it lazily. Whether the
kernels run on the GPU or in Triton's CPU interpreter is fixed when this module is imported:
``@triton.jit`` reads ``TRITON_INTERPRET`` at decoration time (see :data:`INTERPRETED`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRETED", "TileConfig", "GatedLoRADeltaFunction", "gated_lora_delta_triton",
           "choose_tile_config", "check_kernel_inputs"]

#: True when the kernels were built for Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import).
INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes and work splits of one launch of the fused kernels.

    Parameters
    ----------
    block_m : int
        Tokens per program (a power of two >= 16). Larger tiles mean fewer ``dA``/``dB``
        atomics per element of ``x``/``dy``; smaller tiles mean more programs.
    block_k : int
        Columns of ``x`` (d_in) per loop step.
    block_n : int
        Columns of ``y``/``dy`` (d_out) per loop step.
    split_k : int
        Programs sharing one token tile in the pass over ``x`` in the backward (each takes a
        contiguous range of d_in chunks). Capped at the number of chunks.
    split_n : int
        Programs sharing one token tile in the passes over d_out (forward and backward).
        The forward recomputes ``h`` in each; the backward adds their ``dhs`` with atomics.
    num_warps : int
        Warps per program (ignored by the interpreter).
    num_stages : int
        Software-pipelining depth of the loops (ignored by the interpreter).
    """

    block_m: int = 64
    block_k: int = 64
    block_n: int = 64
    split_k: int = 1
    split_n: int = 1
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self) -> None:
        for name in ("block_m", "block_k", "block_n"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"TileConfig.{name} must be a power of two >= 16, got {value}")
        for name in ("split_k", "split_n", "num_warps", "num_stages"):
            if getattr(self, name) < 1:
                raise ValueError(f"TileConfig.{name} must be >= 1, got {getattr(self, name)}")


def _pad(n: int) -> int:
    """The tile width holding ``n`` columns: a power of two, at least 16 (the tl.dot minimum)."""
    return max(16, triton.next_power_of_2(n))


def choose_tile_config(n_tokens: int, d_in: int, d_out: int, rank: int,
                       dtype: torch.dtype, device: torch.device) -> TileConfig:
    """A launch configuration for these sizes (a heuristic: tune it on the target GPU).

    On a GPU the token tile is 64 (128 when R <= 32 and there are enough tiles to fill the
    card), chunks are 128 wide in 16-bit (64 in fp32), and the passes are split so that about two
    programs per SM are live. The interpreter gets the smallest tiles.
    """
    if INTERPRETED or device.type != "cuda":
        return TileConfig(block_m=16, block_k=16, block_n=16, split_k=1, split_n=1,
                          num_warps=1, num_stages=1)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    r_pad = _pad(rank)
    block_m = 128 if r_pad <= 32 and triton.cdiv(n_tokens, 128) >= 2 * sms else 64
    block = 64 if dtype == torch.float32 else 128
    m_tiles = triton.cdiv(n_tokens, block_m)
    want = max(1, triton.cdiv(2 * sms, m_tiles))
    return TileConfig(block_m=block_m, block_k=block, block_n=block,
                      split_k=min(want, triton.cdiv(d_in, block)),
                      split_n=min(want, triton.cdiv(d_out, block)),
                      num_warps=8 if block_m * r_pad >= 8192 else 4, num_stages=3)


# --------------------------------------------------------------------------------------------
# Kernels. Shapes in comments: M = BLOCK_M tokens, K/N = one chunk of d_in/d_out, RP = R padded.
# Out-of-range rows, rank rows and columns are masked to zero on load and never stored.
# --------------------------------------------------------------------------------------------

@triton.jit
def _chunk_range(n_cols, BLOCK: tl.constexpr):
    """The chunks [first, last) of n_cols that this program's split (program_id 1) covers."""
    n_chunks = tl.cdiv(n_cols, BLOCK)
    per_split = tl.cdiv(n_chunks, tl.num_programs(1))
    first = tl.program_id(1) * per_split
    return first, tl.minimum(first + per_split, n_chunks)


@triton.jit
def _gathered_gates(g_ptr, idx_ptr, offs_m, offs_r, mask_m, mask_r, stride_gm, stride_ge):
    """gates[m, expert_index[r]] as an (M, RP) fp32 tile: each expert's gate over its rank rows."""
    idx = tl.load(idx_ptr + offs_r, mask=mask_r, other=0)
    ptrs = g_ptr + offs_m[:, None] * stride_gm + idx[None, :] * stride_ge
    return tl.load(ptrs, mask=mask_m[:, None] & mask_r[None, :], other=0.0).to(tl.float32)


@triton.jit
def _fwd_kernel(x_ptr, a_ptr, b_ptr, g_ptr, idx_ptr, y_ptr, h_ptr,
                n_tokens, d_in, d_out, rank, scale,
                stride_xm, stride_xk, stride_ar, stride_ak, stride_bn, stride_br,
                stride_gm, stride_ge, stride_ym, stride_yn,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
                R_PAD: tl.constexpr, SAVE_H: tl.constexpr, PRECISION: tl.constexpr):
    """y[tile] = (scale * (x A^T) * G) B^T over this split's d_out chunks; h saved by split 0."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, R_PAD)
    mask_m = offs_m < n_tokens
    mask_r = offs_r < rank

    # shrink: h = x A^T, (M, RP), the whole d_in reduction in registers
    offs_k = tl.arange(0, BLOCK_K)
    h = tl.zeros((BLOCK_M, R_PAD), dtype=tl.float32)
    for c in range(0, tl.cdiv(d_in, BLOCK_K)):
        cols = c * BLOCK_K + offs_k
        mask_k = cols < d_in
        xt = tl.load(x_ptr + offs_m[:, None] * stride_xm + cols[None, :] * stride_xk,
                     mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        at = tl.load(a_ptr + offs_r[None, :] * stride_ar + cols[:, None] * stride_ak,
                     mask=mask_r[None, :] & mask_k[:, None], other=0.0)  # (K, RP) = A^T chunk
        h = tl.dot(xt, at, acc=h, input_precision=PRECISION)
    if SAVE_H:
        if tl.program_id(1) == 0:
            tl.store(h_ptr + offs_m[:, None] * rank + offs_r[None, :], h,
                     mask=mask_m[:, None] & mask_r[None, :])

    # gate and scale in registers, then expand: y = hs B^T chunk by chunk
    g = _gathered_gates(g_ptr, idx_ptr, offs_m, offs_r, mask_m, mask_r, stride_gm, stride_ge)
    hs = (h * g * scale).to(y_ptr.dtype.element_ty)
    offs_n = tl.arange(0, BLOCK_N)
    first, last = _chunk_range(d_out, BLOCK_N)
    for c in range(first, last):
        cols = c * BLOCK_N + offs_n
        mask_n = cols < d_out
        bt = tl.load(b_ptr + cols[None, :] * stride_bn + offs_r[:, None] * stride_br,
                     mask=mask_r[:, None] & mask_n[None, :], other=0.0)  # (RP, N) = B^T chunk
        y = tl.dot(hs, bt, input_precision=PRECISION)
        tl.store(y_ptr + offs_m[:, None] * stride_ym + cols[None, :] * stride_yn,
                 y.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _bwd_expand_kernel(dy_ptr, b_ptr, h_ptr, g_ptr, idx_ptr, dhs_ptr, db_ptr,
                       n_tokens, d_out, rank, scale,
                       stride_dym, stride_dyn, stride_bn, stride_br, stride_gm, stride_ge,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, R_PAD: tl.constexpr,
                       COMPUTE_DHS: tl.constexpr, COMPUTE_DB: tl.constexpr,
                       ATOMIC_DHS: tl.constexpr, PRECISION: tl.constexpr):
    """One pass over dy: dhs = dy B (kept in registers) and dB += dy^T hs (atomics)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, R_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    mask_m = offs_m < n_tokens
    mask_r = offs_r < rank
    mask_mr = mask_m[:, None] & mask_r[None, :]

    if COMPUTE_DB:
        h = tl.load(h_ptr + offs_m[:, None] * rank + offs_r[None, :], mask=mask_mr, other=0.0)
        g = _gathered_gates(g_ptr, idx_ptr, offs_m, offs_r, mask_m, mask_r, stride_gm, stride_ge)
        hs = (h * g * scale).to(dy_ptr.dtype.element_ty)
    dhs = tl.zeros((BLOCK_M, R_PAD), dtype=tl.float32)
    first, last = _chunk_range(d_out, BLOCK_N)
    for c in range(first, last):
        cols = c * BLOCK_N + offs_n
        mask_n = cols < d_out
        dy = tl.load(dy_ptr + offs_m[:, None] * stride_dym + cols[None, :] * stride_dyn,
                     mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        if COMPUTE_DHS:
            b = tl.load(b_ptr + cols[:, None] * stride_bn + offs_r[None, :] * stride_br,
                        mask=mask_n[:, None] & mask_r[None, :], other=0.0)  # (N, RP)
            dhs = tl.dot(dy, b, acc=dhs, input_precision=PRECISION)
        if COMPUTE_DB:
            db = tl.dot(tl.trans(dy), hs, input_precision=PRECISION)  # (N, RP)
            tl.atomic_add(db_ptr + cols[:, None] * rank + offs_r[None, :], db,
                          mask=mask_n[:, None] & mask_r[None, :])
    if COMPUTE_DHS:
        ptrs = dhs_ptr + offs_m[:, None] * rank + offs_r[None, :]
        if ATOMIC_DHS:
            tl.atomic_add(ptrs, dhs, mask=mask_mr)
        else:
            tl.store(ptrs, dhs, mask=mask_mr)


@triton.jit
def _bwd_shrink_kernel(x_ptr, a_ptr, h_ptr, g_ptr, idx_ptr, dhs_ptr, dx_ptr, da_ptr, dg_ptr,
                       n_tokens, d_in, rank, n_experts, scale,
                       stride_xm, stride_xk, stride_ar, stride_ak, stride_gm, stride_ge,
                       stride_dxm, stride_dxk, stride_dgm, stride_dge,
                       BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, R_PAD: tl.constexpr,
                       E_PAD: tl.constexpr, COMPUTE_DX: tl.constexpr,
                       COMPUTE_DA: tl.constexpr, COMPUTE_DG: tl.constexpr,
                       PRECISION: tl.constexpr):
    """One pass over x: dh = s G dhs, d gates (split 0), dx = dh A, dA += dh^T x (atomics)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, R_PAD)
    mask_m = offs_m < n_tokens
    mask_r = offs_r < rank
    mask_mr = mask_m[:, None] & mask_r[None, :]

    dhs = tl.load(dhs_ptr + offs_m[:, None] * rank + offs_r[None, :], mask=mask_mr, other=0.0)
    if COMPUTE_DG:
        if tl.program_id(1) == 0:
            # d gates[m, e] = sum over e's rank rows r of s * h[m, r] * dhs[m, r]: a segment sum,
            # done as a product with the (RP, EP) one-hot of expert_index (exact fp32 dot).
            h = tl.load(h_ptr + offs_m[:, None] * rank + offs_r[None, :], mask=mask_mr, other=0.0)
            offs_e = tl.arange(0, E_PAD)
            idx = tl.load(idx_ptr + offs_r, mask=mask_r, other=-1)
            onehot = ((idx[:, None] == offs_e[None, :]) & mask_r[:, None]).to(tl.float32)
            dg = tl.dot(h * dhs * scale, onehot, input_precision="ieee")
            tl.store(dg_ptr + offs_m[:, None] * stride_dgm + offs_e[None, :] * stride_dge,
                     dg.to(dg_ptr.dtype.element_ty),
                     mask=mask_m[:, None] & (offs_e < n_experts)[None, :])
    if COMPUTE_DX or COMPUTE_DA:
        g = _gathered_gates(g_ptr, idx_ptr, offs_m, offs_r, mask_m, mask_r, stride_gm, stride_ge)
        dh = (dhs * g * scale).to(x_ptr.dtype.element_ty)
        offs_k = tl.arange(0, BLOCK_K)
        first, last = _chunk_range(d_in, BLOCK_K)
        for c in range(first, last):
            cols = c * BLOCK_K + offs_k
            mask_k = cols < d_in
            if COMPUTE_DX:
                a = tl.load(a_ptr + offs_r[:, None] * stride_ar + cols[None, :] * stride_ak,
                            mask=mask_r[:, None] & mask_k[None, :], other=0.0)  # (RP, K)
                dx = tl.dot(dh, a, input_precision=PRECISION)
                tl.store(dx_ptr + offs_m[:, None] * stride_dxm + cols[None, :] * stride_dxk,
                         dx.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_k[None, :])
            if COMPUTE_DA:
                xt = tl.load(x_ptr + offs_m[:, None] * stride_xm + cols[None, :] * stride_xk,
                             mask=mask_m[:, None] & mask_k[None, :], other=0.0)
                da = tl.dot(tl.trans(dh), xt, input_precision=PRECISION)  # (RP, K)
                tl.atomic_add(da_ptr + offs_r[:, None] * d_in + cols[None, :], da,
                              mask=mask_r[:, None] & mask_k[None, :])


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------

def _precision(dtype: torch.dtype) -> str:
    """fp32 dots follow torch's TF32 switch for matmuls, like the reference's ``@``."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _launch_kw(cfg: TileConfig) -> dict:
    return {} if INTERPRETED else {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


def _forward(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, gates: torch.Tensor,
             expert_index: torch.Tensor, scale: float, cfg: TileConfig,
             save_h: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    n, d_in = x.shape
    d_out, rank = B.shape
    y = torch.empty((n, d_out), dtype=x.dtype, device=x.device)
    h = torch.empty((n, rank), dtype=torch.float32, device=x.device) if save_h else None
    split_n = min(cfg.split_n, triton.cdiv(d_out, cfg.block_n))
    grid = (triton.cdiv(n, cfg.block_m), split_n)
    _fwd_kernel[grid](
        x, A, B, gates, expert_index, y, h if save_h else y,
        n, d_in, d_out, rank, float(scale),
        x.stride(0), x.stride(1), A.stride(0), A.stride(1), B.stride(0), B.stride(1),
        gates.stride(0), gates.stride(1), y.stride(0), y.stride(1),
        BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, BLOCK_N=cfg.block_n, R_PAD=_pad(rank),
        SAVE_H=save_h, PRECISION=_precision(x.dtype), **_launch_kw(cfg))
    return y, h


def _backward(dy: torch.Tensor, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
              gates: torch.Tensor, expert_index: torch.Tensor, h: torch.Tensor, scale: float,
              cfg: TileConfig, need_dx: bool, need_da: bool, need_db: bool, need_dg: bool):
    n, d_in = x.shape
    d_out, rank = B.shape
    n_experts = gates.shape[1]
    dev = x.device
    r_pad = _pad(rank)
    precision = _precision(x.dtype)
    m_tiles = triton.cdiv(n, cfg.block_m)
    need_dhs = need_dx or need_da or need_dg

    dhs = db = None
    if need_dhs or need_db:
        split_n = min(cfg.split_n, triton.cdiv(d_out, cfg.block_n))
        atomic_dhs = split_n > 1
        if need_dhs:
            dhs = (torch.zeros if atomic_dhs else torch.empty)(
                (n, rank), dtype=torch.float32, device=dev)
        if need_db:
            db = torch.zeros((d_out, rank), dtype=torch.float32, device=dev)
        _bwd_expand_kernel[(m_tiles, split_n)](
            dy, B, h, gates, expert_index, dhs if need_dhs else h, db if need_db else h,
            n, d_out, rank, float(scale),
            dy.stride(0), dy.stride(1), B.stride(0), B.stride(1), gates.stride(0),
            gates.stride(1),
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, R_PAD=r_pad, COMPUTE_DHS=need_dhs,
            COMPUTE_DB=need_db, ATOMIC_DHS=atomic_dhs, PRECISION=precision, **_launch_kw(cfg))

    dx = da = dg = None
    if need_dhs:
        dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else None
        da = torch.zeros((rank, d_in), dtype=torch.float32, device=dev) if need_da else None
        # every (token, expert) entry is written by the split-0 program of its tile
        dg = torch.empty_like(gates, memory_format=torch.contiguous_format) if need_dg else None
        # The gate gradient needs no pass over x: one program per tile is enough then.
        split_k = min(cfg.split_k, triton.cdiv(d_in, cfg.block_k)) if (need_dx or need_da) else 1
        dx_arg = dx if need_dx else x
        dg_arg = dg if need_dg else gates
        _bwd_shrink_kernel[(m_tiles, split_k)](
            x, A, h, gates, expert_index, dhs, dx_arg, da if need_da else dhs, dg_arg,
            n, d_in, rank, n_experts, float(scale),
            x.stride(0), x.stride(1), A.stride(0), A.stride(1), gates.stride(0), gates.stride(1),
            dx_arg.stride(0), dx_arg.stride(1), dg_arg.stride(0), dg_arg.stride(1),
            BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, R_PAD=r_pad, E_PAD=_pad(n_experts),
            COMPUTE_DX=need_dx, COMPUTE_DA=need_da, COMPUTE_DG=need_dg, PRECISION=precision,
            **_launch_kw(cfg))
    return (dx, da.to(A.dtype) if need_da else None, db.to(B.dtype) if need_db else None, dg)


class GatedLoRADeltaFunction(torch.autograd.Function):
    """Autograd wrapper of the fused kernels: saves ``x``, the weights, gates and ``h`` (N x R)."""

    @staticmethod
    def forward(ctx, x, A, B, gates, expert_index, scale, cfg):  # noqa: D102
        save_h = any(ctx.needs_input_grad[:4])
        y, h = _forward(x, A, B, gates, expert_index, scale, cfg, save_h)
        if save_h:
            ctx.save_for_backward(x, A, B, gates, expert_index, h)
        ctx.scale, ctx.cfg = scale, cfg
        return y

    @staticmethod
    def backward(ctx, dy):  # noqa: D102
        x, A, B, gates, expert_index, h = ctx.saved_tensors
        need_dx, need_da, need_db, need_dg = ctx.needs_input_grad[:4]
        dx, da, db, dg = _backward(dy, x, A, B, gates, expert_index, h, ctx.scale, ctx.cfg,
                                   need_dx, need_da, need_db, need_dg)
        return dx, da, db, dg, None, None, None


def check_kernel_inputs(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                        gates: torch.Tensor) -> None:
    """Raise when the kernels cannot take these tensors (device, dtype); shapes are checked by
    the dispatcher."""
    if x.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"fused LoRA kernels: x must be float16, bfloat16 or float32, "
                        f"got {x.dtype}")
    if A.dtype != x.dtype or B.dtype != x.dtype:
        raise TypeError(f"fused LoRA kernels: x, A and B must share one dtype, got x {x.dtype}, "
                        f"A {A.dtype}, B {B.dtype}")
    if not gates.is_floating_point():
        raise TypeError(f"fused LoRA kernels: gates must be floating point, got {gates.dtype}")
    devices = {t.device for t in (x, A, B, gates)}
    if len(devices) != 1:
        raise ValueError(f"fused LoRA kernels: all tensors must be on one device, got "
                         f"{sorted(str(d) for d in devices)}")
    if INTERPRETED:
        if x.dtype == torch.bfloat16:
            raise TypeError("fused LoRA kernels: bfloat16 cannot run under the Triton "
                            "interpreter (its bf16 tl.dot is wrong); use float16/float32 or a GPU")
    elif x.device.type != "cuda":
        raise ValueError(f"fused LoRA kernels need CUDA tensors, got x on {x.device} (set "
                         "TRITON_INTERPRET=1 before mola_ts.nn.kernels.triton_fused is imported "
                         "to run them on CPU in Triton's interpreter)")


def gated_lora_delta_triton(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                            gates: torch.Tensor, expert_index: torch.Tensor, scale: float, *,
                            config: TileConfig | None = None) -> torch.Tensor:
    """The fused-kernel gated wide-LoRA delta (same contract as the reference).

    Parameters
    ----------
    x : Tensor, shape (N, d_in)
        Tokens (float16, bfloat16 or float32; CUDA, or CPU under ``TRITON_INTERPRET=1``).
    A : Tensor, shape (R, d_in)
        The experts' stacked input matrices, same dtype as ``x``.
    B : Tensor, shape (d_out, R)
        The experts' stacked output matrices, same dtype as ``x``.
    gates : Tensor, shape (N, E)
        Dense gates, zeros for inactive experts (any float dtype; math in fp32).
    expert_index : Tensor, shape (R,)
        The expert (in ``[0, E)``, not checked on the device) of each rank row.
    scale : float
        The LoRA scale (alpha / r).
    config : TileConfig, optional
        Tile sizes and splits; :func:`choose_tile_config` when omitted.

    Returns
    -------
    Tensor, shape (N, d_out)
        ``scale * ((x @ A.T) * gates[:, expert_index]) @ B.T`` in ``x``'s dtype, differentiable
        with respect to ``x``, ``A``, ``B`` and ``gates``.
    """
    check_kernel_inputs(x, A, B, gates)
    n, d_in = x.shape
    d_out, rank = B.shape
    if n == 0 or rank == 0 or d_in == 0 or d_out == 0:  # nothing for a kernel to do
        from .reference import gated_lora_delta_reference

        return gated_lora_delta_reference(x, A, B, gates, expert_index, scale)
    if config is None:
        config = choose_tile_config(n, d_in, d_out, rank, x.dtype, x.device)
    expert_index = expert_index.to(device=x.device, dtype=torch.int64).contiguous()
    return GatedLoRADeltaFunction.apply(x, A, B, gates, expert_index, float(scale), config)
