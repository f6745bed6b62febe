import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from mola_ts.monitor import MOLAMonitor
from mola_ts.monitor.charts import t2_statistic

BLOCKS = {"b1": ["a", "b", "c"], "b2": ["d", "e", "f"]}
PARAMS = dict(blocks=BLOCKS, window=5, hidden_size=8, code_size=2, epochs=3, patience=2,
              use_spe=True, random_state=0)
# the first implementation: autoencoders of levels, limits from the last 30 % of each run
LEGACY = dict(PARAMS, design="level", limit="holdout", fusion_scale="probability",
              cusum_allowance=0.5, code_statistics="fit")
WARM = 5  # warm-up rows of the residual design: 1 lag + window - 1


def _process(n=320, seed=0):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, 6))
    x = np.zeros((n, 6))
    for t in range(1, n):
        x[t] = 0.7 * x[t - 1] + e[t]
    x[:, 1] += x[:, 0]
    x[:, 4] += x[:, 3]
    return pd.DataFrame(x, columns=list("abcdef"),
                        index=pd.date_range("2024-01-01", periods=n, freq="3min"))


@pytest.fixture(scope="module")
def fitted():
    X = _process()
    return MOLAMonitor(**PARAMS).fit(X), X


def test_streaming_equals_batch_scoring_exactly(fitted):
    monitor, X = fitted
    test = _process(120, seed=1)
    test.iloc[60:, 2] += 3.0  # a fault, so the CUSUM and the W-BF episode carry state
    batch = monitor.statistics(test)
    stream = monitor.stream()
    rows = pd.concat([stream.update(test.iloc[i]) for i in range(len(test))])
    pd.testing.assert_frame_equal(rows, batch, check_exact=True, check_freq=False)
    stream = monitor.stream()
    chunks = pd.concat([stream.update(test.iloc[i:i + 7]) for i in range(0, len(test), 7)])
    pd.testing.assert_frame_equal(chunks, batch, check_exact=True, check_freq=False)
    # a stream restarted from a saved state continues exactly
    stream = monitor.stream()
    first = stream.update(test.iloc[:70])
    state = stream.get_state()
    other = monitor.stream()
    other.set_state(state)
    rest = other.update(test.iloc[70:].to_numpy())
    pd.testing.assert_frame_equal(pd.concat([first, rest.set_axis(test.index[70:])]), batch,
                                  check_exact=True, check_freq=False)


def test_statistics_expose_every_level_with_its_limit(fitted):
    monitor, X = fitted
    stats = monitor.statistics(X)
    for block in BLOCKS:
        for level in ("T2", "W", "SPE", "index"):
            assert (stats[f"{block}.{level}_limit"] == monitor.limits_[block][level]).all()
            assert f"{block}.{level}" in stats
        assert f"{block}.weight" in stats
    assert (stats["score_limit"] == monitor.threshold_).all()
    assert stats.index.equals(X.index)
    # warm-up rows (no full window of residuals yet): flagged, every statistic 0, no alarm
    # (the first implementation gave NaN here: changed on purpose, scores are always finite)
    assert (stats.warmup.iloc[:WARM] == 1).all() and (stats.warmup.iloc[WARM:] == 0).all()
    numeric = stats.drop(columns=["missing_variables"])
    assert np.isfinite(numeric.to_numpy(dtype=float)).all()
    level_cols = [c for c in numeric if not c.endswith("_limit")
                  and c not in ("monitorable", "warmup")]
    assert (numeric[level_cols].iloc[:WARM] == 0).all().all()
    assert (stats.sensor_fault == 0).all() and (stats.monitorable == 1).all()
    assert (stats.missing_variables == ()).all()
    assert (stats.score.iloc[WARM:] >= 0).all() and (stats.score.iloc[WARM:] > 0).mean() > 0.5


def test_limits_are_held_out_quantiles_in_the_first_design():
    X = _process()
    monitor = MOLAMonitor(**LEGACY).fit(X)
    cut = len(X) - round(0.3 * len(X))
    # the held-out stream: scored with its window history, CUSUMs starting at the first
    # held-out sample, exactly as in fit
    held = monitor.statistics(X.iloc[cut - 4:]).iloc[4:]
    assert monitor.threshold_ == pytest.approx(np.quantile(held.PFI, 0.99), rel=1e-12)
    np.testing.assert_array_equal(held.score, held.PFI)
    for block in BLOCKS:
        for level in ("T2", "W", "SPE", "index"):
            assert monitor.limits_[block][level] == pytest.approx(
                np.quantile(held[f"{block}.{level}"], 0.99), rel=1e-12)
    assert held.alarm.sum() <= np.ceil(0.01 * len(held))  # at most the top 1 % alarm


