"""ResidualMonitor's probability of fault from a mixture of last-layer Laplace posteriors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.exceptions import NotFittedError

from mola_ts.bench.fault_probability import expected_calibration_error, reliability_table
from mola_ts.monitor import ResidualMonitor
from mola_ts.monitor.laplace_fault import LaplaceFault, filter_fault
from mola_ts.monitor.predictor import lag_matrix
from mola_ts.persistence import save_estimator

A = np.array([[0.7, 0.2, 0.0], [0.0, 0.6, 0.1], [0.1, 0.0, 0.5]])
COV = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]])


def _process(n: int, seed: int, fault_share: float = 0.0, scale: float = 1.0):
    """A VAR(1) whose innovations are N(0, COV), or N(0, scale^2 COV) on a random
    ``fault_share`` of the samples (independently per sample); returns (x, faulty)."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(COV)
    faulty = rng.random(n) < fault_share
    faulty[0] = False
    e = rng.standard_normal((n, 3)) @ chol.T * np.where(faulty, scale, 1.0)[:, None]
    x = np.zeros((n, 3))
    for t in range(1, n):
        x[t] = A @ x[t - 1] + e[t]
    return x, faulty


@pytest.fixture(scope="module")
def single():
    return ResidualMonitor(n_ensemble=1, freeze_check=False).fit(_process(3000, 0)[0])


def test_predictive_variance_matches_the_closed_form_of_a_linear_predictor(single):
    monitor = single
    train = (_process(3000, 0)[0] - monitor.mean_) / monitor.scale_
    phi = np.concatenate([lag_matrix(train, 1), np.ones((2999, 1))], axis=1)
    gram = phi.T @ phi
    laplace = LaplaceFault(monitor.laplace_, monitor)
    la = laplace.components[0]
    lam, sigma = la.prior_precision_, np.broadcast_to(la.sigma_noise_, (3,))
    new = (_process(200, 5)[0] - monitor.mean_) / monitor.scale_
    dist = laplace.predictive(new, 1)
    whiten = np.linalg.cholesky(monitor.precision_)
    phi_new = np.concatenate([new[:-1], np.ones((199, 1))], axis=1)
    for i in range(3):
        cov = np.linalg.inv(gram / sigma[i] ** 2 + lam * np.eye(4))
        closed = np.einsum("nd,de,ne->n", phi_new, cov, phi_new) + sigma[i] ** 2
        np.testing.assert_allclose(dist.variances[:, i, 0], closed, rtol=1e-8)
    # the mean is the monitor's own (whitened) one-step prediction
    pred = monitor.predictor_.predict_lagged(new[:-1]) @ whiten
    np.testing.assert_allclose(dist.means[:, :, 0], pred, rtol=1e-8, atol=1e-10)
    # mapped back to the variables' units: mean = the prediction, variance = diag of
    # L^-T diag(v) L^-1 in standardised units times scale^2
    back = monitor.predictive_distribution(_process(200, 5)[0])
    np.testing.assert_allclose(back.mean, monitor.predictor_.predict_lagged(new[:-1])
                               * monitor.scale_ + monitor.mean_, rtol=1e-8, atol=1e-10)
    inv = np.linalg.inv(whiten)
    row = inv.T @ np.diag(dist.variances[7, :, 0]) @ inv
    np.testing.assert_allclose(back.var[7], np.diag(row) * monitor.scale_ ** 2, rtol=1e-8)


def test_members_posteriors_differ_when_members_differ():
    x = _process(2000, 1)[0]
    monitor = ResidualMonitor(n_ensemble=3, freeze_check=False).fit(x)
    laplace = LaplaceFault(monitor.laplace_, monitor)
    thetas = [c.theta_ for c in laplace.components]
    assert len(thetas) == 3
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(thetas[i], thetas[j], atol=1e-4)
    dist = laplace.predictive((x[:100] - monitor.mean_) / monitor.scale_, 1)
    assert dist.n_components == 3
    assert (dist.variance_decomposition()["ensemble"] > 0).all()
    # the same data and seed give the same members; another seed other bootstraps
    again = ResidualMonitor(n_ensemble=3, freeze_check=False).fit(x)
    np.testing.assert_array_equal(LaplaceFault(again.laplace_, again).components[2].theta_,
                                  thetas[2])
    other = ResidualMonitor(n_ensemble=3, freeze_check=False, random_state=7).fit(x)
    assert not np.allclose(LaplaceFault(other.laplace_, other).components[2].theta_,
                           thetas[2], atol=1e-4)


def test_default_members_follow_the_predictor():
    x = _process(600, 2)[0]
    assert len(ResidualMonitor().fit(x).laplace_["members"]) == 5
    assert len(ResidualMonitor(predictor="mlp", hidden_size=4).fit(x).laplace_["members"]) == 1


