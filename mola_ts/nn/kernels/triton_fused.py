"""Fused Triton kernels for the gated wide-LoRA delta, forward and backward.

Same contract as :func:`~mola_ts.nn.kernels.reference.gated_lora_delta_reference`::

    delta = scale * ((x @ A.T) * gates[:, expert_index]) @ B.T

The delta is memory-bound: with R = 64 rank rows and d = 4096 a token does ~2R flops per element
it reads, so what costs is traffic over the (N, d) tensors. The kernels stream each of them the
minimum number of times (x twice, y, dy and dx once; the reference moves ~10 such tensors, these
~5) and only (N, R)-sized tensors (1/64 of x at R = 64, d = 4096) go through memory in between:

1. forward, ``_fwd_kernel``, a program per token tile: ``h = x A^T`` (loop over d_in), the gates
   gathered per rank row and applied in registers, then ``y = (s g h) B^T`` stored chunk by chunk
   over d_out, already scaled. ``h`` (N x R, fp32) is kept for the backward: recomputing it would
   mean reading x once more in the backward's pass over ``dy``.
2. ``_bwd_dy_kernel``, a program per token tile, one pass over ``dy``: ``dhs = dy B`` (the d_out
   reduction, in registers) and ``dB += dy^T (s g h)`` (the token reduction, fp32 atomics per tile).
3. ``_bwd_gates_kernel``, per token tile, (N, R) only: ``dh = s g dhs`` and the gate gradient (a
   one-hot segment sum of ``s h dhs`` over each expert's rank rows).
4. ``_bwd_x_kernel``, one pass over ``x``: a program owns a d_in chunk and walks a group of token
   tiles, storing ``dx = dh A`` and accumulating ``dA += dh^T x`` in registers, flushed once (an
   atomic per group). Owning the column keeps dA's atomics to a few per element of A.

A pass may be split so that more programs run (``TileConfig``): the forward's splits of one tile
each take part of d_out and recompute ``h`` (neighbouring programs, so x comes from L2), the pass
over ``dy`` adds its splits' ``dhs`` with atomics. fp32 atomics make ``dA``, ``dB`` (and ``dhs``
when split) vary in the last bits between runs on a GPU.

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
        Tokens per tile (a power of two >= 16). In the pass over ``dy`` each tile adds its part
        of ``dB`` with atomics: larger tiles, fewer atomics; smaller tiles, more programs.
    block_k : int
        Columns of ``x`` (d_in) per step; in the backward's pass over x, the column chunk a
        program owns.
    block_n : int
        Columns of ``y``/``dy`` (d_out) per step.
    fwd_splits : int
        Programs sharing one token tile in the forward, each storing a contiguous range of d_out
        chunks; each recomputes the tile's ``h`` (x then comes from L2). Capped at the chunks.
    dy_splits : int
        Programs sharing one token tile in the backward's pass over ``dy``, each reading a range
        of d_out chunks and adding its part of ``dhs`` with atomics. Capped at the chunks.
    x_groups : int
        Groups of token tiles in the backward's pass over x: a program handles one group for one
        d_in chunk and flushes its part of ``dA`` once. Capped at the number of tiles.
    num_warps : int
        Warps per program (ignored by the interpreter).
    num_stages : int
        Software-pipelining depth of the loops (ignored by the interpreter).
    """

    block_m: int = 64
    block_k: int = 64
    block_n: int = 64
    fwd_splits: int = 1
    dy_splits: int = 1
    x_groups: int = 1
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self) -> None:
        for name in ("block_m", "block_k", "block_n"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"TileConfig.{name} must be a power of two >= 16, got {value}")
        for name in ("fwd_splits", "dy_splits", "x_groups", "num_warps", "num_stages"):
            if getattr(self, name) < 1:
                raise ValueError(f"TileConfig.{name} must be >= 1, got {getattr(self, name)}")


