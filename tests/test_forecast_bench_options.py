"""The forecasting benchmark's MoLA options, seeds, resuming, last-value baseline and report."""

import numpy as np
import pandas as pd
import pytest

from mola_ts.bench.forecast import OPTIONS, run_benchmark
from mola_ts.bench.forecast_report import best_by_validation, results_markdown, summarize
from mola_ts.cli import build_parser, main
from mola_ts.data import ltsf_split, sliding_windows
from mola_ts.forecast import SeasonalNaiveForecaster

QUIET = {"log": lambda *a, **k: None}


def test_last_value_baseline_on_a_hand_made_series():
    y = np.array([[1.0, 10.0], [2.0, 20.0], [5.0, -3.0]])
    forecast = SeasonalNaiveForecaster(horizon=3, season_length=1).fit(y).predict()
    np.testing.assert_array_equal(np.asarray(forecast), [[5.0, -3.0]] * 3)


def test_the_benchmark_scores_the_last_value_on_every_test_window(tmp_path):
    rows = run_benchmark(["ETTh1"], [96], ["last"], out=tmp_path, **QUIET)
    split = ltsf_split("ETTh1")
    x, y = sliding_windows(split.test.to_numpy(), 96, 96)
    pred = np.repeat(x[:, -1:], 96, axis=1)
    assert rows.iloc[0]["mse"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-12)
    assert rows.iloc[0]["model"] == "last"


def test_seeds_give_different_and_reproducible_rows(tmp_path):
    two = run_benchmark(["ILI"], [24], ["dlinear", "last"], out=tmp_path / "a", quick=True,
                        seeds=2, **QUIET)
    dl = two[two["model"] == "dlinear"].set_index("seed")
    assert list(dl.index) == [2023, 2024] and dl.loc[2023, "mse"] != dl.loc[2024, "mse"]
    assert (two["model"] == "last").sum() == 1  # deterministic: run once
    again = run_benchmark(["ILI"], [24], ["dlinear"], out=tmp_path / "b", quick=True,
                          seed=2024, **QUIET)
    assert again.iloc[0]["mse"] == dl.loc[2024, "mse"]
    text = (tmp_path / "a" / "results.md").read_text()
    assert "mean ± std over up to 2 seeds" in text


def test_rows_already_written_are_not_recomputed(tmp_path):
    first = run_benchmark(["ILI"], [24], ["mola", "last"], out=tmp_path, quick=True, **QUIET)
    csv = tmp_path / "results.csv"
    table = pd.read_csv(csv)
    table.loc[table["model"] == "last", "mse"] = 123.0  # a sentinel: kept if not recomputed
    table = table[table["model"] != "mola"]  # as if the run had stopped before this row
    table.to_csv(csv, index=False)
    assert list(tmp_path.glob("foundation-ILI-s2023.mola"))
    resumed = run_benchmark(["ILI"], [24], ["mola", "last", "naive"], out=tmp_path,
                            quick=True, **QUIET)
    assert resumed.loc[resumed["model"] == "last", "mse"].tolist() == [123.0]
    assert (resumed["model"] == "mola-foundation").sum() == 1  # loaded, not trained again
    mola = resumed[resumed["model"] == "mola"]
    assert mola["mse"].tolist() == pytest.approx(
        first.loc[first["model"] == "mola", "mse"].tolist(), rel=1e-6)
    assert set(pd.read_csv(csv)["model"]) == {"mola-foundation", "mola", "last", "naive"}


def test_options_rows_carry_parameters_and_seconds(tmp_path):
    rows = run_benchmark(["ILI"], [24], ["mola", "mola-topk", "mola-mosld", "mola-sample2"],
                         out=tmp_path, quick=True, **QUIET)
    mola = rows[rows["model"].str.startswith("mola") & (rows["model"] != "mola-foundation")]
    assert len(mola) == 4
    assert (mola["trainable_params"] > 0).all()
    assert (mola["train_cpu_seconds"] > 0).all() and (mola["train_seconds"] > 0).all()
    assert mola["val_mse"].notna().all()
    text = (tmp_path / "results.md").read_text()
    assert "| model | H | test MSE | val MSE | trainable params | CPU s |" in text
    assert "Chosen on validation MSE alone" in text
    assert "published" not in text.lower()  # --quick: no comparison with published numbers


