import numpy as np
import pandas as pd
import pytest

from mola_ts.data import DETECTABLE_FAULTS, TEP_XMEAS, TEP_XMV, load_tep
from mola_ts.metrics import false_alarm_rate, fault_detection_rate
from mola_ts.monitor import DPCAMonitor, PCAMonitor
from mola_ts.monitor.pca_core import lagged

YIN_COLUMNS = TEP_XMEAS[:22] + TEP_XMV
# Yin et al. (2012), PCA with k = 9 on the 33 variables (monitoring spec §6): FDR % of faults 1..21
YIN_FDR = [99.88, 98.75, 12.88, 100, 33.63, 100, 100, 98.00, 8.38, 60.50, 78.88, 99.13, 95.38,
           100, 14.13, 55.25, 95.25, 90.50, 42.12, 63.38, 52.12]


def test_pca_reproduces_yin_2012_on_tennessee_eastman():
    pca = PCAMonitor(n_components=9, statistic="either", limit="parametric", alpha=0.01)
    pca.fit(load_tep(0, "train")[YIN_COLUMNS])
    assert pca.t2_limit_ == pytest.approx(22.395, abs=5e-4)
    assert pca.spe_limit_ == pytest.approx(23.406, abs=5e-4)
    far = false_alarm_rate(pca.predict(load_tep(0, "test")[YIN_COLUMNS]), start=160)
    assert 100 * far == pytest.approx(6.125, abs=1e-9)
    fdr = [100 * fault_detection_rate(pca.predict(load_tep(f, "test")[YIN_COLUMNS]))
           for f in range(1, 22)]
    for fault, (ours, theirs) in enumerate(zip(fdr, YIN_FDR, strict=True), start=1):
        assert abs(ours - theirs) <= 0.01 + 1e-9, f"fault {fault}: {ours:.3f} vs {theirs}"
    mean = np.mean([fdr[f - 1] for f in DETECTABLE_FAULTS])
    assert mean == pytest.approx(81.3, abs=0.05)


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    x = latent @ rng.normal(size=(2, 5)) + 0.3 * rng.normal(size=(n, 5))
    return pd.DataFrame(x, columns=list("abcde"),
                        index=pd.date_range("2024-01-01", periods=n, freq="3min"))


@pytest.mark.parametrize("cls", [PCAMonitor, DPCAMonitor])
@pytest.mark.parametrize("statistic", ["T2", "SPE"])
def test_contributions_sum_to_the_statistic(cls, statistic):
    X = _data()
    model = cls(n_components=2).fit(X)
    stats = model.statistics(X)
    contrib = model.contributions(X, statistic=statistic)
    assert list(contrib.columns) == list("abcde")
    np.testing.assert_allclose(contrib.sum(axis=1, min_count=1), stats[statistic], rtol=1e-10)


def test_score_and_alarm_conventions():
    X = _data()
    for statistic, threshold in (("t2", "t2_limit_"), ("spe", "spe_limit_")):
        model = PCAMonitor(n_components=2, statistic=statistic).fit(X)
        assert model.threshold_ == getattr(model, threshold)
    model = PCAMonitor(n_components=2).fit(X)
    test = X.copy()
    test.iloc[100:, 0] += 8.0
    scores = model.score_samples(test)
    stats = model.statistics(test)
    np.testing.assert_allclose(scores, np.maximum(stats.T2 / stats.T2_limit,
                                                  stats.SPE / stats.SPE_limit))
    assert model.threshold_ == 1.0
    np.testing.assert_array_equal(model.predict(test), (scores > 1).astype(int))
    np.testing.assert_allclose(model.decision_function(test), scores - 1.0)
    assert model.predict(test)[100:].mean() > 0.95
    result = model.detection_scores(test, onset=100)
    assert result["fdr"] > 0.95 and result["delay_samples"] == 1


def test_validation_limits_are_held_out_quantiles():
    X = _data(400)
    model = PCAMonitor(n_components=2, limit="validation", validation_fraction=0.25).fit(X)
    refit = PCAMonitor(n_components=2).fit(X.iloc[:300])
    np.testing.assert_allclose(model.components_ @ model.components_.T,
                               refit.components_ @ refit.components_.T, atol=1e-10)
    held = refit.statistics(X.iloc[300:])
    assert model.t2_limit_ == pytest.approx(np.quantile(held.T2, 0.99))
    assert model.spe_limit_ == pytest.approx(np.quantile(held.SPE, 0.99))


def test_dpca_lags_do_not_cross_runs_and_flag_the_first_samples_as_warmup():
    np.testing.assert_array_equal(lagged(np.arange(8.0).reshape(4, 2), 1),
                                  [[2, 3, 0, 1], [4, 5, 2, 3], [6, 7, 4, 5]])
    X = _data()
    model = DPCAMonitor(n_lags=2, n_components=3).fit([X.iloc[:150], X.iloc[150:]])
    assert model.n_samples_fit_ == 300 - 2 * 2
    stats = model.statistics(X)
    # warm-up rows: flagged, finite (0) statistics and score, no alarm
    np.testing.assert_array_equal(stats.warmup, [1, 1] + [0] * (len(X) - 2))
    assert (stats.iloc[:2][["T2", "SPE", "score"]] == 0).all().all()
    assert (stats.iloc[2:].T2 > 0).all() and np.isfinite(stats.to_numpy(float)).all()
    assert (model.predict(X)[:2] == 0).all()
    assert model.components_.shape == (15, 3)


def test_fraction_of_variance_selects_components():
    X = _data()
    model = PCAMonitor(n_components=0.5).fit(X)
    share = np.cumsum(model.eigenvalues_) / model.eigenvalues_.sum()
    k = model.n_components_
    assert share[k - 1] >= 0.5 and (k == 1 or share[k - 2] < 0.5)


def test_pca_save_load_gives_identical_scores(tmp_path):
    X = _data()
    model = DPCAMonitor(n_lags=1, n_components=2, limit="validation").fit(X)
    back = DPCAMonitor.load(model.save(tmp_path / "dpca.pt"))
    assert back.get_params() == model.get_params()
    np.testing.assert_array_equal(back.score_samples(X), model.score_samples(X))
    assert list(back.feature_names_in_) == list("abcde")


def test_pca_input_errors():
    X = _data()
    model = PCAMonitor(n_components=2).fit(X)
    bad = X.copy()
    bad.iloc[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(bad)
    with pytest.raises(ValueError, match="4 columns but the estimator was fitted on 5"):
        model.predict(X.iloc[:, :4])
    with pytest.raises(ValueError, match="n_components=5"):
        PCAMonitor(n_components=5).fit(X)
    with pytest.raises(ValueError, match="statistic"):
        PCAMonitor(statistic="q").fit(X)
    with pytest.raises(ValueError, match="constant columns"):
        PCAMonitor(n_components=1).fit(X.assign(f=1.0))
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        PCAMonitor().predict(X)
