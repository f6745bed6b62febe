"""``mola-ts bench lora``: forward+backward time and peak memory of the LoRA-MoE layer.

Three implementations of the same adapted layer, at the same sizes:

``reference``
    :class:`~mola_ts.nn.LoRAMoE` with the PyTorch reference delta (the vectorised gated wide
    LoRA: two skinny matmuls over the stacked experts), router included.
``naive_loop``
    The same router, then a Python loop over the experts that gathers the tokens routed to
    each expert, applies its LoRA and scatters the result back (the research-code habit).
``plain_lora``
    One plain LoRA of rank ``sum(r)`` with no router: the lower bound.
``triton``
    (CUDA with Triton only) the layer through the fused kernels.

Scope ``layer`` times the whole layer (frozen base matmul included, input gradient computed,
as inside a network); scope ``delta`` drops the base matmul and times the adapter branch alone
(impl names get a ``_delta`` suffix). Peak memory is the peak of the bytes allocated during
one forward+backward on top of what existed before (CUDA: ``max_memory_allocated``; CPU: the
allocation events of the torch profiler, whose order can move a free and an allocation past
each other: the CPU figure varies by about one activation buffer between runs).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mola_ts.nn import LoRAMoE, LoRAMoEConfig

__all__ = ["add_arguments", "run", "COLUMNS"]

COLUMNS = ["impl", "tokens", "d_in", "d_out", "experts", "rank", "router", "fwd_bwd_ms",
           "peak_mb"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mola-ts bench lora``."""
    parser.add_argument("--out", required=True, help="output folder (results.csv goes there)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096])
    parser.add_argument("--d", type=int, default=512, help="d_in = d_out")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--routers", nargs="+", default=["topk", "ldmole"],
                        choices=["softmax", "topk", "ldmole"])
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--scope", choices=["layer", "delta", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions (median)")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="summary of the repetitions (min is robust on a busy machine)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall-clock time, or the CPU time of this process (all threads; "
                             "less sensitive to other processes on a shared machine)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)


@contextmanager
def _kernels(mode: str) -> Iterator[None]:
    previous = os.environ.get("MOLA_TS_KERNELS")
    os.environ["MOLA_TS_KERNELS"] = mode
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MOLA_TS_KERNELS"]
        else:
            os.environ["MOLA_TS_KERNELS"] = previous


def naive_loop_delta(layer: LoRAMoE, tokens: torch.Tensor) -> torch.Tensor:
    """The adapter delta by a Python loop over experts with gather / scatter (for comparison)."""
    gates = layer.gates(tokens, tokens.shape[0])
    out = torch.zeros(tokens.shape[0], layer.out_features, dtype=tokens.dtype,
                      device=tokens.device)
    A = layer.effective_A()
    start = 0
    for e, r in enumerate(layer.ranks):
        idx = torch.nonzero(gates[:, e] > 0).squeeze(-1)
        if idx.numel():
            x_e = tokens.index_select(0, idx)
            h = x_e @ A[start:start + r].t()
            y_e = (h @ layer.lora_B[:, start:start + r].t()) * layer.expert_scale[e]
            out = out.index_add(0, idx, y_e * gates.index_select(0, idx)[:, e:e + 1])
        start += r
    return out


