"""MOLA's residual design: calibration on a process with a known law, cross-fitting, finite
scores, small plants, the first design and its files, and a TEP regression."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mola_ts.monitor.mola as mola_module
from mola_ts.monitor import MOLAMonitor, MonitorStream
from mola_ts.monitor.calibration import LimitSupportWarning

DATA = Path(__file__).parent / "data"
FAR_MAX = 0.05  # the reduced TEP configuration (15 epochs) measured 3.1 % on d00_te
FDR_PINNED = 0.960  # its mean FDR over the 18 detectable faults at its own threshold
SMALL = dict(blocks={"b1": ["a", "b", "c"], "b2": ["d", "e", "f"]}, window=3, hidden_size=4,
             code_size=2, epochs=3, patience=2, random_state=0)


def _plant(n: int, seed: int, drift: float = 0.02) -> pd.DataFrame:
    """A stable VAR(1) of 6 variables plus a slow random walk shared by a, b, d (the wander)."""
    rng = np.random.default_rng(seed)
    a = 0.6 * np.eye(6) + 0.1 * np.eye(6, k=1)
    e = rng.normal(size=(n, 6))
    x = np.zeros((n, 6))
    for t in range(1, n):
        x[t] = x[t - 1] @ a.T + e[t]
    walk = np.cumsum(rng.normal(scale=drift, size=n))
    x[:, [0, 1, 3]] += 3.0 * walk[:, None]
    return pd.DataFrame(x, columns=list("abcdef"))


@pytest.fixture(scope="module")
def plant_monitor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitSupportWarning)
        # 20k normal rows, so that the training data show the wander as far as the test does
        return MOLAMonitor(**SMALL).fit(_plant(20_000, seed=0))


def test_false_alarm_rate_on_20k_new_normal_samples_is_near_alpha(plant_monitor):
    stats = plant_monitor.statistics(_plant(20_000, seed=1))
    scored = stats.warmup == 0
    far = stats.alarm[scored].mean()
    assert 0.003 <= far <= 0.03, far


def test_a_step_fault_of_known_size_is_detected(plant_monitor):
    test = _plant(1500, seed=2)
    test.iloc[500:, 2] += 4.0  # 4 units on c (its innovations have unit variance)
    alarms = plant_monitor.predict(test)
    assert alarms[:500].mean() < 0.03
    assert alarms[500:].mean() > 0.9
    result = plant_monitor.detection_scores(test, onset=500)
    assert result["delay_samples"] <= 40, result  # a run of 3 alarms within 40 samples


def test_crossfit_never_fits_a_fold_model_on_the_rows_it_scores(monkeypatch):
    # level design: every window the networks see carries its row numbers in column a
    n = 300
    X = _plant(n, seed=3)
    X["a"] = np.arange(n, dtype=float)
    seen = []
    original = mola_module.train_olae

    def spy(train_windows, val_windows, *args, **kw):
        seen.append((train_windows, val_windows))
        return original(train_windows, val_windows, *args, **kw)

    monkeypatch.setattr(mola_module, "train_olae", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitSupportWarning)
        monitor = MOLAMonitor(**{**SMALL, "design": "level", "n_folds": 3}).fit(X)
    # block b1 holds column a first: the row numbers of every window of its networks
    rows = [np.rint(np.concatenate([t[:, :, 0].ravel(), v[:, :, 0].ravel()])
                    * monitor.scale_[0] + monitor.mean_[0]).astype(int) for t, v in seen[::2]]
    assert len(monitor.fold_states_) == 3
    for k, fold in enumerate(monitor.fold_states_):
        held = set().union(*(range(a, b) for _, a, b in fold["held_out"]))
        fit = set().union(*(range(a, b) for _, a, b in fold["fit"]))
        assert not held & fit and held | fit == set(range(n))
        assert not set(rows[k]) & held
    assert set(rows[-1]) == set(range(n))  # the final model sees everything
    held_all = sorted(r for f in monitor.fold_states_ for _, a, b in f["held_out"]
                      for r in range(a, b))
    assert held_all == list(range(n))  # every row is scored out of fold exactly once


def test_the_residual_predictor_of_a_fold_is_fitted_on_its_fit_rows_only(monkeypatch):
    X = _plant(300, seed=4)
    calls = []
    original = mola_module.RidgeVAR.fit

    def spy(self, segments):
        calls.append([len(s) for s in segments])
        return original(self, segments)

    monkeypatch.setattr(mola_module.RidgeVAR, "fit", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitSupportWarning)
        monitor = MOLAMonitor(**SMALL).fit(X)
    fit_lengths = [[b - a for _, a, b in f["fit"]] for f in monitor.fold_states_]
    # two calls per fold (out-of-fold residual scale, then the fold model), then the final one
    assert calls == fit_lengths + fit_lengths + [[300]]


def test_every_score_is_finite_and_extremes_alarm_with_a_flag(plant_monitor):
    test = _plant(80, seed=5)
    test.iloc[40, 1] = 1e300
    test.iloc[50, 4] = -1e200
    stats = plant_monitor.statistics(test)
    numeric = stats.drop(columns=["missing_variables"]).to_numpy(dtype=float)
    assert np.isfinite(numeric).all()
    for row in (40, 41, 50):
        assert stats.out_of_range.iloc[row] == 1 and stats.alarm.iloc[row] == 1
        assert stats.score.iloc[row] >= 10 * plant_monitor.threshold_
    for method in (plant_monitor.score_samples, plant_monitor.decision_function):
        assert np.isfinite(method(test)).all()
    assert set(np.unique(plant_monitor.predict(test))) <= {0, 1}
    prob = plant_monitor.predict_fault_probability(test)
    assert np.isfinite(prob.to_numpy(dtype=float)).all()
    assert (prob.fault_probability.iloc[:3] == 0).all()  # warm-up rows


def test_defaults_work_on_8_variables_and_400_rows_with_a_slow_drift():
    def run(n, seed):
        r = np.random.default_rng(seed)
        x = np.zeros((n, 8))
        e = r.normal(size=(n, 8))
        for t in range(1, n):
            x[t] = 0.8 * x[t - 1] + e[t]
        x[:, :2] += np.cumsum(r.normal(scale=0.1, size=n))[:, None]  # a slow sensor drift
        return pd.DataFrame(x, columns=[f"s{i}" for i in range(8)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitSupportWarning)
        monitor = MOLAMonitor(epochs=10).fit(run(400, 7))
    stats = monitor.statistics(run(400, 8))
    assert np.isfinite(stats.drop(columns=["missing_variables"]).to_numpy(dtype=float)).all()
    assert stats.alarm[stats.warmup == 0].mean() < 0.05


def test_the_first_design_is_reachable_and_its_files_load_and_score_as_before(tmp_path):
    X = pd.read_csv(DATA / "mola_v1_data.csv", index_col=0, parse_dates=True)
    expected = json.loads((DATA / "mola_v1_expected.json").read_text())
    old = np.array([np.nan if v is None else v for v in expected["pfi"]])
    monitor = MOLAMonitor.load(DATA / "mola_v1_monitor.pt")
    assert (monitor.design, monitor.limit, monitor.fusion_scale) == (
        "level", "holdout", "probability")
    assert monitor.threshold_ == expected["threshold"]
    stats = monitor.statistics(X)
    done = ~np.isnan(old)
    # equal up to rounding: the CUSUMs of all networks now advance together, which sums their
    # squares in another order than the first implementation did
    np.testing.assert_allclose(stats.PFI.to_numpy()[done], old[done], rtol=1e-9, atol=1e-300)
    np.testing.assert_array_equal(stats.score.to_numpy(), stats.PFI.to_numpy())
    # its unscored rows were NaN; now they are warm-up rows with a finite 0
    assert (stats.warmup.to_numpy() == ~done).all() and (stats.score[~done] == 0).all()
    stream = MonitorStream.load(DATA / "mola_v1_stream.pt")
    np.testing.assert_allclose(stream.update(X.iloc[50:60]).PFI.to_numpy(),
                               expected["stream_next_pfi"], rtol=1e-9, atol=1e-300)
    # the same settings fitted today give the same model, up to float32 rounding: the training
    # runs in float32 and its sums round differently on other CPUs and BLAS builds (a fresh
    # environment measured relative differences up to 1.9e-5 from the stored run)
    refit = MOLAMonitor(blocks={"b1": ["a", "b"], "b2": ["c", "d"]}, window=3, hidden_size=4,
                        code_size=2, epochs=2, patience=20, design="level", limit="holdout",
                        fusion_scale="probability", cusum_allowance=0.5,
                        code_statistics="fit").fit(X)
    np.testing.assert_allclose(refit.statistics(X).PFI.to_numpy()[done], old[done], rtol=1e-4,
                               atol=1e-300)
    # and a re-saved old model keeps its design
    back = MOLAMonitor.load(monitor.save(tmp_path / "again.pt"))
    assert back.design == "level"
    pd.testing.assert_frame_equal(back.statistics(X), stats, check_exact=True)


def test_tep_regression_of_a_reduced_configuration():
    """Fit on d00 only (K = 2 folds, 15 epochs); the figures pinned were measured once."""
    pytest.importorskip("bibmon")  # the TEP files ship with bibmon (a dev dependency)
    from mola_ts.data import DETECTABLE_FAULTS, load_tep

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitSupportWarning)
        monitor = MOLAMonitor(epochs=15, n_folds=2).fit(load_tep(0, "train"))
    normal = monitor.predict(load_tep(0, "test"))[160:]
    scores = {f: monitor.score_samples(load_tep(f, "test")) for f in DETECTABLE_FAULTS}
    fdr = np.mean([(s[160:] > monitor.threshold_).mean() for s in scores.values()])
    far_first = np.mean([(s[:160] > monitor.threshold_).mean() for s in scores.values()])
    assert normal.mean() <= FAR_MAX, normal.mean()
    assert far_first <= FAR_MAX, far_first
    assert abs(fdr - FDR_PINNED) <= 0.02, fdr
