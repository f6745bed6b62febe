"""The forecasting benchmark follows the LTSF protocol and writes the agreed files."""

import numpy as np
import pandas as pd
import pytest

from mola_ts.bench.forecast import results_markdown, run_benchmark
from mola_ts.cli import build_parser
from mola_ts.data import ltsf_split, sliding_windows

COLUMNS = ["dataset", "horizon", "model", "mse", "mae", "train_seconds", "trainable_params",
           "total_params"]


def test_benchmark_scores_every_test_window_of_the_protocol(tmp_path):
    rows = run_benchmark(["ETTh1"], [96], ["naive"], out=tmp_path, log=lambda *a, **k: None)
    # recompute the seasonal-naive (m = 24) error on the protocol's test split directly
    split = ltsf_split("ETTh1")
    x, y = sliding_windows(split.test.to_numpy(), 96, 96)
    assert len(x) == 2785  # spec §3: 2881 - H test windows for ETTh
    pred = x[:, -24:][:, np.arange(96) % 24]
    row = rows.iloc[0]
    assert row["mse"] == np.float64(np.mean((pred - y) ** 2))
    assert row["mae"] == np.float64(np.mean(np.abs(pred - y)))


def test_benchmark_writes_results_csv_and_markdown(tmp_path):
    run_benchmark(["ILI"], [24], ["mola", "direct", "dlinear", "naive"], out=tmp_path,
                  quick=True, log=lambda *a, **k: None)
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results.columns[:8]) == COLUMNS
    assert set(results["model"]) == {"mola-foundation", "mola", "direct", "dlinear", "naive"}
    assert results[["mse", "mae"]].notna().all().all()
    mola = results[results["model"] == "mola"].iloc[0]
    assert 0 < mola["trainable_params"] < mola["total_params"]
    text = (tmp_path / "results.md").read_text()
    assert "| H | mola | direct | dlinear | naive |" in text
    assert "MoLA adaptation s" in text


def test_markdown_puts_published_numbers_beside_ours():
    rows = [{"dataset": "ETTh1", "horizon": h, "model": m, "mse": 0.4, "mae": 0.4,
             "train_seconds": 1.0, "trainable_params": 1, "total_params": 2}
            for h in (96, 192, 336, 720) for m in ("mola", "direct")]
    text = results_markdown(pd.DataFrame(rows))
    assert "iTransformer (published)" in text
    assert "0.386 / 0.405" in text  # H = 96
    assert "iTransformer 0.454 / 0.447" in text and "TimeMixer 0.447 / 0.440" in text
    assert "**0.400**" in text


def test_cli_registers_the_forecast_benchmark():
    args = build_parser().parse_args(["bench", "forecast", "--datasets", "ETTh1", "--horizons",
                                      "96", "192", "--quick", "--out", "x"])
    assert args.datasets == ["ETTh1"] and args.horizons == [96, 192] and args.quick


def test_under_torchrun_only_rank_zero_reports_and_writes(tmp_path, monkeypatch, capsys):
    """Every rank runs the benchmark under torchrun; ranks other than 0 print and write nothing."""
    from mola_ts.bench import forecast as bench

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rows = run_benchmark(["ETTh1"], [96], ["naive"], out=tmp_path / "rank1")
    assert len(rows) == 1 and list((tmp_path / "rank1").iterdir()) == []
    bench._print("a line")
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    run_benchmark(["ETTh1"], [96], ["naive"], out=tmp_path / "rank0")
    assert {p.name for p in (tmp_path / "rank0").iterdir()} == {"results.csv", "results.md"}
    assert "naive" in capsys.readouterr().out


def test_worker_processes_give_the_rows_of_a_serial_run(tmp_path):
    """--jobs 2 fits the models in spawned workers: same rows (seeded models), same order."""
    kwargs = {"quick": True, "log": lambda *a, **k: None}
    serial = run_benchmark(["ILI"], [24], ["mola", "dlinear"], out=tmp_path / "a", **kwargs)
    parallel = run_benchmark(["ILI"], [24], ["mola", "dlinear"], out=tmp_path / "b", jobs=2,
                             **kwargs)
    keys = ["dataset", "horizon", "model", "mse", "mae", "trainable_params", "total_params"]
    pd.testing.assert_frame_equal(serial[keys], parallel[keys])
    with pytest.raises(ValueError, match="jobs must be an int >= 1"):
        run_benchmark(["ILI"], [24], ["naive"], out=tmp_path / "c", jobs=0)


def test_rows_are_written_as_they_finish_and_put_in_task_order_at_the_end(tmp_path):
    """Workers finish in any order; each row is on disk at once, the final order is the
    tasks' (rows of earlier sittings first)."""
    from mola_ts.bench.forecast import _Results

    pd.DataFrame([{"dataset": "ILI", "horizon": 24, "model": "naive", "mse": 1.0,
                   "seed": np.nan}]).to_csv(tmp_path / "results.csv", index=False)
    results = _Results(tmp_path, log=lambda *a, **k: None)
    for h, model in ((48, "mola"), (24, "direct"), (24, "mola")):  # completion order
        results.add({"dataset": "ILI", "horizon": h, "model": model, "mse": 0.5, "seed": 7}, "")
        assert len(pd.read_csv(tmp_path / "results.csv")) == len(results.rows)
    results.put_in_order([("ILI", 24, "mola", 7), ("ILI", 24, "direct", 7),
                          ("ILI", 48, "mola", 7)])
    on_disk = pd.read_csv(tmp_path / "results.csv")
    assert list(zip(on_disk["horizon"], on_disk["model"], strict=True)) == [
        (24, "naive"), (24, "mola"), (24, "direct"), (48, "mola")]