class PlainLoRA(nn.Module):
    """A frozen linear map plus one LoRA of rank ``rank`` (no router): the lower bound."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features) * base.in_features ** -0.5)
        self.B = nn.Parameter(torch.randn(base.out_features, rank) * 0.01)
        self.scale = alpha / rank

    def delta(self, tokens: torch.Tensor) -> torch.Tensor:
        return ((tokens @ self.A.t()) @ self.B.t()) * self.scale


def _step_fn(impl: str, layer: LoRAMoE, plain: PlainLoRA, x: torch.Tensor,
             scope: str) -> Callable[[], None]:
    """One forward+backward of ``impl`` on ``x`` (whole layer, or the adapter branch only)."""
    if impl == "plain_lora":
        adapter = plain.delta
    elif impl == "naive_loop":
        def adapter(tokens: torch.Tensor) -> torch.Tensor:
            return naive_loop_delta(layer, tokens)
    else:  # reference / triton: the layer itself, the kernel path set by MOLA_TS_KERNELS
        adapter = layer.delta

    def step() -> None:
        x.grad = None
        y = adapter(x) if scope == "delta" else layer.base(x) + adapter(x)
        y.backward(torch.ones_like(y))

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(steps: dict[str, Callable[[], None]], modes: dict[str, str], device: torch.device,
          warmup: int, repeats: int, stat: str = "median",
          clock: str = "wall") -> dict[str, float]:
    """Milliseconds per step (median or min); the implementations take turns at every
    repetition, so that a busy machine slows them alike."""
    for name, step in steps.items():
        with _kernels(modes[name]):
            for _ in range(warmup):
                step()
    now = time.perf_counter if clock == "wall" else time.process_time
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            with _kernels(modes[name]):
                _sync(device)
                start = now()
                step()
                _sync(device)
                times[name].append(now() - start)
    summary = statistics.median if stat == "median" else min
    return {name: 1e3 * summary(t) for name, t in times.items()}


def _peak_mb(step: Callable[[], None], device: torch.device) -> float:
    step()  # allocate the parameter gradients first: they are not part of the peak
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # running total of the bytes each op allocated net of what it freed, in time order
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's start/stop lines written straight to file descriptor 2."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _build(router: str, d: int, experts: int, rank: int, top_k: int, device: torch.device,
           seed: int) -> tuple[LoRAMoE, PlainLoRA]:
    torch.manual_seed(seed)
    base = nn.Linear(d, d).to(device)
    cfg = LoRAMoEConfig(n_experts=experts, rank=rank, router=router, top_k=top_k, alpha=16.0)
    layer = LoRAMoE(base, cfg, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        layer.lora_B.normal_(0.0, 0.01)  # trained-like: non-zero B
    plain = PlainLoRA(base, experts * rank, 16.0).to(device)
    return layer, plain


@dataclass(frozen=True)
class LayerCase:
    """One configuration of the layer benchmark: shapes, router and what is timed."""

    tokens: int
    d: int
    experts: int
    rank: int
    router: str
    top_k: int
    scope: str  # "layer" (base matmul included) or "delta" (the adapter branch alone)
    seed: int = 0


@dataclass(frozen=True)
class Timing:
    """How a case is timed: warm-up passes, timed repeats, their statistic and the clock."""

    warmup: int
    repeats: int
    stat: str = "median"
    clock: str = "wall"


def benchmark(case: LayerCase, timing: Timing, device: torch.device) -> list[dict[str, object]]:
    """Rows of the results table for one configuration."""
    tokens, d, experts, rank = case.tokens, case.d, case.experts, case.rank
    router, scope = case.router, case.scope
    layer, plain = _build(router, d, experts, rank, case.top_k, device, case.seed)
    x = torch.randn(tokens, d, device=device).requires_grad_(True)
    impls = ["reference", "naive_loop", "plain_lora"]
    if device.type == "cuda":
        from mola_ts.nn.kernels import triton_available

        if triton_available():
            impls.insert(1, "triton")
    steps = {impl: _step_fn(impl, layer, plain, x, scope) for impl in impls}
    modes = {impl: "triton" if impl == "triton" else "reference" for impl in impls}
    times = _time(steps, modes, device, timing.warmup, timing.repeats, timing.stat,
                  timing.clock)
    rows = []
    for impl in impls:
        with _kernels(modes[impl]):
            peak = _peak_mb(steps[impl], device)
        rows.append({"impl": impl if scope == "layer" else f"{impl}_delta", "tokens": tokens,
                     "d_in": d, "d_out": d, "experts": experts, "rank": rank,
                     "router": router, "fwd_bwd_ms": round(times[impl], 3),
                     "peak_mb": round(peak, 2)})
    return rows


def _print_table(rows: list[dict[str, object]]) -> None:
    header = (f"{'impl':<18} {'tokens':>6} {'d_in':>5} {'d_out':>5} {'E':>3} {'r':>3} "
              f"{'router':<7} {'fwd_bwd_ms':>10} {'peak_mb':>8} {'vs plain':>8}")
    print(header)
    print("-" * len(header))
    plain = {(r["tokens"], r["router"], str(r["impl"]).endswith("_delta")): r["fwd_bwd_ms"]
             for r in rows if str(r["impl"]).startswith("plain_lora")}
    for r in rows:
        ref = plain.get((r["tokens"], r["router"], str(r["impl"]).endswith("_delta")))
        ratio = f"{r['fwd_bwd_ms'] / ref:.2f}x" if ref else "-"
        print(f"{r['impl']:<18} {r['tokens']:>6} {r['d_in']:>5} {r['d_out']:>5} "
              f"{r['experts']:>3} {r['rank']:>3} {r['router']:<7} {r['fwd_bwd_ms']:>10.2f} "
              f"{r['peak_mb']:>8.1f} {ratio:>8}")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table and write ``OUT/results.csv``."""
    for name in ("d", "experts", "rank", "repeats", "threads", "top_k"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, name)}")
    if min(args.tokens) < 1:
        raise ValueError(f"--tokens must be >= 1, got {args.tokens}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but CUDA is not available")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    scopes = ["layer", "delta"] if args.scope == "both" else [args.scope]
    rows: list[dict[str, object]] = []
    with torch.random.fork_rng(devices=[]):
        for tokens in args.tokens:
            for router in args.routers:
                for scope in scopes:
                    case = LayerCase(tokens, args.d, args.experts, args.rank, router,
                                     args.top_k, scope, args.seed)
                    rows += benchmark(case, Timing(args.warmup, args.repeats, args.stat,
                                                   args.clock), device)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.clock} clock, "
          f"{args.stat} of "
          f"{args.repeats} interleaved forward+backward passes; 'layer' rows include the frozen "
          "base matmul, '_delta' rows time the adapter branch alone")
    _print_table(rows)
    print(f"wrote {out / 'results.csv'}")
    return 0