@pytest.mark.parametrize("design", ["residual", "level"])
def test_score_decision_and_predict_conventions(fitted, design):
    # the residual design sees a step in these mean-reverting AR(0.7) variables as a persistent
    # (1 - 0.7) x 6 offset of their residuals, which its CUSUM accumulates: with 320 training
    # rows and 3 epochs it catches more than half the faulty samples; the level design
    # (the first implementation) sees the shifted level itself
    monitor = fitted[0] if design == "residual" else MOLAMonitor(**LEGACY).fit(fitted[1])
    share, delay = (0.5, 60) if design == "residual" else (0.9, 10)
    test = _process(150, seed=2)
    test.iloc[60:, [0, 1]] += 6.0
    scores = monitor.score_samples(test)
    np.testing.assert_array_equal(scores, monitor.statistics(test).score.to_numpy())
    np.testing.assert_array_equal(monitor.decision_function(test), scores - monitor.threshold_)
    alarms = monitor.predict(test)
    np.testing.assert_array_equal(alarms, np.where(scores > monitor.threshold_, 1, 0))
    assert set(np.unique(alarms)) <= {0, 1}
    assert alarms[70:].mean() > share  # a large step in block b1 is caught
    result = monitor.detection_scores(test, onset=60)
    assert result["fdr"] > share and result["delay_samples"] <= delay
    stats = monitor.statistics(test).iloc[70:]
    assert (stats["b1.index"] > stats["b1.index_limit"]).mean() > share
    assert (stats["b1.weight"] == 1.0).mean() > share  # the block that alarmed first weighs most


def test_spe_contributions_sum_to_the_block_spe(fitted):
    monitor, X = fitted
    contrib = monitor.contributions(X, statistic="SPE")
    stats = monitor.statistics(X)
    assert list(contrib.columns) == list("abcdef") and (contrib.iloc[:WARM] == 0).all().all()
    for block, variables in BLOCKS.items():
        np.testing.assert_allclose(contrib[variables].sum(axis=1, min_count=1),
                                   stats[f"{block}.SPE"], rtol=1e-12)


def test_t2_contributions_sum_to_the_t2_excess_over_the_mean_window(fitted):
    monitor, X = fitted
    contrib = monitor.contributions(X.iloc[:60], statistic="T2", n_steps=64)
    stats = monitor.statistics(X.iloc[:60])
    blocks = monitor._final_core()["blocks"]
    for bi, (block, variables) in enumerate(BLOCKS.items()):
        net = blocks[bi].networks[0]
        base = t2_statistic(net.exact.encode(np.zeros((1, 5, 3))), net.t2_mean,
                            net.t2_precision)[0]
        np.testing.assert_allclose(contrib[variables].sum(axis=1).iloc[WARM:],
                                   stats[f"{block}.T2"].iloc[WARM:] - base, rtol=0.02, atol=0.02)


def test_save_load_gives_identical_scores(fitted, tmp_path):
    monitor, X = fitted
    back = MOLAMonitor.load(monitor.save(tmp_path / "mola.pt"))
    assert back.get_params() == {**monitor.get_params(), "blocks": BLOCKS}
    pd.testing.assert_frame_equal(back.statistics(X), monitor.statistics(X), check_exact=True)
    assert list(back.feature_names_in_) == list("abcdef")


def test_same_seed_same_scores_and_input_untouched():
    X = _process(200, seed=3)
    copy = X.copy()
    a = MOLAMonitor(**PARAMS).fit(X)
    b = MOLAMonitor(**PARAMS).fit(X)
    pd.testing.assert_frame_equal(X, copy)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))
    pd.testing.assert_frame_equal(X, copy)


def test_runs_are_windowed_separately_and_split_per_run():
    X = _process(400, seed=4)
    legacy = MOLAMonitor(**LEGACY).fit([X.iloc[:250], X.iloc[250:]])
    # per run: 175 + 105 training rows -> 171 + 101 windows; history-primed held-out part
    assert legacy.n_validation_samples_ == 75 + 45
    assert len(legacy.training_history_) == 2
    monitor = MOLAMonitor(**PARAMS).fit([X.iloc[:250], X.iloc[250:]])
    # two time blocks of 200 rows: run 0 [0, 200), then run 0 [200, 250) + run 1 [0, 150);
    # a block at the start of a run loses its warm-up rows, the others are primed by history
    assert monitor.n_validation_samples_ == 400 - 2 * WARM
    assert [f["held_out"] for f in monitor.fold_states_] == [[[0, 0, 200]],
                                                             [[0, 200, 250], [1, 0, 150]]]


def test_clone_and_params():
    monitor = MOLAMonitor(**PARAMS)
    assert clone(monitor).get_params() == monitor.get_params()
    assert monitor.set_params(window=7).window == 7
    assert not hasattr(monitor, "threshold_")