def _pad(n: int) -> int:
    """The tile width holding ``n`` columns: a power of two, at least 16 (the tl.dot minimum)."""
    return max(16, triton.next_power_of_2(n))


def choose_tile_config(n_tokens: int, d_in: int, d_out: int, rank: int,
                       dtype: torch.dtype, device: torch.device) -> TileConfig:
    """A launch configuration for these sizes: a heuristic, to be tuned on the target GPU.

    On a GPU: token tiles of 128 when R <= 64 (64 above: the (tile x R) fp32 accumulators live
    in registers), chunks 128 wide in 16-bit and 64 in fp32; the forward is split only when there
    are fewer tiles than SMs (a split recomputes h), the other passes so that about two programs
    per SM run. The interpreter gets the smallest tiles.
    """
    if INTERPRETED or device.type != "cuda":
        return TileConfig(block_m=16, block_k=16, block_n=16, num_warps=1, num_stages=1)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    r_pad = _pad(rank)
    block_m = 128 if r_pad <= 64 else 64
    block = 64 if dtype == torch.float32 else 128
    m_tiles = triton.cdiv(n_tokens, block_m)
    k_chunks, n_chunks = triton.cdiv(d_in, block), triton.cdiv(d_out, block)
    return TileConfig(block_m=block_m, block_k=block, block_n=block,
                      fwd_splits=min(max(1, round(sms / m_tiles)), n_chunks),
                      dy_splits=min(triton.cdiv(2 * sms, m_tiles), n_chunks),
                      x_groups=min(triton.cdiv(2 * sms, k_chunks), m_tiles),
                      num_warps=8 if block_m * r_pad >= 8192 else 4, num_stages=3)


# --------------------------------------------------------------------------------------------
# Kernels. Shapes in comments: M = BLOCK_M tokens, K/N = one chunk of d_in/d_out, RP = R padded.
# Out-of-range rows, rank rows and columns are masked to zero on load and never stored.
# Grids are 1-D with the split index varying fastest, so that the programs of one tile run
# side by side and share what they read through L2.
# --------------------------------------------------------------------------------------------

@triton.jit
def _chunk_range(n_cols, split, n_splits, BLOCK: tl.constexpr):
    """The chunks [first, last) of n_cols that split ``split`` of ``n_splits`` covers."""
    n_chunks = tl.cdiv(n_cols, BLOCK)
    per_split = tl.cdiv(n_chunks, n_splits)
    first = split * per_split
    return first, tl.minimum(first + per_split, n_chunks)


@triton.jit
def _gathered_gates(g_ptr, idx_ptr, offs_m, offs_r, mask_m, mask_r, stride_gm, stride_ge):
    """gates[m, expert_index[r]] as an (M, RP) fp32 tile: each expert's gate over its rank rows."""
    idx = tl.load(idx_ptr + offs_r, mask=mask_r, other=0)
    ptrs = g_ptr + offs_m[:, None] * stride_gm + idx[None, :] * stride_ge
    return tl.load(ptrs, mask=mask_m[:, None] & mask_r[None, :], other=0.0).to(tl.float32)