def test_calibrated_on_a_process_with_a_known_law(single):
    """Faults are innovations of 2.5 times the normal scale on 30 % of the samples, drawn
    independently: with that fault law, that prior and no memory, the true P(F | x) is
    Bayes' rule on two known Gaussians of the innovation."""
    monitor, scale, share = single, 2.5, 0.3
    x, faulty = _process(6000, 11, fault_share=share, scale=scale)
    out = monitor.predict_fault_probability(x, prior_fault=share, fault_scale=scale,
                                            fault_memory=0.0)
    e = x[1:] - x[:-1] @ A.T
    normal = stats.multivariate_normal(np.zeros(3), COV).logpdf(e)
    fault = stats.multivariate_normal(np.zeros(3), scale ** 2 * COV).logpdf(e)
    truth = 1 / (1 + (1 - share) / share * np.exp(normal - fault))
    prob = out["fault_probability"].to_numpy()[1:]
    assert np.mean(np.abs(prob - truth)) < 0.02
    assert expected_calibration_error(1 - prob, ~faulty[1:]) < 0.03
    # and an alternative far from the truth is not calibrated: the check can fail
    wrong = monitor.predict_fault_probability(x, prior_fault=share, fault_scale=10.0,
                                              fault_memory=0.0)
    assert expected_calibration_error(1 - wrong["fault_probability"].to_numpy()[1:],
                                      ~faulty[1:]) > 0.05
    band = out.iloc[1:]
    assert (band.fault_probability_lower <= band.fault_probability).all()
    assert (band.fault_probability <= band.fault_probability_upper).all()
    assert (band.fault_probability_upper - band.fault_probability_lower).max() > 0


def test_filter_memory_and_prior():
    lr = np.zeros(50)
    np.testing.assert_allclose(filter_fault(lr, 0.01, 0.9), 0.01)  # stationary without evidence
    strong = np.r_[np.zeros(5), np.full(3, 8.0), np.zeros(10)]
    memoryless = filter_fault(strong, 0.01, 0.0)
    remembering = filter_fault(strong, 0.01, 0.95)
    assert memoryless[8] == pytest.approx(0.01) and remembering[8] > 0.5


def test_methods_and_bad_input(single):
    x = _process(300, 3)[0]
    laplace = single.predict_fault_probability(x)
    assert laplace.attrs["method"] == "laplace"
    assert list(laplace.columns) == ["score", "nll", "log_lr", "fault_probability",
                                     "fault_probability_lower", "fault_probability_upper"]
    assert laplace.iloc[0].fault_probability == 0  # the warm-up row
    tail = single.predict_fault_probability(x, method="tail")
    assert "p_value" in tail.columns and tail.attrs["method"] == "tail"
    np.testing.assert_array_equal(single.predict_proba(x)[:, 1], laplace.fault_probability)
    with pytest.raises(ValueError, match="method must be one of"):
        single.predict_fault_probability(x, method="gpd")
    with pytest.raises(ValueError, match="tail_fraction"):
        single.predict_fault_probability(x, tail_fraction=0.2)
    with pytest.raises(ValueError, match="fault_scale"):
        single.predict_fault_probability(x, fault_scale=1.0)
    with pytest.raises(ValueError, match="coverage"):
        single.predict_fault_probability(x, coverage=1.5)
    with pytest.raises(ValueError, match="columns|features|variables"):
        single.predict_fault_probability(x[:, :2])
    with pytest.raises(NotFittedError):
        ResidualMonitor().predict_fault_probability(x)
    with pytest.raises(NotFittedError):
        ResidualMonitor().predictive_distribution(x)
    with pytest.raises(ValueError, match="n_ensemble"):
        ResidualMonitor(n_ensemble=0).fit(x)


def test_saved_monitors_load_and_files_without_the_mixture_use_the_tail(single, tmp_path):
    x = _process(300, 4)[0]
    single.save(tmp_path / "new.mts")
    loaded = ResidualMonitor.load(tmp_path / "new.mts")
    pd.testing.assert_frame_equal(loaded.predict_fault_probability(x),
                                  single.predict_fault_probability(x))
    # a file written before the Laplace mixture: no n_ensemble parameter, no laplace_
    params = single._params_to_save()
    params.pop("n_ensemble")
    state = single._state_to_save()
    state.pop("laplace_")
    state["scoring_params_"] = {k: v for k, v in state["scoring_params_"].items()
                                if k != "n_ensemble"}
    save_estimator(single, tmp_path / "old.mts", state, params=params)
    old = ResidualMonitor.load(tmp_path / "old.mts")
    np.testing.assert_array_equal(old.score_samples(x), single.score_samples(x))
    out = old.predict_fault_probability(x)
    assert out.attrs["method"] == "tail"
    pd.testing.assert_frame_equal(out, single.predict_fault_probability(x, method="tail"))
    with pytest.raises(ValueError, match="no Laplace posterior"):
        old.predict_fault_probability(x, method="laplace")


def test_reliability_table_and_ece():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.95, 0.95])
    y = np.array([0, 0, 1, 1, 1, 0])
    table = reliability_table(p, y)
    assert table["count"].sum() == 6 and table.loc[9, "observed"] == 0.75
    assert expected_calibration_error(p, y) == pytest.approx((2 * 0.05 + 4 * 0.2) / 6)


def test_the_band_is_computed_in_row_blocks_with_the_same_result(single, monkeypatch):
    import mola_ts.monitor.laplace_fault as laplace_fault

    x = _process(700, 12, fault_share=0.2, scale=2.0)[0]
    whole = single.predict_fault_probability(x)
    monkeypatch.setattr(laplace_fault, "_CHUNK", 64)
    pd.testing.assert_frame_equal(single.predict_fault_probability(x), whole)
