import pandas as pd
import pytest

from mola_ts.cli import main

pytest.importorskip("bibmon")  # the TEP files ship with bibmon (a dev dependency)


def test_quick_tep_demo_writes_results_and_figures(tmp_path, capsys):
    from mola_ts.bench.tep_demo import QUICK_FAULTS

    assert main(["demo", "tep", "--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "mean FDR" in out and "FAR" in out
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results.columns) == ["fault", "model", "fdr", "far", "delay_samples"]
    models = ["MOLA", "PCA", "DPCA", "bibmon-PCA"]
    assert sorted(results.model.unique()) == sorted(models)
    assert sorted(results.fault.unique()) == [0, *QUICK_FAULTS]
    assert len(results) == len(models) * (1 + len(QUICK_FAULTS))
    faulty = results[results.fault > 0]
    assert faulty.fdr.between(0, 1).all() and faulty.far.between(0, 1).all()
    assert results[results.fault == 0].fdr.isna().all()
    # the PCA rows are Yin et al. (2012): fault 1 99.88 %, fault 2 98.75 %, FAR 6.125 %
    pca = results[results.model == "PCA"].set_index("fault")
    assert pca.loc[1, "fdr"] == pytest.approx(0.99875)
    assert pca.loc[2, "fdr"] == pytest.approx(0.9875)
    assert pca.loc[0, "far"] == pytest.approx(0.06125)
    # the three quick faults are large: every model catches them within a few hours
    assert (faulty.fdr > 0.9).all() and (faulty.delay_samples <= 60).all()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.model) == models
    assert (tmp_path / f"control_chart_fault{QUICK_FAULTS[0]}.png").stat().st_size > 10_000
    assert (tmp_path / f"contributions_fault{QUICK_FAULTS[0]}.png").stat().st_size > 5_000


def test_demo_rejects_bad_faults(tmp_path, capsys):
    assert main(["demo", "tep", "--quick", "--out", str(tmp_path), "--faults", "0"]) == 2
    assert "faults must lie in 1..21" in capsys.readouterr().err
