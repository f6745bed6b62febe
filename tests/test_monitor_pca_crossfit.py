"""PCA and DPCA with cross-fitted limits: calibration on new normal data, no leakage of a
sample's own fold into its limit, finite scores with a warm-up flag, stream = batch, save/load.

The synthetic process has a known law: two AR(1) latent factors (phi 0.8) seen through fixed
loadings, plus a diagonal VAR(1) noise (phi 0.5) on 8 variables; it is stationary, so a limit
set on a few thousand samples must carry over to 100k fresh ones.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter

import mola_ts.monitor.pca as pca_module
from mola_ts.data import time_block_folds
from mola_ts.monitor import DPCAMonitor, PCAMonitor
from mola_ts.monitor.calibration import SCORE_CEILING, LimitSupportWarning
from mola_ts.monitor.stream import MonitorStream
from mola_ts.persistence import save_estimator

COLUMNS = [f"x{i}" for i in range(8)]
LOADINGS = np.random.default_rng(123).normal(size=(2, 8))
STATS = ["T2", "T2_limit", "SPE", "SPE_limit", "score", "alarm", "warmup"]


def _process(n: int, seed: int, n_vars: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    factors = lfilter([1.0], [1.0, -0.8], rng.normal(size=(n, 2)), axis=0)
    noise = lfilter([1.0], [1.0, -0.5], rng.normal(size=(n, n_vars)), axis=0)
    x = factors @ LOADINGS[:, :n_vars] + 0.5 * noise
    return pd.DataFrame(x, columns=COLUMNS[:n_vars],
                        index=pd.date_range("2024-01-01", periods=n, freq="3min"))


@pytest.fixture(scope="module")
def train():
    return _process(5000, seed=0)


@pytest.fixture(scope="module")
def fitted(train):
    with warnings.catch_warnings():
        warnings.simplefilter("error", LimitSupportWarning)  # 5000 samples are enough
        return {"pca": PCAMonitor().fit(train), "dpca": DPCAMonitor().fit(train)}


@pytest.mark.parametrize("kind", ["pca", "dpca"])
def test_crossfit_limits_carry_over_to_100k_new_normal_samples(fitted, kind):
    monitor = fitted[kind]
    assert monitor.limit == "crossfit" and monitor.alpha == 0.01
    far = monitor.predict(_process(100_000, seed=1)).mean()
    assert 0.005 <= far <= 0.02, far
    info = monitor.calibration_
    assert info["n_folds"] == monitor.n_folds and info["statistic"] == "either"
    # lags stay inside each block
    assert info["n_samples"] == 5000 - monitor.n_folds * monitor._lags()
    assert info["effective_samples"] >= 1000 and 0 < info["lag1_autocorrelation"] < 1


@pytest.mark.parametrize("kind", ["pca", "dpca"])
def test_a_step_fault_of_known_size_is_detected(fitted, kind):
    monitor = fitted[kind]
    run = _process(2000, seed=2)
    run.iloc[1000:, 0] += 6.0  # 3 standard deviations of x0, 10 of its own noise
    alarms = monitor.predict(run)
    assert alarms[1000:].mean() > 0.9
    assert alarms[:1000].mean() < 0.03


@pytest.mark.parametrize("statistic", ["either", "t2", "spe"])
@pytest.mark.parametrize("cls", [PCAMonitor, DPCAMonitor])
def test_crossfit_limit_is_the_quantile_of_out_of_fold_statistics(cls, statistic):
    # recomputed by hand: fold models are the parametric monitor fitted on the other blocks
    # (a list of runs, so lags never bridge the gap) with the final k
    X = _process(1500, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitSupportWarning)
        model = cls(statistic=statistic, n_folds=4).fit(X)
    lags = model._lags()
    t2, spe = [], []
    for fold in time_block_folds([len(X)], 4):
        fold_model = cls(n_components=model.n_components_, limit="parametric")
        fold_model.fit([X.iloc[s.start:s.stop] for s in fold.fit])
        for s in fold.held_out:
            stats = fold_model.statistics(X.iloc[s.start:s.stop]).iloc[lags:]
            t2.append(stats.T2.to_numpy())
            spe.append(stats.SPE.to_numpy())
    t2, spe = np.concatenate(t2), np.concatenate(spe)
    if statistic == "either":
        q_t2, q_spe = np.quantile(t2, 0.99), np.quantile(spe, 0.99)
        combined = np.maximum(t2 / q_t2, spe / q_spe)
        c = np.quantile(combined, 0.99)
        assert model.t2_limit_ == pytest.approx(q_t2 * c, rel=1e-9)
        assert model.spe_limit_ == pytest.approx(q_spe * c, rel=1e-9)
        assert model.threshold_ == 1.0
        # the *combined* out-of-fold alarm has rate alpha
        alarms = np.maximum(t2 / model.t2_limit_, spe / model.spe_limit_) > 1
        assert alarms.mean() == pytest.approx(0.01, abs=1.5 / len(t2))
    else:
        values = t2 if statistic == "t2" else spe
        assert model.threshold_ == pytest.approx(np.quantile(values, 0.99), rel=1e-9)
        assert model.calibration_["n_samples"] == len(values)


@pytest.mark.parametrize("n_lags", [0, 2])
def test_crossfit_never_fits_a_fold_model_on_the_rows_it_scores(monkeypatch, n_lags):
    X = _process(600, seed=4)
    row_id = {float(v): i for i, v in enumerate(X["x0"])}  # x0 is unique: it names the row
    events = []
    fit_pca, statistics = pca_module.fit_pca, pca_module.pca_statistics

    def spy_fit(parts, lags, names, where=""):
        events.append(("fit", [[row_id[float(v)] for v in p[:, 0]] for p in parts]))
        return fit_pca(parts, lags, names, where)

    def spy_statistics(rows, *args):
        events.append(("score", [row_id[float(v)] for v in rows[:, 0]]))
        return statistics(rows, *args)

    monkeypatch.setattr(pca_module, "fit_pca", spy_fit)
    monkeypatch.setattr(pca_module, "pca_statistics", spy_statistics)
    # after the limits, the final model scores its own training rows (pyod's decision_scores_)
    monkeypatch.setattr(pca_module.PCAMonitor, "_set_training_scores", lambda self, runs: None)
    with pytest.warns(LimitSupportWarning):
        DPCAMonitor(n_lags=n_lags, n_folds=3).fit([X.iloc[:250], X.iloc[250:]])
    assert events[0][0] == "fit" and sorted(sum(events[0][1], [])) == list(range(600))
    folds = [e for e in events[1:] if e[0] == "fit"]
    assert len(folds) == 3
    held_out = [range(0, 200), range(200, 400), range(400, 600)]
    fit_rows, scored = None, [set() for _ in folds]
    fold = -1
    for kind, rows in events[1:]:
        if kind == "fit":
            fold += 1
            fit_rows = set(sum(rows, []))
            for part in rows:  # each part is one contiguous stretch of one run
                assert part == list(range(part[0], part[0] + len(part)))
                assert part[0] >= 250 or part[-1] < 250
            assert fit_rows == set(range(600)) - set(held_out[fold])
        else:
            # the scored rows (the current sample of each lag window) are the held-out block
            # minus the first n_lags of each of its stretches, never a row of the fold model
            assert not fit_rows & set(rows)
            scored[fold] |= set(rows)
    for fold, rows in enumerate(scored):
        block = set(held_out[fold])
        starts = {held_out[fold][0], 250} & block
        warm = {s + j for s in starts for j in range(n_lags)}
        assert rows == block - warm


def test_defaults_fit_and_score_on_8_variables_and_400_rows():
    X = _process(400, seed=5)
    for cls in (PCAMonitor, DPCAMonitor):
        with pytest.warns(LimitSupportWarning, match="effective samples"):
            model = cls().fit(X)  # 400 autocorrelated rows are few for alpha = 0.01
        assert 1 <= model.n_components_ < len(model.mean_)
        scores = model.score_samples(_process(300, seed=6))
        assert np.isfinite(scores).all() and model.calibration_["n_samples"] > 0
    # a variance share that would keep every variable is capped below their number
    assert PCAMonitor(n_components=0.999999, limit="parametric").fit(X).n_components_ == 7


@pytest.mark.parametrize("statistic", ["either", "t2", "spe"])
@pytest.mark.parametrize("kind", ["pca", "dpca"])
def test_scores_are_finite_with_warmup_flagged_and_overflow_alarming(train, kind, statistic):
    cls = PCAMonitor if kind == "pca" else DPCAMonitor
    model = cls(statistic=statistic).fit(train)
    X = _process(60, seed=7)
    X.iloc[20, 3] = 1e308  # a finite value whose statistics overflow float64
    X.iloc[30, 1] = -5e250
    X.iloc[40, 5] = 1e6  # far out of range, no overflow
    stats = model.statistics(X)
    assert np.isfinite(stats[STATS].to_numpy(float)).all()
    for method in (model.score_samples, model.decision_function):
        assert np.isfinite(method(X)).all()
    lags = model._lags()
    np.testing.assert_array_equal(stats.warmup, [1] * lags + [0] * (60 - lags))
    assert (stats.score.iloc[:lags] == 0).all() and (stats.alarm.iloc[:lags] == 0).all()
    alarms = model.predict(X)
    for row in (20, 30, 40):
        assert alarms[row] == 1 and stats.alarm.iloc[row] == 1
    assert stats.score.max() <= SCORE_CEILING
    assert stats.score.iloc[20] >= 1e200
    contrib = model.contributions(X, "SPE")
    assert np.isfinite(contrib.to_numpy()).all() and (contrib.iloc[:lags] == 0).all().all()


@pytest.mark.parametrize("kind", ["pca", "dpca"])
def test_stream_equals_batch_row_by_row_and_chunked(fitted, kind):
    monitor = fitted[kind]
    X = _process(300, seed=8)
    X.iloc[150:, 2] += 2.0
    batch = monitor.statistics(X)
    stream = monitor.stream()
    assert isinstance(stream, MonitorStream)
    rows = pd.concat([stream.update(X.iloc[t]) for t in range(len(X))])
    pd.testing.assert_frame_equal(rows[STATS], batch, check_exact=True, check_freq=False)
    rng = np.random.default_rng(0)
    for _ in range(3):
        cuts = np.sort(rng.choice(np.arange(1, len(X)), size=12, replace=False))
        stream = monitor.stream()
        chunks = pd.concat([stream.update(X.iloc[a:b]) for a, b in
                            zip(np.r_[0, cuts], np.r_[cuts, len(X)], strict=True)])
        pd.testing.assert_frame_equal(chunks[STATS], batch, check_exact=True)
    assert (rows.sensor_fault == 0).all() and (rows.monitorable == 1).all()
    # arrays too (rows indexed by their position in the stream)
    stream = monitor.stream()
    arr = pd.concat([stream.update(X.to_numpy()[t]) for t in range(len(X))])
    np.testing.assert_array_equal(arr["score"].to_numpy(), batch["score"].to_numpy())


def test_stream_holds_dropouts_and_flags_unmonitorable_samples(fitted):
    monitor = fitted["dpca"]
    X = _process(80, seed=9)
    broken = X.copy()
    broken.iloc[40:46, 1] = np.nan
    out = monitor.stream(max_hold=3).update(broken)
    stale = np.zeros(80, dtype=bool)
    stale[43:46] = True
    np.testing.assert_array_equal(out.monitorable, (~stale).astype(int))
    assert (out.loc[stale, ["score", "T2", "SPE", "alarm"]] == 0).all().all()
    assert np.isfinite(out[STATS].to_numpy(float)).all()
    # held values stand at their place in the lag history: every monitorable sample is
    # scored as in the forward-filled batch
    filled = monitor.statistics(broken.ffill())
    pd.testing.assert_frame_equal(out[STATS][~stale], filled[~stale], check_exact=True)


@pytest.mark.parametrize("kind", ["pca", "dpca"])
def test_save_load_gives_identical_scores_and_streams_continue(fitted, kind, tmp_path):
    monitor = fitted[kind]
    X = _process(200, seed=10)
    back = type(monitor).load(monitor.save(tmp_path / "m.pt"))
    assert back.get_params() == monitor.get_params()
    assert back.calibration_ == monitor.calibration_
    pd.testing.assert_frame_equal(back.statistics(X), monitor.statistics(X), check_exact=True)
    whole = monitor.stream().update(X)
    stream = monitor.stream()
    first = stream.update(X.iloc[:77])
    restored = MonitorStream.load(stream.save(tmp_path / "s.pt"))
    assert type(restored.monitor) is type(monitor)
    rest = restored.update(X.iloc[77:])
    pd.testing.assert_frame_equal(pd.concat([first, rest])[STATS], whole[STATS],
                                  check_exact=True)
    state = restored.get_state()
    state["engine"]["history"] = np.zeros((monitor._lags() + 1, 8))
    with pytest.raises(ValueError, match="history"):
        restored.set_state(state)


@pytest.mark.parametrize("limit", ["parametric", "validation"])
@pytest.mark.parametrize("cls", [PCAMonitor, DPCAMonitor])
def test_files_saved_before_crossfit_still_load(cls, limit, tmp_path):
    # the layout of the earlier version: no n_folds parameter, no calibration_
    X = _process(400, seed=11)
    model = cls(n_components=3, limit=limit).fit(X)
    params = {k: v for k, v in model.get_params().items() if k != "n_folds"}
    state = {k: v for k, v in model._state_to_save().items() if k != "calibration_"}
    state["scoring_params_"] = {k: v for k, v in state["scoring_params_"].items()
                                if k != "n_folds"}
    path = save_estimator(model, tmp_path / "old.pt", state, params=params)
    back = cls.load(path)
    assert back.limit == limit and not hasattr(back, "calibration_")
    np.testing.assert_array_equal(back.score_samples(X), model.score_samples(X))


def test_limit_support_warning_when_few_effective_samples():
    slow = _process(300, seed=12)
    with pytest.warns(LimitSupportWarning, match="needs about 1000"):
        PCAMonitor().fit(slow)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LimitSupportWarning)
        PCAMonitor(alpha=0.05).fit(_process(3000, seed=13))  # needs 200 effective samples
        PCAMonitor(limit="parametric").fit(slow)  # no empirical quantile, no warning


def test_crossfit_errors_name_the_argument():
    X = _process(300, seed=14)
    with pytest.raises(ValueError, match="n_folds must be an int >= 2"):
        PCAMonitor(n_folds=1).fit(X)
    with pytest.raises(ValueError, match="limit must be one of"):
        PCAMonitor(limit="cv").fit(X)
    with pytest.raises(ValueError, match="n_components=3 needs more than 4.*limit='parametric'"):
        PCAMonitor(n_components=3, n_folds=5).fit(X.iloc[:5])
    constant_early = X.copy()
    constant_early.iloc[:200, 2] = 1.0  # constant over the rows fold 2's model is fitted on
    with pytest.raises(ValueError, match=r"constant columns in the rows cross-fit fold 2 .*'x2'"):
        PCAMonitor(n_folds=3).fit(constant_early)


@pytest.mark.parametrize("n_vars, n_lags, seed", [(3, 0, 0), (20, 0, 1), (20, 3, 2), (33, 2, 3)])
def test_stream_equals_batch_for_any_width_layout_and_chunking(n_vars, n_lags, seed):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(n_vars, n_vars))
    train = rng.normal(size=(1200, n_vars)) @ mix
    test = rng.normal(size=(150, n_vars)) @ mix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitSupportWarning)
        model = DPCAMonitor(n_lags=n_lags).fit(train)
    batch = model.statistics(np.asfortranarray(test))
    pd.testing.assert_frame_equal(model.statistics(np.ascontiguousarray(test)), batch,
                                  check_exact=True)
    for layout in (np.ascontiguousarray, np.asfortranarray):
        cuts = np.sort(rng.choice(np.arange(1, len(test)), size=20, replace=False))
        stream = model.stream()
        parts = [stream.update(layout(test[a:b])) for a, b in
                 zip(np.r_[0, cuts], np.r_[cuts, len(test)], strict=True)]
        chunks = pd.concat(parts, ignore_index=True)
        pd.testing.assert_frame_equal(chunks[STATS], batch, check_exact=True)
