"""``mola-ts bench uncertainty``: the smoke run through the CLI and the chunked scoring."""

import numpy as np
import pandas as pd
import pytest

from mola_ts.bench import BENCHMARKS
from mola_ts.bench.uncertainty import plan_for, score_windows
from mola_ts.cli import main
from mola_ts.data import sliding_windows
from mola_ts.forecast import DirectForecaster
from mola_ts.metrics import probabilistic_scores

COLUMNS = ["dataset", "horizon", "method", "n_members", "nll", "crps", "coverage90", "width90",
           "fit_seconds"]


def test_quick_run_through_the_cli_writes_every_method(tmp_path, capsys):
    assert "uncertainty" in BENCHMARKS
    code = main(["bench", "uncertainty", "--datasets", "ILI", "--quick", "--threads", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results.columns[:len(COLUMNS)]) == COLUMNS
    assert list(results["method"]) == ["map", "ensemble", "laplace", "mixture",
                                       "mixture+split", "mixture+adaptive", "mixture+auto"]
    assert list(results["n_members"]) == [1, 2, 1, 2, 2, 2, 2]
    assert list(results["conformal"]) == ["none"] * 4 + ["split", "adaptive", "auto"]
    # the default row is one of the two corrections, the one with the lower validation error
    auto = results.iloc[-1]
    errors = {m: auto[f"auto_error_{m}"] for m in ("split", "adaptive")}
    assert auto["conformal_chosen"] == ("adaptive" if errors["adaptive"] < errors["split"]
                                        else "split")
    same = results.set_index("method").loc[f"mixture+{auto['conformal_chosen']}"]
    assert auto["coverage90"] == same["coverage90"] and auto["width90"] == same["width90"]
    assert (results["horizon"] == plan_for("ILI").horizon).all()
    assert results[COLUMNS[4:]].notna().all().all()
    assert results["coverage90"].between(0, 1).all() and (results["width90"] > 0).all()
    assert (results["coverage95"] >= results["coverage90"]).all()
    assert (results["coverage90"] >= results["coverage80"]).all()
    # one fit: the single-member methods cost less than the ensembles
    assert (results["fit_seconds"].iloc[[0, 2]].to_numpy()
            < results["fit_seconds"].iloc[[1, 3]].to_numpy()).all()
    # the Laplace only adds within-member variance; the noise-only methods have none
    assert (results.loc[results["method"].isin(["map", "ensemble"]), "var_laplace"] == 0).all()
    assert (results.loc[results["method"].isin(["laplace", "mixture"]), "var_laplace"] > 0).all()
    printed = capsys.readouterr().out
    assert "mixture" in printed and "results.csv" in printed
    assert f"ILI (adapters): default intervals (auto: {auto['conformal_chosen']} conformal)" \
        in (tmp_path / "results.md").read_text()
    # the conformal rows move the intervals only; scores of the mixture itself are unchanged
    mix = results.set_index("method")
    assert mix.loc["mixture+split", "crps"] == mix.loc["mixture", "crps"]
    assert mix.loc["mixture+split", "coverage90"] != mix.loc["mixture", "coverage90"]


def test_chunked_scores_equal_the_scores_of_all_windows_at_once():
    rng = np.random.default_rng(1)
    t = np.arange(260)
    frame = pd.DataFrame({"a": np.sin(t / 4.0) + 0.3 * rng.normal(size=260),
                          "b": np.cos(t / 7.0) + 0.3 * rng.normal(size=260)})
    model = DirectForecaster(16, 4, backbone_params={"d_model": 8, "d_ff": 8, "n_heads": 2},
                             epochs=1, n_ensemble=2, uncertainty="laplace").fit(frame[:200])
    test = frame[200 - 16:]
    chunked = score_windows(model, test, chunk=7)
    _, target = sliding_windows(test.to_numpy(), 16, 4)
    full = probabilistic_scores(target, model.predict_windows_distribution(test))
    assert chunked["n_windows"] == len(target)
    for key in ("nll", "crps", "pit_error", "coverage80", "coverage90", "width90", "winkler95"):
        assert chunked[key] == pytest.approx(full[key], rel=1e-9), key
