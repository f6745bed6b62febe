"""``mola-ts bench lora`` runs end to end on tiny sizes and its naive loop is a correct
comparison (times are never asserted)."""

from __future__ import annotations

import argparse
import csv

import pytest
import torch
from torch import nn

from mola_ts.bench import BENCHMARKS
from mola_ts.bench import lora as bench
from mola_ts.nn import LoRAMoE, LoRAMoEConfig

torch.set_num_threads(1)


@pytest.mark.parametrize("router", ["topk", "ldmole"])
def test_naive_loop_matches_the_vectorised_delta(router):
    torch.manual_seed(0)
    layer = LoRAMoE(nn.Linear(12, 6), LoRAMoEConfig(n_experts=4, rank=(1, 2, 3, 2),
                                                      router=router))
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(30, 12)
    torch.testing.assert_close(bench.naive_loop_delta(layer, x), layer.delta(x))


def test_bench_lora_writes_results_csv(tmp_path, capsys):
    """One row per implementation, scope and router, and peak memory columns that obey what
    holds by construction, within the CPU measurement's resolution: the peak is a running total
    of the profiler's allocation events in time order, and whether one activation-sized buffer
    (tokens x d floats, 0.0625 MB here) is freed just before or just after the next allocation
    varies between runs (measured: the same step gives 0.25 or 0.31 MB)."""
    assert BENCHMARKS["lora"][0] == "mola_ts.bench.lora"
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--tokens", "512", "--d", "32",
                              "--experts", "4", "--rank", "4", "--repeats", "1", "--warmup",
                              "0", "--threads", "1"])
    assert bench.run(args) == 0
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == bench.COLUMNS
    impls = ("reference", "naive_loop", "plain_lora")
    expected = [(f"{impl}{suffix}", router) for router in ("topk", "ldmole")
                for suffix in ("", "_delta") for impl in impls]
    assert [(r["impl"], r["router"]) for r in rows] == expected
    assert all((r["tokens"], r["d_in"], r["d_out"], r["experts"], r["rank"])
               == ("512", "32", "32", "4", "4") for r in rows)
    peak = {(r["impl"], r["router"]): float(r["peak_mb"]) for r in rows}
    assert all(value > 0 for value in peak.values())
    tol = 512 * 32 * 4 / 2**20 + 0.01  # one activation buffer, plus the CSV's rounding
    for suffix in ("", "_delta"):
        # the plain LoRA has no router: the same allocations whatever the router column says
        assert abs(peak[f"plain_lora{suffix}", "topk"]
                   - peak[f"plain_lora{suffix}", "ldmole"]) <= tol
        for router in ("topk", "ldmole"):
            # the reference computes the plain LoRA's rank-R product plus a router and gates
            assert peak[f"reference{suffix}", router] >= peak[f"plain_lora{suffix}", router] - tol
    for impl in impls:
        for router in ("topk", "ldmole"):  # the layer scope adds the base matmul to the delta
            assert peak[impl, router] >= peak[f"{impl}_delta", router] - tol
    # the naive loop over experts holds every expert's activations: clearly above the plain LoRA
    assert all(peak[f"naive_loop{s}", r] > peak[f"plain_lora{s}", r] + tol
               for s in ("", "_delta") for r in ("topk", "ldmole"))
    out = capsys.readouterr().out
    assert "vs plain" in out and "results.csv" in out
    table = [line.split() for line in out.splitlines() if line.split()[:1] and
             line.split()[0] in {impl for impl, _ in expected}]
    assert len(table) == len(rows)
    assert all(line[-1] == "1.00x" for line in table if line[0].startswith("plain_lora"))
    args.rank = 0
    with pytest.raises(ValueError, match="--rank"):
        bench.run(args)
