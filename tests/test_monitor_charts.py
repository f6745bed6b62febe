import numpy as np
import pytest
from scipy import stats

from mola_ts.monitor.charts import (
    QuantileCUSUM,
    control_limit,
    empirical_limit,
    fit_t2,
    kde_limit,
    quantile_edges,
    spe_limit_jackson_mudholkar,
    t2_limit_f,
    t2_statistic,
)


def test_cusum_matches_a_hand_worked_sequence():
    # one feature, two bins split at 0 (F0 = 1/2 each), allowance k = 0.5. By hand:
    # z=+1: S_obs=[0,1], S_exp=[.5,.5], C=1 > k, shrink .5 -> U_obs=[0,.5], U_exp=[.25,.25], W=.5
    # z=+1: S_obs=[0,1.5], S_exp=[.75,.75], C=1.5, shrink 2/3 -> U_obs=[0,1], U_exp=[.5,.5], W=1
    # z=-1: S_obs=[1,1], S_exp=[1,1], C=0 <= k -> reset, W=0
    # z=+1: as the first step, W=.5; z=+1: W=1
    # z=+1: S_obs=[0,2], S_exp=[1,1], C=2, shrink .75 -> U_obs=[0,1.5], U_exp=[.75,.75], W=1.5
    chart = QuantileCUSUM(np.array([[0.0]]), k=0.5)
    w = chart.update(np.array([[1.0], [1.0], [-1.0], [1.0], [1.0], [1.0]]))
    np.testing.assert_allclose(w, [0.5, 1.0, 0.0, 0.5, 1.0, 1.5], rtol=1e-12)
    u_obs, u_exp = chart.get_state()
    np.testing.assert_allclose(u_obs, [0.0, 1.5])
    np.testing.assert_allclose(u_exp, [0.75, 0.75])


def test_cusum_two_features_one_step_by_hand():
    # z = (+1, -1), edges 0: Y = [0,1 | 1,0]; C = 4 * .25 / .5 = 2 = q(m-1); k = .5 -> shrink .75
    # U_obs = [0,.75,.75,0], U_exp = .375 each, W = 4 * .375^2 / .375 = 1.5
    chart = QuantileCUSUM(np.zeros((2, 1)), k=0.5)
    assert chart.update(np.array([[1.0, -1.0]]))[0] == pytest.approx(1.5)
    np.testing.assert_allclose(chart.u_obs, [0, 0.75, 0.75, 0])


def test_cusum_from_reset_state_needs_k_below_q_times_m_minus_1():
    # C_1 = q (m - 1) whatever the sample: with k above it the chart never leaves zero
    rng = np.random.default_rng(0)
    edges = quantile_edges(rng.normal(size=(1000, 3)), 5)
    z = rng.normal(size=(50, 3)) + 3.0
    assert np.all(QuantileCUSUM(edges, k=3 * 4 + 0.1).update(z) == 0)
    assert QuantileCUSUM(edges, k=3 * 4 - 0.1).update(z[:1])[0] > 0


def test_cusum_bins_follow_the_edges_with_ties_to_the_lower_bin():
    chart = QuantileCUSUM(np.array([[-1.0, 0.0, 1.0]]), k=1.0)
    np.testing.assert_array_equal(chart.bin_indices(np.array([[-2.0], [-1.0], [0.5], [9.0]]))[:, 0],
                                  [0, 0, 2, 3])


def test_cusum_is_stable_in_control_and_grows_under_a_shift():
    rng = np.random.default_rng(1)
    q, m = 4, 10
    edges = quantile_edges(rng.normal(size=(20000, q)), m)
    chart = QuantileCUSUM(edges, k=0.05 * q * (m - 1))
    w = chart.update(rng.normal(size=(20000, q)))
    finite = np.isfinite(w).all()
    means = [w[i:i + 4000].mean() for i in range(4000, 20000, 4000)]
    assert finite and max(means) / min(means) < 1.15  # no drift over a long in-control stream
    limit = empirical_limit(w[1000:], 0.01)
    chart.reset()
    fresh = chart.update(rng.normal(size=(5000, q)))[500:]
    assert 0.002 < np.mean(fresh > limit) < 0.03  # the in-control alarm rate stays near 1 %
    chart.reset()
    shifted = rng.normal(size=(300, q))
    shifted[:, 0] += 1.5
    assert np.mean(chart.update(shifted)[100:] > limit) > 0.95


def test_cusum_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be > 0"):
        QuantileCUSUM(np.zeros((2, 3)), k=0.0)
    with pytest.raises(ValueError, match="edges"):
        QuantileCUSUM(np.zeros(3), k=1.0)
    with pytest.raises(ValueError, match="columns"):
        QuantileCUSUM(np.zeros((2, 3)), k=1.0).update(np.zeros((4, 3)))


def test_t2_equals_the_textbook_formula():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(200, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 2.0]])
    mean, precision = fit_t2(ref)
    z = rng.normal(size=(5, 3))
    inv = np.linalg.inv(np.cov(ref, rowvar=False))
    expected = [(zi - ref.mean(0)) @ inv @ (zi - ref.mean(0)) for zi in z]
    np.testing.assert_allclose(t2_statistic(z, mean, precision), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="more reference rows"):
        fit_t2(ref[:3])


def test_validation_limits_are_quantiles():
    rng = np.random.default_rng(3)
    values = rng.normal(size=5000)
    assert empirical_limit(values, 0.01) == pytest.approx(np.quantile(values, 0.99))
    assert kde_limit(values, 0.01) == pytest.approx(stats.norm.ppf(0.99), abs=0.05)
    assert control_limit(values, 0.05, "kde") == pytest.approx(stats.norm.ppf(0.95), abs=0.05)
    assert empirical_limit(np.r_[values, np.nan], 0.01) == empirical_limit(values, 0.01)
    with pytest.raises(ValueError, match="limit method"):
        control_limit(values, 0.01, "gauss")


def test_parametric_pca_limits_of_yin_2012():
    assert t2_limit_f(9, 500, 0.01) == pytest.approx(22.395, abs=5e-4)
    # one discarded eigenvalue: the SPE limit is lambda * chi2_1(0.99) (h0 = 1/3 form) -- compare
    # against scipy's exact chi-square quantile of a single N(0, lambda) squared residual
    exact = 2.0 * stats.chi2.ppf(0.99, 1)
    assert spe_limit_jackson_mudholkar(np.array([2.0]), 0.01) == pytest.approx(exact, rel=0.15)
    with pytest.raises(ValueError):
        spe_limit_jackson_mudholkar(np.array([]), 0.01)
