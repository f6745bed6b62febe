import math

import numpy as np
import pytest

from mola_ts.monitor.fusion import OrderWeights, bayesian_combination, fault_probability


def _by_hand(s, lim, alpha):
    p_x_n, p_x_f = math.exp(-s / lim), math.exp(-lim / s)
    return p_x_f, p_x_f * alpha / (p_x_n * (1 - alpha) + p_x_f * alpha)


def test_fault_probability_on_hand_computed_values():
    # S = 2, S_lim = 1, alpha = .01: P(x|N) = e^-2 = .135335, P(x|F) = e^-.5 = .606531,
    # P(F|x) = .00606531 / (.99 * .135335 + .00606531) = .00606531 / .140047 = .043309
    p_x_f, p_f_x = fault_probability(np.array([2.0]), 1.0, 0.01)
    assert p_x_f[0] == pytest.approx(0.6065307, rel=1e-6)
    assert p_f_x[0] == pytest.approx(0.043309, rel=1e-5)
    # at the limit the fault probability is the prior alpha; far beyond it tends to 1
    assert fault_probability(np.array([3.0]), 3.0, 0.05)[1][0] == pytest.approx(0.05)
    assert fault_probability(np.array([1e4]), 1.0, 0.01)[1][0] == pytest.approx(1.0)
    p_x_f, p_f_x = fault_probability(np.array([0.0, np.nan]), 1.0, 0.01)
    assert p_x_f[0] == 0 and p_f_x[0] == 0 and np.isnan(p_f_x[1])


def test_bayesian_combination_on_hand_computed_values():
    stats, limits, alpha = [2.0, 0.5, 4.0], [1.0, 1.0, 2.0], 0.01
    parts = [_by_hand(s, lim, alpha) for s, lim in zip(stats, limits, strict=True)]
    # by hand: BIC = sum P(x|F) P(F|x) / sum P(x|F); with stats (2, .5, 4) and limits (1, 1, 2):
    # P(x|F) = (.606531, .135335, .606531), P(F|x) = (.043309, .0022488, .043309)
    # BIC = (2 * .606531 * .043309 + .135335 * .0022488) / (2 * .606531 + .135335) = .039187
    expected = sum(a * b for a, b in parts) / sum(a for a, _ in parts)
    assert expected == pytest.approx(0.039187, rel=1e-4)
    p_x_f, p_f_x = fault_probability(np.array([stats]), np.array(limits), alpha)
    assert bayesian_combination(p_x_f, p_f_x)[0] == pytest.approx(expected, rel=1e-12)
    weights = np.array([1.0, 0.1, 0.2])
    weighted = sum(w * a * b for w, (a, b) in zip(weights, parts, strict=True)) / sum(
        w * a for w, (a, _) in zip(weights, parts, strict=True))
    assert bayesian_combination(p_x_f, p_f_x, weights)[0] == pytest.approx(weighted, rel=1e-12)


def test_combination_of_statistics_at_their_limits_is_alpha_and_zero_when_all_zero():
    p_x_f, p_f_x = fault_probability(np.array([[1.0, 5.0]]), np.array([1.0, 5.0]), 0.02)
    assert bayesian_combination(p_x_f, p_f_x)[0] == pytest.approx(0.02)
    p_x_f, p_f_x = fault_probability(np.zeros((1, 2)), np.ones(2), 0.02)
    assert bayesian_combination(p_x_f, p_f_x)[0] == 0.0


def test_order_weights_follow_the_alarm_order_and_reset_after_quiet_samples():
    ow = OrderWeights(3, gamma=1.0, base_weight=0.1, reset_after=2)
    np.testing.assert_allclose(ow.step([False, False, False]), [0.1, 0.1, 0.1])
    np.testing.assert_allclose(ow.step([False, True, False]), [0.1, 1.0, 0.1])  # block 1 first
    np.testing.assert_allclose(ow.step([True, True, False]), [math.exp(-1), 1.0, 0.1])
    np.testing.assert_allclose(ow.step([False, False, True]),
                               [math.exp(-1), 1.0, math.exp(-2)])  # orders kept in the episode
    ow.step([False, False, False])  # one quiet sample: the episode goes on
    np.testing.assert_allclose(ow.step([True, False, False]),
                               [math.exp(-1), 1.0, math.exp(-2)])
    ow.step([False, False, False])
    np.testing.assert_allclose(ow.step([False, False, False]), [0.1, 0.1, 0.1])  # reset
    np.testing.assert_allclose(ow.step([True, False, True]), [1.0, 0.1, 1.0])  # shared order
    state = ow.get_state()
    other = OrderWeights(3, gamma=1.0, base_weight=0.1, reset_after=2)
    other.set_state(*state)
    np.testing.assert_allclose(other.step([False, True, False]), [1.0, math.exp(-1), 1.0])


def test_bad_fusion_arguments():
    with pytest.raises(ValueError, match="alpha"):
        fault_probability(np.ones(2), 1.0, 1.5)
    with pytest.raises(ValueError, match="limits must be > 0"):
        fault_probability(np.ones(2), 0.0, 0.01)
    with pytest.raises(ValueError, match="shape"):
        bayesian_combination(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="reset_after"):
        OrderWeights(2, reset_after=0)
