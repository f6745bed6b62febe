"""``mola-ts bench kernels``: the fused LoRA-MoE kernels against the PyTorch reference.

On a CUDA device: forward+backward time (median of CUDA-event timings), peak memory and effective
memory bandwidth of the fused kernels, the reference and the reference under ``torch.compile``,
for tokens 8192..65536, d 1024 and 4096, 8 experts of rank 8 and a mixed-rank plan with the same
R = 64; a correctness comparison runs first. Without one: the correctness comparison alone, with
the kernels in Triton's CPU interpreter, and a plain statement that the GPU figures are pending.
Writes ``kernels_gpu.{csv,json}`` or ``kernels_correctness.{csv,json}`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["add_arguments", "run", "correctness_rows", "timing_rows"]

RANK_PLANS: dict[str, tuple[int, ...]] = {
    "8x8": (8,) * 8,
    "mixed": (4, 4, 6, 6, 8, 10, 12, 14),  # rising ranks (HILO-like), same R = 64
}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_TOLERANCE = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
# (name, tokens, d_in, d_out, ranks, shared A): small enough for the interpreter
_CORRECTNESS_CASES = (
    ("odd-sizes-mixed-ranks", 37, 40, 50, (8, 5, 11), False),
    ("8x8", 48, 32, 48, (8,) * 8, False),
    ("one-expert", 20, 33, 17, (4,), False),
    ("shared-A", 29, 24, 31, (6,) * 4, True),
)
_GPU_CORRECTNESS_CASES = (
    ("odd-sizes-mixed-ranks", 1000, 300, 520, (8, 5, 11), False),
    ("8x8", 4096, 1024, 1024, (8,) * 8, False),
    ("shared-A", 777, 256, 200, (6,) * 4, True),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mola-ts bench kernels``."""
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV and JSON")
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 32768, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 4096],
                        help="d_in = d_out of the adapted layer")
    parser.add_argument("--plans", nargs="+", choices=sorted(RANK_PLANS),
                        default=list(RANK_PLANS), help="8 experts of rank 8, or mixed ranks")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    parser.add_argument("--top-k", type=int, default=2, help="active experts per token")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the reference under torch.compile")


# ------------------------------------------------------------------------------ problems

def _problem(n: int, d_in: int, d_out: int, ranks: tuple[int, ...], shared_a: bool,
             dtype: torch.dtype, device: torch.device, top_k: int = 2, seed: int = 0):
    """Tokens, weights, top-k gates (fp32, as a router gives them) and an output gradient."""
    gen = torch.Generator().manual_seed(seed)
    n_experts = len(ranks)
    expert_index = torch.repeat_interleave(torch.arange(n_experts), torch.tensor(ranks))
    r = len(expert_index)
    x = torch.randn(n, d_in, generator=gen)
    if shared_a:
        A = (torch.randn(ranks[0], d_in, generator=gen) / math.sqrt(d_in)).repeat(n_experts, 1)
    else:
        A = torch.randn(r, d_in, generator=gen) / math.sqrt(d_in)
    B = torch.randn(d_out, r, generator=gen) / math.sqrt(r)
    gates = torch.randn(n, n_experts, generator=gen).softmax(-1)
    if top_k < n_experts:
        kept = gates.topk(top_k, dim=-1).indices
        gates = gates * torch.zeros_like(gates).scatter_(1, kept, 1.0)
        gates = gates / gates.sum(-1, keepdim=True)
    dy = torch.randn(n, d_out, generator=gen)
    x, A, B, dy = (t.to(device, dtype) for t in (x, A, B, dy))
    return x, A, B, gates.to(device), expert_index.to(device), dy


def _fwd_bwd(fn: Callable, leaves, expert_index, dy, scale: float):
    for t in leaves:
        t.grad = None
    y = fn(*leaves, expert_index, scale)
    y.backward(dy)
    return y.detach()


