"""The fused Triton kernels against the reference: forward and every gradient.

Without a GPU the kernels run in Triton's CPU interpreter. ``@triton.jit`` picks the interpreter
when a kernel is *decorated*, i.e. when ``mola_ts.nn.kernels.triton_fused`` is first imported, so
this module sets ``TRITON_INTERPRET=1`` at collection time, before that import (the dispatcher
imports it only when the fused path is used, and nothing else does). The variable only affects
code decorated with ``@triton.jit`` afterwards (and inductor's Triton code generation, which CPU
runs do not use); the rest of the suite runs on the reference.
With a GPU the same tests run the compiled kernels on CUDA tensors (and bfloat16 too).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from types import SimpleNamespace

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

if not (sys.platform == "linux" and platform.machine() == "x86_64"):
    pytest.importorskip("triton", reason="triton is a dependency on Linux x86_64 only")

from mola_ts.nn.kernels import gated_lora_delta, gated_lora_delta_reference, kernel_backend  # noqa: E402
from mola_ts.nn.kernels import triton_fused as tf  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])
# Relative Frobenius error against a float64 reference, and max error relative to the largest
# entry: float16 and bfloat16 round x, h and the output on the way, like the reference does.
TOLERANCE = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
SMALL = tf.TileConfig(block_m=16, block_k=16, block_n=16, num_warps=1, num_stages=1)
# d_out 50 = 4 chunks over 3 splits (the last one empty) or 2; 3 token tiles in 2 uneven groups.
SPLIT = tf.TileConfig(block_m=16, block_k=16, block_n=16, fwd_splits=3, dy_splits=2, x_groups=2,
                      num_warps=1, num_stages=1)


def test_the_kernels_run_where_this_suite_expects():
    # Fails loudly if something imported the kernels before TRITON_INTERPRET was set.
    assert tf.INTERPRETED == (DEVICE.type == "cpu")


# name: (tokens, d_in, d_out, rank of each expert, number of experts in the gates, gate kind)
CASES = {
    "odd-sizes-mixed-ranks-top2": (37, 40, 50, (8, 5, 11), 3, "topk"),
    "one-expert": (20, 33, 17, (4,), 1, "dense"),
    "8x8-softmax": (48, 32, 48, (8,) * 8, 8, "dense"),
    "expert-without-rows-task-gates": (21, 19, 35, (6, 0, 3), 3, "task"),
}


def _gates(kind: str, n: int, n_experts: int, gen: torch.Generator) -> torch.Tensor:
    logits = torch.randn(n, n_experts, generator=gen)
    if kind == "task":  # one learned gate vector per task id: rows repeat
        task_logits = torch.randn(2, n_experts, generator=gen)
        logits = task_logits[torch.randint(0, 2, (n,), generator=gen)]
    gates = logits.softmax(-1)
    if kind == "topk" and n_experts > 2:
        kept = gates.topk(2, dim=-1).indices
        mask = torch.zeros_like(gates).scatter_(1, kept, 1.0)
        gates = gates * mask / (gates * mask).sum(-1, keepdim=True)
    return gates


def _make(case: str, dtype: torch.dtype, seed: int = 0):
    n, d_in, d_out, ranks, n_experts, kind = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    expert_index = torch.repeat_interleave(torch.arange(len(ranks)), torch.tensor(ranks))
    r = len(expert_index)
    x = torch.randn(n, d_in, generator=gen)
    A = torch.randn(r, d_in, generator=gen) / d_in**0.5
    B = torch.randn(d_out, r, generator=gen) / r**0.5
    gates = _gates(kind, n, n_experts, gen)
    dy = torch.randn(n, d_out, generator=gen)
    return [t.to(DEVICE, dtype) for t in (x, A, B)], gates.to(DEVICE), expert_index.to(DEVICE), \
        dy.to(DEVICE, dtype)


def _assert_close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str):
    assert got.shape == want.shape, what
    got, want = got.double().cpu(), want.double().cpu()
    scale = want.abs().max().clamp_min(1e-12)
    rel = ((got - want).norm() / want.norm().clamp_min(1e-12)).item()
    worst = ((got - want).abs().max() / scale).item()
    tol = TOLERANCE[dtype]
    assert rel <= tol and worst <= 5 * tol, f"{what}: relative error {rel:.2e}, max {worst:.2e}"


def _check_against_reference(weights, gates, expert_index, dy, dtype, scale, config, *,
                             x_view=None, gates_view=None):
    """Forward and the gradients of x, A, B and gates against a float64 reference; the views
    (applied inside autograd) feed the kernels strided inputs."""
    x, A, B = (t.detach().clone().requires_grad_() for t in weights)
    g = gates.detach().clone().requires_grad_()
    x_view = x_view or (lambda t: t)
    gates_view = gates_view or (lambda t: t)
    y = tf.gated_lora_delta_triton(x_view(x), A, B, gates_view(g), expert_index, scale,
                                   config=config)
    assert y.dtype == dtype and y.device.type == DEVICE.type
    y.backward(dy)

    ref = [t.detach().double().requires_grad_() for t in (x, A, B, g)]
    y_ref = gated_lora_delta_reference(x_view(ref[0]), ref[1], ref[2], gates_view(ref[3]),
                                       expert_index, scale)
    y_ref.backward(dy.double())
    _assert_close(y, y_ref, dtype, "output")
    for name, got, want in zip(("dx", "dA", "dB", "dgates"), (x, A, B, g), ref, strict=True):
        assert got.grad.dtype == got.dtype, name
        _assert_close(got.grad, want.grad, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_gradients_match_the_reference(case, dtype):
    weights, gates, expert_index, dy = _make(case, dtype)
    _check_against_reference(weights, gates, expert_index, dy, dtype, 0.75, SMALL)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_split_passes_accumulate_to_the_same_result(dtype):
    # Several programs per token tile over d_out (h recomputed in each, dhs added with atomics)
    # and per d_in chunk over x (dA added with atomics).
    weights, gates, expert_index, dy = _make("odd-sizes-mixed-ranks-top2", dtype, seed=1)
    _check_against_reference(weights, gates, expert_index, dy, dtype, 2.0, SPLIT)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_shared_A_repeated_per_expert_gets_the_summed_gradient(dtype):
    # MoSLD: one A (r x d_in) shared by 4 experts, passed repeated; its gradient sums the copies.
    gen = torch.Generator().manual_seed(2)
    n, d_in, d_out, r, n_experts = 29, 24, 31, 6, 4
    A0 = (torch.randn(r, d_in, generator=gen) / d_in**0.5).to(DEVICE, dtype)
    x = torch.randn(n, d_in, generator=gen).to(DEVICE, dtype)
    B = (torch.randn(d_out, r * n_experts, generator=gen) / r**0.5).to(DEVICE, dtype)
    gates = _gates("topk", n, n_experts, gen).to(DEVICE)
    expert_index = torch.arange(n_experts).repeat_interleave(r).to(DEVICE)
    dy = torch.randn(n, d_out, generator=gen).to(DEVICE, dtype)

    a_fused = A0.clone().requires_grad_()
    y = tf.gated_lora_delta_triton(x, a_fused.repeat(n_experts, 1), B, gates, expert_index, 0.5,
                                   config=SMALL)
    y.backward(dy)
    a_ref = A0.double().requires_grad_()
    y_ref = gated_lora_delta_reference(x.double(), a_ref.repeat(n_experts, 1), B.double(),
                                       gates.double(), expert_index, 0.5)
    y_ref.backward(dy.double())
    _assert_close(y, y_ref, dtype, "output")
    _assert_close(a_fused.grad, a_ref.grad, dtype, "d shared A")


def test_strided_x_and_broadcast_gates_are_read_through_their_strides():
    # A (d_in, N) activation seen as tokens x.t() (the Conv1d layout) and gates expanded from one
    # row (stride 0, as when merging static gates).
    dtype = torch.float32
    weights, gates, expert_index, dy = _make("odd-sizes-mixed-ranks-top2", dtype, seed=3)
    n = gates.shape[0]
    x_t = weights[0].t().contiguous()  # (d_in, N) storage
    _check_against_reference([x_t, *weights[1:]], gates[:1], expert_index, dy, dtype, 1.0, SMALL,
                             x_view=lambda t: t.t(), gates_view=lambda g: g.expand(n, -1))


def test_only_the_requested_gradients_are_computed():
    dtype = torch.float32
    (x, A, B), gates, expert_index, dy = _make("8x8-softmax", dtype, seed=4)
    A.requires_grad_()
    y = tf.gated_lora_delta_triton(x, A, B, gates, expert_index, 1.0, config=SPLIT)
    y.backward(dy)
    a_ref = A.detach().double().requires_grad_()
    gated_lora_delta_reference(x.double(), a_ref, B.double(), gates.double(), expert_index,
                               1.0).backward(dy.double())
    assert x.grad is None and B.grad is None and gates.grad is None
    _assert_close(A.grad, a_ref.grad, dtype, "dA alone")

    with torch.no_grad():
        y = tf.gated_lora_delta_triton(x, A, B, gates, expert_index, 1.0, config=SMALL)
    assert y.grad_fn is None
    _assert_close(y, gated_lora_delta_reference(x.double(), A.double(), B.double(),
                                                gates.double(), expert_index, 1.0),
                  dtype, "no-grad output")


def test_the_default_tile_config_is_correct_too():
    dtype = torch.float16
    weights, gates, expert_index, dy = _make("one-expert", dtype, seed=5)
    _check_against_reference(weights, gates, expert_index, dy, dtype, 0.5, None)


def test_forcing_triton_routes_the_dispatcher_to_the_kernels(monkeypatch):
    monkeypatch.setenv("MOLA_TS_KERNELS", "triton")
    (x, A, B), gates, expert_index, _ = _make("one-expert", torch.float32)
    A.requires_grad_()
    assert kernel_backend(x, A, B, gates) == "triton"
    y = gated_lora_delta(x, A, B, gates, expert_index, 1.0)
    assert "GatedLoRADeltaFunction" in y.grad_fn.name()
    _assert_close(y, gated_lora_delta_reference(x, A, B, gates, expert_index, 1.0),
                  torch.float32, "dispatched output")
    monkeypatch.setenv("MOLA_TS_KERNELS", "reference")
    assert "GatedLoRADeltaFunction" not in gated_lora_delta(x, A, B, gates, expert_index,
                                                            1.0).grad_fn.name()


def test_no_tokens_gives_an_empty_delta():
    (x, A, B), gates, expert_index, _ = _make("one-expert", torch.float32)
    y = tf.gated_lora_delta_triton(x[:0], A, B, gates[:0], expert_index, 1.0)
    assert y.shape == (0, B.shape[0])


def test_unsupported_inputs_raise_naming_the_problem():
    (x, A, B), gates, expert_index, _ = _make("one-expert", torch.float32)
    with pytest.raises(TypeError, match="x, A and B must share one dtype"):
        tf.gated_lora_delta_triton(x, A.half(), B, gates, expert_index, 1.0)
    with pytest.raises(TypeError, match="x must be float16, bfloat16 or float32"):
        tf.gated_lora_delta_triton(x.double(), A.double(), B.double(), gates, expert_index, 1.0)
    if tf.INTERPRETED:
        with pytest.raises(TypeError, match="bfloat16 cannot run under the Triton interpreter"):
            tf.gated_lora_delta_triton(x.bfloat16(), A.bfloat16(), B.bfloat16(), gates,
                                       expert_index, 1.0)


@pytest.mark.parametrize("field", ["block_m", "block_k", "block_n"])
def test_tile_sizes_must_be_powers_of_two_of_at_least_16(field):
    with pytest.raises(ValueError, match=f"TileConfig.{field} must be a power of two >= 16"):
        tf.TileConfig(**{field: 24})


def test_bench_kernels_compares_with_the_reference_and_writes_its_files(tmp_path, capsys):
    from mola_ts.cli import main

    # Small sizes so that the GPU timing part stays short when a GPU runs this suite.
    code = main(["bench", "kernels", "--out", str(tmp_path), "--tokens", "512", "--dims", "128",
                 "--plans", "8x8", "--warmup", "1", "--repeats", "2", "--no-compile"])
    assert code == 0
    rows = json.loads((tmp_path / "kernels_correctness.json").read_text())["rows"]
    fused = [r for r in rows if r["path"] == "fused"]
    assert {r["dtype"] for r in fused} >= {"float32", "float16"}
    assert len({r["case"] for r in fused}) >= 4 and all(r["ok"] for r in rows)
    assert (tmp_path / "kernels_correctness.csv").read_text().startswith("case,tokens,")
    if DEVICE.type == "cpu":
        out = capsys.readouterr().out
        assert "GPU timing, peak-memory and bandwidth figures are PENDING" in out
    else:
        timing = json.loads((tmp_path / "kernels_gpu.json").read_text())["rows"]
        assert {r["method"] for r in timing} == {"fused", "reference"}


@pytest.mark.parametrize(("n", "d", "rank", "dtype"), [
    (16384, 4096, 64, torch.bfloat16), (8192, 1024, 64, torch.float16),
    (65536, 4096, 128, torch.float32), (100, 40, 8, torch.float16),
])
def test_gpu_tile_heuristic_fills_the_card_within_the_caps(monkeypatch, n, d, rank, dtype):
    # The GPU branch of the heuristic, on a pretend 132-SM card (the launches stay untested here).
    sms = 132
    monkeypatch.setattr(tf, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: SimpleNamespace(multi_processor_count=sms))
    cfg = tf.choose_tile_config(n, d, d, rank, dtype, torch.device("cuda"))
    m_tiles, chunks = -(-n // cfg.block_m), -(-d // cfg.block_n)
    assert cfg.block_m * tf._pad(rank) <= 8192  # the (tile x R) fp32 accumulator fits
    assert 1 <= cfg.fwd_splits <= chunks and 1 <= cfg.dy_splits <= chunks
    assert 1 <= cfg.x_groups <= m_tiles
    if m_tiles >= sms:
        assert cfg.fwd_splits == 1  # a forward split recomputes h: only to fill the card
    assert m_tiles * cfg.dy_splits >= min(sms, m_tiles * chunks)
    assert chunks * cfg.x_groups >= min(sms, m_tiles * chunks)
