import pandas as pd
import pytest

from mola_ts.cli import main

pytest.importorskip("bibmon")  # the TEP files ship with bibmon (a dev dependency)

MODELS = ["Residual", "MOLA", "PCA", "PCA-Yin", "DPCA", "bibmon-PCA"]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """The quick demo, run once, with every monitor's ``fit`` input recorded."""
    from mola_ts import monitor as monitor_module

    seen: list[tuple[str, pd.DataFrame]] = []
    classes = [monitor_module.ResidualMonitor, monitor_module.MOLAMonitor,
               monitor_module.PCAMonitor, monitor_module.DPCAMonitor]
    originals = {cls: cls.fit for cls in classes}

    def recorder(cls):
        def fit(self, X, y=None):
            seen.append((cls.__name__, X))
            return originals[cls](self, X, y)
        return fit

    mp = pytest.MonkeyPatch()
    for cls in classes:
        mp.setattr(cls, "fit", recorder(cls))
    out = tmp_path_factory.mktemp("demo")
    try:
        code = main(["demo", "tep", "--quick", "--out", str(out), "--threads", "1"])
    finally:
        mp.undo()
    return code, out, seen


def test_quick_tep_demo_writes_results_and_figures(quick_demo, capsys):
    from mola_ts.bench.tep_demo import QUICK_FAULTS

    code, out, _ = quick_demo
    assert code == 0
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == ["fault", "model", "fdr", "far", "delay_samples", "auc"]
    assert sorted(results.model.unique()) == sorted(MODELS)
    assert sorted(results.fault.unique()) == [0, *QUICK_FAULTS]
    assert len(results) == len(MODELS) * (1 + len(QUICK_FAULTS))
    faulty = results[results.fault > 0]
    assert faulty.fdr.between(0, 1).all() and faulty.far.between(0, 1).all()
    assert faulty.auc.between(0, 1).all()
    assert results[results.fault == 0].fdr.isna().all()
    # the PCA-Yin rows are Yin et al. (2012): fault 1 99.88 %, fault 2 98.75 %, FAR 6.125 %
    yin = results[results.model == "PCA-Yin"].set_index("fault")
    assert yin.loc[1, "fdr"] == pytest.approx(0.99875)
    assert yin.loc[2, "fdr"] == pytest.approx(0.9875)
    assert yin.loc[0, "far"] == pytest.approx(0.06125)
    # the three quick faults are large: every model catches them within a few hours
    assert (faulty.fdr > 0.9).all() and (faulty.delay_samples <= 60).all()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.model) == MODELS
    for column in ("fdr_at_far1_diagnostic", "fdr_at_far5_diagnostic", "mean_auc_detectable",
                   "far_d00_te", "far_before_onset"):
        assert summary[column].between(0, 1).all(), column
    # the residual monitor holds its false-alarm rate on the unseen normal run
    assert summary.set_index("model").loc["Residual", "far_d00_te"] <= 0.01
    assert (out / f"control_chart_fault{QUICK_FAULTS[0]}.png").stat().st_size > 10_000
    assert (out / f"contributions_fault{QUICK_FAULTS[0]}.png").stat().st_size > 5_000


def test_the_demo_fits_every_monitor_on_d00_only(quick_demo):
    from mola_ts.bench.tep_demo import YIN_COLUMNS
    from mola_ts.data import load_tep

    _, _, seen = quick_demo
    d00 = load_tep(0, "train")
    assert sorted(name for name, _ in seen) == sorted(
        ["ResidualMonitor", "MOLAMonitor", "PCAMonitor", "PCAMonitor", "DPCAMonitor"])
    for name, X in seen:
        assert isinstance(X, pd.DataFrame), name  # one run, never a list with test rows
        expected = d00 if X.shape[1] == d00.shape[1] else d00[YIN_COLUMNS]
        pd.testing.assert_frame_equal(X, expected, obj=name)


def test_demo_rejects_bad_faults(tmp_path, capsys):
    assert main(["demo", "tep", "--quick", "--out", str(tmp_path), "--faults", "0"]) == 2
    assert "faults must lie in 1..21" in capsys.readouterr().err