def _rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double().cpu(), want.double().cpu()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def correctness_rows(fused: Callable, dtypes, device: torch.device, cases) -> list[dict]:
    """Relative errors of the output and of dx, dA, dB, dgates against a float64 reference,
    for the fused path and, for scale, the reference run in the same dtype."""
    from mola_ts.nn.kernels import gated_lora_delta_reference as reference

    rows = []
    for name, n, d_in, d_out, ranks, shared_a in cases:
        for dtype in dtypes:
            x, A, B, gates, expert_index, dy = _problem(n, d_in, d_out, ranks, shared_a, dtype,
                                                        device)
            results = {}
            for label, fn, cast in (("exact", reference, torch.float64),
                                    ("fused", fused, dtype), ("reference", reference, dtype)):
                g_dtype = torch.float64 if label == "exact" else gates.dtype
                leaves = [t.detach().to(cast).requires_grad_() for t in (x, A, B)]
                leaves.append(gates.detach().to(g_dtype).requires_grad_())
                y = _fwd_bwd(fn, leaves, expert_index, dy.to(cast), 0.5)
                results[label] = [y] + [t.grad for t in leaves]
            tol = _TOLERANCE[dtype]
            for label in ("fused", "reference"):
                errors = [_rel_error(g, w) for g, w in zip(results[label], results["exact"],
                                                           strict=True)]
                rows.append({"case": name, "tokens": n, "d_in": d_in, "d_out": d_out,
                             "ranks": "-".join(map(str, ranks)), "dtype": str(dtype)[6:],
                             "path": label, **dict(zip(("out", "dx", "dA", "dB", "dgates"),
                                                       errors, strict=True)),
                             "ok": label != "fused" or max(errors) <= tol})
    return rows


# ------------------------------------------------------------------------------ GPU timing

def _peak_bandwidth(device: torch.device) -> float | None:
    """Bytes/s from the memory clock and bus width (double data rate), None if unknown."""
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8


def _min_bytes(n: int, d_in: int, d_out: int, r: int, n_experts: int, elem: int) -> int:
    """Traffic no implementation can avoid in forward+backward: read x twice (shrink, dA),
    write y, read dy, write dx, plus gates/d gates and the weights with their fp32 gradients."""
    tokens = n * (3 * d_in + 2 * d_out) * elem + 2 * n * n_experts * 4
    weights = 2 * r * (d_in + d_out) * elem + r * (d_in + d_out) * 4
    return tokens + weights


