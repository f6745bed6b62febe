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
    assert BENCHMARKS["lora"][0] == "mola_ts.bench.lora"
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--tokens", "32", "--d", "16",
                              "--experts", "4", "--rank", "2", "--repeats", "1", "--warmup",
                              "0", "--threads", "1"])
    assert bench.run(args) == 0
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == bench.COLUMNS
    impls = {(r["impl"], r["router"]) for r in rows}
    for router in ("topk", "ldmole"):
        for impl in ("reference", "naive_loop", "plain_lora"):
            assert (impl, router) in impls and (f"{impl}_delta", router) in impls
    assert all(float(r["fwd_bwd_ms"]) > 0 and float(r["peak_mb"]) >= 0 for r in rows)
    assert all(r["tokens"] == "32" and r["experts"] == "4" and r["rank"] == "2" for r in rows)
    out = capsys.readouterr().out
    assert "vs plain" in out and "results.csv" in out
    args.rank = 0
    with pytest.raises(ValueError, match="--rank"):
        bench.run(args)