def test_clear_errors(fitted):
    monitor, X = fitted
    bad = X.copy()
    bad.iloc[10, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN values"):
        monitor.predict(bad)
    with pytest.raises(ValueError, match="NaN"):
        MOLAMonitor(**PARAMS).fit(bad)
    with pytest.raises(ValueError, match="5 columns but the estimator was fitted on 6"):
        monitor.predict(X.iloc[:, :5])
    assert (monitor.statistics(X.iloc[:4]).warmup == 1).all()  # scored as warm-up rows
    with pytest.raises(ValueError, match="rows; at least"):
        MOLAMonitor(**PARAMS).fit(X.iloc[:30])
    with pytest.raises(ValueError, match=r"unknown variables \['zz'\]"):
        MOLAMonitor(**{**PARAMS, "blocks": {"b1": list("abc"), "b2": ["d", "e", "f", "zz"]}}
                    ).fit(X)
    with pytest.raises(ValueError, match="cusum_allowance"):
        MOLAMonitor(**{**PARAMS, "cusum_allowance": 1.5}).fit(X)
    with pytest.raises(NotFittedError):
        MOLAMonitor().predict(X)
    with pytest.raises(NotFittedError):
        MOLAMonitor().stream()
    with pytest.raises(TypeError, match="numeric"):
        monitor.predict(X.assign(a="x"))


def test_recalibrate_equals_a_fresh_fit_with_the_new_settings(fitted):
    monitor, X = fitted
    test = _process(100, seed=5)
    test.iloc[50:, 3] += 2.0
    changed = dict(use_spe=True, cusum_allowance=0.3, n_bins=6, alpha=0.02, threshold_scale=1.5,
                   base_weight=0.2)
    again = clone(monitor).fit(X).set_params(**changed).recalibrate(X)
    fresh = MOLAMonitor(**{**PARAMS, **changed}).fit(X)
    pd.testing.assert_frame_equal(again.statistics(test), fresh.statistics(test),
                                  check_exact=True)
    assert again.limits_ == fresh.limits_
    with pytest.raises(ValueError, match=r"\['window'\] changed since fit"):
        clone(monitor).fit(X).set_params(window=6).recalibrate(X)
    with pytest.raises(ValueError, match="the data fit was called with"):
        clone(monitor).fit(X).recalibrate(_process(320, seed=9))


def test_recalibrate_in_the_first_design():
    X = _process()
    legacy = MOLAMonitor(**LEGACY).fit(X)
    assert legacy.fold_states_ == []  # one model, limits from its hold-out
    again = clone(legacy).fit(X).set_params(alpha=0.02).recalibrate(X)
    fresh = MOLAMonitor(**{**LEGACY, "alpha": 0.02}).fit(X)
    assert again.limits_ == fresh.limits_


def test_threshold_scale_multiplies_the_held_out_pfi_quantile(fitted):
    monitor, X = fitted
    scaled = clone(monitor).set_params(threshold_scale=3.0).fit(X)
    assert scaled.threshold_ == pytest.approx(3.0 * monitor.threshold_, rel=1e-12)
    assert scaled.limits_["PFI"] == scaled.threshold_
    np.testing.assert_array_equal(scaled.score_samples(X), monitor.score_samples(X))
    with pytest.raises(ValueError, match="threshold_scale"):
        MOLAMonitor(**{**PARAMS, "threshold_scale": 0}).fit(X)


def test_an_ensemble_averages_its_members_and_streams_exactly(tmp_path):
    X = _process(260, seed=6)
    ens = MOLAMonitor(**{**PARAMS, "n_ensemble": 2}).fit(X)
    assert all(len(s["members"]) == 2 for s in ens.block_states_)
    assert isinstance(ens.training_history_["b1"][0], list)
    # member 0 is the single network of the same seed; member 1 has its own weights
    single = MOLAMonitor(**PARAMS).fit(X)
    first, second = (m["olae"] for m in ens.block_states_[0]["members"])
    np.testing.assert_array_equal(first["to_code.weight"],
                                  single.block_states_[0]["members"][0]["olae"]["to_code.weight"])
    assert not np.array_equal(first["to_code.weight"], second["to_code.weight"])
    test = _process(90, seed=7)
    test.iloc[40:, 0] += 3.0
    stats = ens.statistics(test)
    core = ens._final_core()
    win = ens._windows(ens._inputs(core, (test.to_numpy() - ens.mean_) / ens.scale_))
    for bi, block in enumerate(BLOCKS):
        cols = core["blocks"][bi].columns
        t2 = [t2_statistic(net.exact.encode(np.ascontiguousarray(win[:, :, cols])), net.t2_mean,
                           net.t2_precision) for net in core["blocks"][bi].networks]
        np.testing.assert_allclose(stats[f"{block}.T2"].iloc[WARM:], (t2[0] + t2[1]) / 2,
                                   rtol=1e-12)
    stream = ens.stream()
    rows = pd.concat([stream.update(test.iloc[i]) for i in range(len(test))])
    pd.testing.assert_frame_equal(rows, stats, check_exact=True, check_freq=False)
    contrib = ens.contributions(test, statistic="SPE")
    for block, variables in BLOCKS.items():
        np.testing.assert_allclose(contrib[variables].sum(axis=1, min_count=1),
                                   stats[f"{block}.SPE"], rtol=1e-12)
    back = MOLAMonitor.load(ens.save(tmp_path / "ens.pt"))
    pd.testing.assert_frame_equal(back.statistics(test), stats, check_exact=True)