def _time_ms(step: Callable[[], None], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _peak_bytes(step: Callable[[], None]) -> int:
    """Peak allocation above what was live before one forward+backward (the output is kept
    until the backward ends, as a caller holding it would; gradients are freed before)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _measure(fn: Callable, leaves, expert_index, dy, warmup: int,
             repeats: int) -> tuple[float, int]:
    """Median forward+backward milliseconds and peak bytes of one method on one problem."""
    step = functools.partial(_fwd_bwd, fn, leaves, expert_index, dy, 2.0)
    ms = _time_ms(step, warmup, repeats)
    for t in leaves:
        t.grad = None
    return ms, _peak_bytes(step)


def timing_rows(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Forward+backward time, peak memory and effective bandwidth per method and size."""
    from mola_ts.nn.kernels import gated_lora_delta_reference as reference
    from mola_ts.nn.kernels import triton_fused

    dtype = _DTYPES[args.dtype]
    peak_bw = _peak_bandwidth(device)
    rows = []
    for plan in args.plans:
        ranks = RANK_PLANS[plan]
        r = sum(ranks)
        for d in args.dims:
            for n in args.tokens:
                x, A, B, gates, expert_index, dy = _problem(n, d, d, ranks, False, dtype, device,
                                                            top_k=args.top_k)
                leaves = [t.requires_grad_() for t in (x, A, B, gates)]
                methods = {"fused": triton_fused.gated_lora_delta_triton, "reference": reference}
                if not args.no_compile:
                    torch.compiler.reset()  # a fresh cache per shape: no recompile limit
                    methods["reference+compile"] = torch.compile(reference)
                cfg = triton_fused.choose_tile_config(n, d, d, r, dtype, device)
                nbytes = _min_bytes(n, d, d, r, len(ranks), dtype.itemsize)
                shape_rows = []
                for method, fn in methods.items():
                    ms, peak = _measure(fn, leaves, expert_index, dy, args.warmup, args.repeats)
                    bw = nbytes / (ms * 1e-3)
                    shape_rows.append({
                        "plan": plan, "tokens": n, "d": d, "dtype": args.dtype,
                        "method": method, "fwd_bwd_ms": round(ms, 4),
                        "peak_mib": round(peak / 2**20, 2),
                        "effective_gbps": round(bw / 1e9, 1),
                        "fraction_of_peak_bw": round(bw / peak_bw, 3) if peak_bw else None,
                        "tile_config": str(cfg) if method == "fused" else "",
                    })
                ref_row = next(row for row in shape_rows if row["method"] == "reference")
                for row in shape_rows:
                    row["speedup_vs_reference"] = round(ref_row["fwd_bwd_ms"] / row["fwd_bwd_ms"],
                                                        3)
                    row["memory_vs_reference"] = round(row["peak_mib"] / ref_row["peak_mib"], 3)
                rows.extend(shape_rows)
                leaves.clear()
                torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------ output

def _write(rows: list[dict], out: Path, stem: str, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["note"])
        writer.writeheader()
        writer.writerows(rows)
    with open(out / f"{stem}.json", "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=2)
    print(f"wrote {out / stem}.csv and {out / stem}.json")


def _print_table(rows: list[dict], columns: list[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.2e}" if abs(v) < 1e-2 and v != 0 else f"{v:.3g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _meta(device: torch.device) -> dict:
    meta = {"torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    return meta


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (GPU) or the correctness comparison (CPU); 1 if a check fails."""
    from mola_ts.nn import kernels

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    if not on_gpu:
        print("No CUDA device here: the GPU timing, peak-memory and bandwidth figures are "
              "PENDING (not measured on this machine, and not estimated).")
        if "mola_ts.nn.kernels.triton_fused" not in sys.modules:
            os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are decorated
    if not kernels.triton_available():
        print("Triton cannot be imported here (a Linux x86_64 dependency): the fused kernels "
              "cannot be checked.")
        _write([], args.out, "kernels_correctness", {**_meta(device), "status": "no triton"})
        return 0
    from mola_ts.nn.kernels import triton_fused

    if not on_gpu and not triton_fused.INTERPRETED:
        raise ValueError("the kernels were imported before TRITON_INTERPRET=1 was set: run "
                         "`mola-ts bench kernels` in a fresh process")
    meta = _meta(device)
    where = "Triton interpreter on CPU" if triton_fused.INTERPRETED else meta["device"]
    print(f"Correctness: fused kernels ({where}) vs a float64 reference; relative Frobenius "
          f"errors (the 'reference' rows show the reference's own rounding in that dtype).")
    dtypes = [torch.float32, torch.float16] + ([torch.bfloat16] if on_gpu else [])
    cases = _GPU_CORRECTNESS_CASES if on_gpu else _CORRECTNESS_CASES
    rows = correctness_rows(triton_fused.gated_lora_delta_triton, dtypes, device, cases)
    _print_table(rows, ["case", "dtype", "path", "out", "dx", "dA", "dB", "dgates", "ok"])
    ok = all(r["ok"] for r in rows)
    print(f"correctness: {'all within tolerance' if ok else 'FAILED'} "
          f"(tolerance {', '.join(f'{str(k)[6:]} {v:g}' for k, v in _TOLERANCE.items())})")
    _write(rows, args.out, "kernels_correctness", meta)
    if not on_gpu or not ok:
        return 0 if ok else 1

    peak_bw = _peak_bandwidth(device)
    meta["peak_bandwidth_gbps"] = round(peak_bw / 1e9, 1) if peak_bw else None
    print(f"\nForward+backward on {meta['device']} ({args.dtype}, top-{args.top_k} gates, "
          f"peak memory bandwidth {meta['peak_bandwidth_gbps']} GB/s from the device "
          f"properties); effective bandwidth = unavoidable bytes / time.")
    timing = timing_rows(args, device)
    _print_table(timing, ["plan", "tokens", "d", "method", "fwd_bwd_ms", "speedup_vs_reference",
                          "peak_mib", "memory_vs_reference", "effective_gbps",
                          "fraction_of_peak_bw"])
    _write(timing, args.out, "kernels_gpu", meta)
    goal = [r for r in timing if r["method"] == "fused" and r["tokens"] == 16384
            and r["d"] == 4096]
    for r in goal:
        met = r["speedup_vs_reference"] >= 2.0 and r["memory_vs_reference"] <= 0.6
        print(f"goal (tokens 16384, d 4096, {r['plan']}): speedup {r['speedup_vs_reference']}x "
              f"(>= 2), memory {r['memory_vs_reference']}x (<= 0.6): "
              f"{'met' if met else 'NOT met'}")
    return 0
