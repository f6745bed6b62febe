"""The gated wide-LoRA reference and the MOLA_TS_KERNELS dispatcher (no Triton needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mola_ts.nn.kernels import gated_lora_delta, gated_lora_delta_reference, kernel_backend


def _problem(seed: int = 0, ranks=(3, 1, 4), n: int = 7, d_in: int = 6, d_out: int = 5):
    gen = torch.Generator().manual_seed(seed)
    expert_index = torch.repeat_interleave(torch.arange(len(ranks)), torch.tensor(ranks))
    r = int(sum(ranks))
    x = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    A = torch.randn(r, d_in, generator=gen, dtype=torch.float64)
    B = torch.randn(d_out, r, generator=gen, dtype=torch.float64)
    gates = torch.rand(n, len(ranks), generator=gen, dtype=torch.float64)
    return x, A, B, gates, expert_index


def test_reference_equals_the_sum_over_experts_of_gated_lora_products():
    x, A, B, gates, expert_index = _problem()
    expected = torch.zeros(x.shape[0], B.shape[0], dtype=x.dtype)
    for e in range(gates.shape[1]):
        rows = expert_index == e
        expected += gates[:, e : e + 1] * (x @ A[rows].t() @ B[:, rows].t())
    got = gated_lora_delta_reference(x, A, B, gates, expert_index, 0.25)
    torch.testing.assert_close(got, 0.25 * expected)


def test_dispatcher_matches_the_reference_on_cpu_with_gradients(monkeypatch):
    monkeypatch.delenv("MOLA_TS_KERNELS", raising=False)
    tensors = [t.requires_grad_() for t in _problem(1)[:4]]
    expert_index = _problem(1)[4]
    y = gated_lora_delta(*tensors, expert_index, 0.5)
    (y * y).sum().backward()
    grads = [t.grad for t in tensors]
    ref = [t.detach().clone().requires_grad_() for t in tensors]
    y_ref = gated_lora_delta_reference(*ref, expert_index, 0.5)
    (y_ref * y_ref).sum().backward()
    torch.testing.assert_close(y, y_ref)
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want.grad)


@pytest.mark.parametrize("mode", ["auto", "reference", " Reference ", ""])
def test_cpu_tensors_take_the_reference_path_unless_triton_is_forced(monkeypatch, mode):
    monkeypatch.setenv("MOLA_TS_KERNELS", mode)
    x, A, B, gates, _ = _problem()
    assert kernel_backend(x, A, B, gates) == "reference"


def test_unknown_kernels_mode_raises_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MOLA_TS_KERNELS", "cuda")
    with pytest.raises(ValueError, match="MOLA_TS_KERNELS must be one of auto, triton, reference"):
        gated_lora_delta(*_problem(), 1.0)


_BROKEN = {  # argument -> (how to break it, the message expected)
    "x": (lambda t: t[0], r"x must be 2-D \(tokens, d_in\), got shape \(6,\)"),
    "A": (lambda t: t[:, :-1], r"A must have shape \(R, d_in=6\), got \(8, 5\)"),
    "B": (lambda t: t[:, :-1], r"B must have shape \(d_out, R=8\), got \(5, 7\)"),
    "gates": (lambda t: t[:-1], r"gates must have shape \(N=7, E\), got \(6, 3\)"),
    "expert_index": (lambda t: t[:-1], r"expert_index must have shape \(R=8,\), got \(7,\)"),
}


@pytest.mark.parametrize("argument", list(_BROKEN))
def test_bad_shapes_raise_value_errors_naming_the_argument(argument):
    args = dict(zip(("x", "A", "B", "gates", "expert_index"), _problem(), strict=True))
    breaker, message = _BROKEN[argument]
    args[argument] = breaker(args[argument])
    with pytest.raises(ValueError, match=message):
        gated_lora_delta(**args, scale=1.0)


def test_float_expert_index_raises_type_error():
    x, A, B, gates, expert_index = _problem()
    with pytest.raises(TypeError, match="expert_index must be an int64"):
        gated_lora_delta(x, A, B, gates, expert_index.double(), 1.0)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET",
                                                                 "MOLA_TS_KERNELS")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_package_imports_and_falls_back_when_triton_is_absent():
    # A fresh interpreter where `import triton` fails, as on macOS or Windows.
    result = _run_python("""
        import os, sys
        sys.modules["triton"] = None
        import torch
        import mola_ts.nn.kernels as k
        assert not k.triton_available()
        x, A, B = torch.randn(3, 4), torch.randn(2, 4), torch.randn(5, 2)
        g, idx = torch.rand(3, 2), torch.tensor([0, 1])
        assert k.kernel_backend(x, A, B, g) == "reference"
        y = k.gated_lora_delta(x, A, B, g, idx, 1.0)
        assert torch.allclose(y, k.gated_lora_delta_reference(x, A, B, g, idx, 1.0))
        os.environ["MOLA_TS_KERNELS"] = "triton"
        try:
            k.gated_lora_delta(x, A, B, g, idx, 1.0)
        except ImportError as exc:
            print("ImportError:", exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "ImportError: MOLA_TS_KERNELS=triton but Triton cannot be imported" in result.stdout


@pytest.mark.skipif(not (sys.platform == "linux" and os.uname().machine == "x86_64"),
                    reason="triton is a dependency on Linux x86_64 only")
def test_forcing_triton_on_cpu_tensors_without_the_interpreter_raises():
    result = _run_python("""
        import torch
        import mola_ts.nn.kernels as k
        x, A, B = torch.randn(3, 4), torch.randn(2, 4), torch.randn(5, 2)
        try:
            k.gated_lora_delta(x, A, B, torch.rand(3, 2), torch.tensor([0, 1]), 1.0)
        except ValueError as exc:
            print("ValueError:", exc)
    """, MOLA_TS_KERNELS="triton")
    assert result.returncode == 0, result.stderr
    assert "fused LoRA kernels need CUDA tensors, got x on cpu" in result.stdout