def test_every_option_names_valid_forecaster_parameters():
    from mola_ts.forecast import MoLAForecaster

    for name, params in OPTIONS.items():
        model = MoLAForecaster(96, 96, segment_length=48, **params)
        model._check_training_params()  # raises on an invalid option
        assert name


def _fake_results() -> pd.DataFrame:
    rows = []
    for seed, noise in ((1, 0.0), (2, 0.02)):
        for h in (96, 192):
            rows += [
                {"dataset": "ETTh1", "horizon": h, "model": "mola", "mse": 0.40 + noise,
                 "mae": 0.4, "val_mse": 0.50, "seed": seed},
                {"dataset": "ETTh1", "horizon": h, "model": "mola-topk", "mse": 0.30 + noise,
                 "mae": 0.4, "val_mse": 0.60, "seed": seed},  # better test, worse validation
                {"dataset": "ETTh1", "horizon": h, "model": "direct", "mse": 0.45 + noise,
                 "mae": 0.4, "val_mse": 0.55, "seed": seed},
            ]
    rows.append({"dataset": "ETTh1", "horizon": 48, "model": "mola-foundation", "mse": 0.3,
                 "mae": 0.3, "val_mse": 0.4, "seed": 1})
    frame = pd.DataFrame(rows)
    frame["train_seconds"], frame["train_cpu_seconds"] = 10.0, 8.0
    frame["trainable_params"], frame["total_params"] = 100, 1000
    return frame


def test_the_report_gives_mean_and_std_and_chooses_on_validation_only():
    results = _fake_results()
    summary = summarize(results).set_index(["horizon", "model"])
    assert summary.loc[(96, "mola"), "mse"] == pytest.approx(0.41)
    assert summary.loc[(96, "mola"), "mse_std"] == pytest.approx(np.std([0.40, 0.42], ddof=1))
    assert best_by_validation(results, "ETTh1") == "mola"  # not mola-topk (lower test MSE)
    text = results_markdown(results)
    assert "0.410 ± 0.014" in text and "iTransformer (published)" in text
    assert "Chosen on validation MSE alone (models compared on seeds 1, 2): **mola**" in text
    assert "MoLA lower by 0.050" in text and "below Direct by more than the seed noise" in text
    worse = results.assign(mse=np.where(results["model"] == "direct", results["mse"] - 0.1,
                                        results["mse"]))
    assert "MoLA higher by 0.050" in results_markdown(worse)
    assert "not below Direct by more than the seed noise" in results_markdown(worse)
    # an option run with one seed is compared with the default on that seed only
    one = results[(results["model"] != "mola-topk")].copy()
    fast = one[one["model"] == "mola"].assign(model="mola-fast", val_mse=0.49)
    fast = fast[fast["seed"] == 2]
    one = pd.concat([one.assign(val_mse=np.where(
        (one["model"] == "mola") & (one["seed"] == 1), 0.40, one["val_mse"])), fast])
    # the default's mean over both seeds is 0.45 < 0.49, but on seed 2 it is 0.50 > 0.49
    assert best_by_validation(one, "ETTh1") == "mola-fast"
    assert best_by_validation(one[one["model"] != "mola-fast"], "ETTh1") == "mola"
    assert "| 48 |" not in text  # the foundation's horizon is no row of the main table
    assert "published" not in results_markdown(results, published=False).lower()


def test_the_report_of_a_run_stopped_after_a_foundation():
    results = _fake_results()
    stopped = results[results["model"] == "mola-foundation"].assign(dataset="ETTh2")
    text = results_markdown(pd.concat([results, stopped], ignore_index=True))
    assert "ETTh2: only the MoLA foundation has finished" in text
    assert "0.410 ± 0.014" in text  # ETTh1's tables are all there


def test_cli_options_seeds_and_report(tmp_path, capsys):
    args = build_parser().parse_args(["bench", "forecast", "--options", "all", "--seeds", "3"])
    assert args.options == ["all"] and args.seeds == 3
    _fake_results().to_csv(tmp_path / "results.csv", index=False)
    assert main(["bench", "forecast", "--report", "--out", str(tmp_path)]) == 0
    assert "Chosen on validation MSE alone" in (tmp_path / "results.md").read_text()
    assert main(["bench", "forecast", "--report", "--out", str(tmp_path / "none")]) == 2