@triton.jit
def _fwd_kernel(x_ptr, a_ptr, b_ptr, g_ptr, idx_ptr, y_ptr, h_ptr,
                n_tokens, d_in, d_out, rank, scale, n_splits,
                stride_xm, stride_xk, stride_ar, stride_ak, stride_bn, stride_br,
                stride_gm, stride_ge, stride_ym, stride_yn,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
                R_PAD: tl.constexpr, SAVE_H: tl.constexpr, PRECISION: tl.constexpr):
    """y[tile] = (scale * (x A^T) * G) B^T over this split's d_out chunks; h saved by split 0."""
    pid = tl.program_id(0)
    split = pid % n_splits
    offs_m = (pid // n_splits) * BLOCK_M + tl.arange(0, BLOCK_M)
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
        if split == 0:
            tl.store(h_ptr + offs_m[:, None] * rank + offs_r[None, :], h,
                     mask=mask_m[:, None] & mask_r[None, :])

    # gate and scale in registers, then expand: y = hs B^T chunk by chunk
    g = _gathered_gates(g_ptr, idx_ptr, offs_m, offs_r, mask_m, mask_r, stride_gm, stride_ge)
    hs = (h * g * scale).to(y_ptr.dtype.element_ty)
    offs_n = tl.arange(0, BLOCK_N)
    first, last = _chunk_range(d_out, split, n_splits, BLOCK_N)
    for c in range(first, last):
        cols = c * BLOCK_N + offs_n
        mask_n = cols < d_out
        bt = tl.load(b_ptr + cols[None, :] * stride_bn + offs_r[:, None] * stride_br,
                     mask=mask_r[:, None] & mask_n[None, :], other=0.0)  # (RP, N) = B^T chunk
        y = tl.dot(hs, bt, input_precision=PRECISION)
        tl.store(y_ptr + offs_m[:, None] * stride_ym + cols[None, :] * stride_yn,
                 y.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _bwd_dy_kernel(dy_ptr, b_ptr, h_ptr, g_ptr, idx_ptr, dhs_ptr, db_ptr,
                   n_tokens, d_out, rank, scale, n_splits,
                   stride_dym, stride_dyn, stride_bn, stride_br, stride_gm, stride_ge,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, R_PAD: tl.constexpr,
                   COMPUTE_DHS: tl.constexpr, COMPUTE_DB: tl.constexpr,
                   PRECISION: tl.constexpr):
    """One pass over dy: dhs = dy B (registers; splits add theirs) and dB += dy^T hs (atomics)."""
    pid = tl.program_id(0)
    split = pid % n_splits
    offs_m = (pid // n_splits) * BLOCK_M + tl.arange(0, BLOCK_M)
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
    first, last = _chunk_range(d_out, split, n_splits, BLOCK_N)
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
        if n_splits > 1:
            tl.atomic_add(ptrs, dhs, mask=mask_mr)
        else:
            tl.store(ptrs, dhs, mask=mask_mr)


@triton.jit
def _bwd_gates_kernel(h_ptr, g_ptr, idx_ptr, dhs_ptr, dh_ptr, dg_ptr,
                      n_tokens, rank, n_experts, scale,
                      stride_gm, stride_ge, stride_dgm, stride_dge,
                      BLOCK_M: tl.constexpr, R_PAD: tl.constexpr, E_PAD: tl.constexpr,
                      COMPUTE_DH: tl.constexpr, COMPUTE_DG: tl.constexpr):
    """Per tile: dh = s G dhs (in x's dtype) and d gates = segment sums of s h dhs."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, R_PAD)
    mask_m = offs_m < n_tokens
    mask_r = offs_r < rank
    mask_mr = mask_m[:, None] & mask_r[None, :]
    dhs = tl.load(dhs_ptr + offs_m[:, None] * rank + offs_r[None, :], mask=mask_mr, other=0.0)
    if COMPUTE_DH:
        g = _gathered_gates(g_ptr, idx_ptr, offs_m, offs_r, mask_m, mask_r, stride_gm, stride_ge)
        tl.store(dh_ptr + offs_m[:, None] * rank + offs_r[None, :],
                 (dhs * g * scale).to(dh_ptr.dtype.element_ty), mask=mask_mr)
    if COMPUTE_DG:
        # d gates[m, e] = sum over e's rank rows r of s * h[m, r] * dhs[m, r]: a product with the
        # (RP, EP) one-hot of expert_index, as an exact fp32 dot.
        h = tl.load(h_ptr + offs_m[:, None] * rank + offs_r[None, :], mask=mask_mr, other=0.0)
        offs_e = tl.arange(0, E_PAD)
        idx = tl.load(idx_ptr + offs_r, mask=mask_r, other=-1)
        onehot = ((idx[:, None] == offs_e[None, :]) & mask_r[:, None]).to(tl.float32)
        dg = tl.dot(h * dhs * scale, onehot, input_precision="ieee")
        tl.store(dg_ptr + offs_m[:, None] * stride_dgm + offs_e[None, :] * stride_dge,
                 dg.to(dg_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & (offs_e < n_experts)[None, :])


@triton.jit
def _bwd_x_kernel(x_ptr, a_ptr, dh_ptr, dx_ptr, da_ptr,
                  n_tokens, d_in, rank, n_groups,
                  stride_xm, stride_xk, stride_ar, stride_ak, stride_dxm, stride_dxk,
                  BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, R_PAD: tl.constexpr,
                  COMPUTE_DX: tl.constexpr, COMPUTE_DA: tl.constexpr, PRECISION: tl.constexpr):
    """One pass over x: a program owns a d_in chunk and a group of token tiles; it stores
    dx = dh A and flushes its sum of dh^T x into dA once."""
    pid = tl.program_id(0)
    group = pid % n_groups
    cols = (pid // n_groups) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, R_PAD)
    mask_k = cols < d_in
    mask_r = offs_r < rank
    mask_rk = mask_r[:, None] & mask_k[None, :]
    if COMPUTE_DX:
        a = tl.load(a_ptr + offs_r[:, None] * stride_ar + cols[None, :] * stride_ak,
                    mask=mask_rk, other=0.0)  # (RP, K), reused by every tile of the group
    da = tl.zeros((R_PAD, BLOCK_K), dtype=tl.float32)
    first, last = _chunk_range(n_tokens, group, n_groups, BLOCK_M)
    for t in range(first, last):
        offs_m = t * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = offs_m < n_tokens
        dh = tl.load(dh_ptr + offs_m[:, None] * rank + offs_r[None, :],
                     mask=mask_m[:, None] & mask_r[None, :], other=0.0)
        if COMPUTE_DX:
            dx = tl.dot(dh, a, input_precision=PRECISION)
            tl.store(dx_ptr + offs_m[:, None] * stride_dxm + cols[None, :] * stride_dxk,
                     dx.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_k[None, :])
        if COMPUTE_DA:
            xt = tl.load(x_ptr + offs_m[:, None] * stride_xm + cols[None, :] * stride_xk,
                         mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            da = tl.dot(tl.trans(dh), xt, acc=da, input_precision=PRECISION)
    if COMPUTE_DA:
        ptrs = da_ptr + offs_r[:, None] * d_in + cols[None, :]
        if n_groups > 1:
            tl.atomic_add(ptrs, da, mask=mask_rk)
        else:
            tl.store(ptrs, da, mask=mask_rk)


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
    split_n = min(cfg.fwd_splits, triton.cdiv(d_out, cfg.block_n))
    _fwd_kernel[(triton.cdiv(n, cfg.block_m) * split_n,)](
        x, A, B, gates, expert_index, y, h if save_h else y,
        n, d_in, d_out, rank, float(scale), split_n,
        x.stride(0), x.stride(1), A.stride(0), A.stride(1), B.stride(0), B.stride(1),
        gates.stride(0), gates.stride(1), y.stride(0), y.stride(1),
        BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, BLOCK_N=cfg.block_n, R_PAD=_pad(rank),
        SAVE_H=save_h, PRECISION=_precision(x.dtype), **_launch_kw(cfg))
    return y, h


def _backward(dy: torch.Tensor, saved: tuple[torch.Tensor, ...], scale: float, cfg: TileConfig,
              needs: tuple[bool, bool, bool, bool]):
    """Gradients of x, A, B and gates (None where ``needs`` is False) from the saved
    ``(x, A, B, gates, expert_index, h)`` of the forward."""
    x, A, B, gates, expert_index, h = saved
    need_dx, need_da, need_db, need_dg = (bool(v) for v in needs)
    n, d_in = x.shape
    d_out, rank = B.shape
    dev = x.device
    r_pad = _pad(rank)
    precision = _precision(x.dtype)
    m_tiles = triton.cdiv(n, cfg.block_m)
    need_dh = need_dx or need_da
    need_dhs = need_dh or need_dg
    if not (need_dhs or need_db):
        return None, None, None, None

    # pass over dy: dhs (N x R) and dB
    split_n = min(cfg.dy_splits, triton.cdiv(d_out, cfg.block_n))
    dhs = (torch.zeros if split_n > 1 else torch.empty)((n, rank), dtype=torch.float32,
                                                        device=dev) if need_dhs else None
    db = torch.zeros((d_out, rank), dtype=torch.float32, device=dev) if need_db else None
    _bwd_dy_kernel[(m_tiles * split_n,)](
        dy, B, h, gates, expert_index, dhs if need_dhs else h, db if need_db else h,
        n, d_out, rank, float(scale), split_n,
        dy.stride(0), dy.stride(1), B.stride(0), B.stride(1), gates.stride(0), gates.stride(1),
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, R_PAD=r_pad, COMPUTE_DHS=need_dhs,
        COMPUTE_DB=need_db, PRECISION=precision, **_launch_kw(cfg))
    if not need_dhs:
        return None, None, db.to(B.dtype), None

    # (N, R) only: dh and the gate gradient (every (token, expert) entry is written)
    dh = torch.empty((n, rank), dtype=x.dtype, device=dev) if need_dh else None
    dg = torch.empty_like(gates, memory_format=torch.contiguous_format) if need_dg else None
    dg_arg = dg if need_dg else gates
    _bwd_gates_kernel[(m_tiles,)](
        h, gates, expert_index, dhs, dh if need_dh else dhs, dg_arg,
        n, rank, gates.shape[1], float(scale),
        gates.stride(0), gates.stride(1), dg_arg.stride(0), dg_arg.stride(1),
        BLOCK_M=cfg.block_m, R_PAD=r_pad, E_PAD=_pad(gates.shape[1]), COMPUTE_DH=need_dh,
        COMPUTE_DG=need_dg, **_launch_kw(cfg))

    # pass over x: dx and dA
    dx = da = None
    if need_dh:
        groups = min(cfg.x_groups, m_tiles)
        dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else None
        da = ((torch.zeros if groups > 1 else torch.empty)((rank, d_in), dtype=torch.float32,
                                                           device=dev) if need_da else None)
        dx_arg = dx if need_dx else x
        _bwd_x_kernel[(triton.cdiv(d_in, cfg.block_k) * groups,)](
            x, A, dh, dx_arg, da if need_da else dh,
            n, d_in, rank, groups,
            x.stride(0), x.stride(1), A.stride(0), A.stride(1), dx_arg.stride(0),
            dx_arg.stride(1),
            BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, R_PAD=r_pad, COMPUTE_DX=need_dx,
            COMPUTE_DA=need_da, PRECISION=precision, **_launch_kw(cfg))
    return (dx, da.to(A.dtype) if need_da else None, db.to(B.dtype) if need_db else None, dg)


class GatedLoRADeltaFunction(torch.autograd.Function):
    """Autograd wrapper of the fused kernels: saves ``x``, the weights, gates and ``h`` (N x R)."""

    @staticmethod
    def forward(ctx, x, A, B, gates, expert_index, scale, cfg):
        """Launch the forward kernel; keep h only when some gradient will be asked for."""
        save_h = any(ctx.needs_input_grad[:4])
        y, h = _forward(x, A, B, gates, expert_index, scale, cfg, save_h)
        if save_h:
            ctx.save_for_backward(x, A, B, gates, expert_index, h)
        ctx.scale, ctx.cfg = scale, cfg
        return y

    @staticmethod
    def backward(ctx, dy):
        """Launch the backward kernels for the gradients autograd needs."""
        dx, da, db, dg = _backward(dy, ctx.saved_tensors, ctx.scale, ctx.cfg,
                                   tuple(ctx.needs_input_grad[:4]))
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
