import numpy as np
import pytest
from scipy import stats
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from mola_ts.uncertainty import FaultProbability


def test_tail_probability_is_calibrated_in_control():
    """In control, P(p <= alpha) ~ alpha (false-alarm rate), averaged over five fits."""
    rng = np.random.default_rng(0)
    alphas = np.array([0.05, 0.01, 0.002])
    for draw in (lambda n: rng.chisquare(5, n), lambda n: 9 * rng.f(9, 50, n),
                 lambda n: rng.lognormal(0.0, 0.7, n)):
        rates = []
        for _ in range(5):
            p = FaultProbability().fit(draw(3000)).tail_probability(draw(20_000))
            rates.append((p[:, None] <= alphas).mean(axis=0))
        ratio = np.mean(rates, axis=0) / alphas
        assert ((ratio > 0.65) & (ratio < 1.4)).all(), ratio


def test_band_covers_the_true_tail_probability():
    chi2 = stats.chi2(5)
    s = chi2.isf([0.2, 1e-2, 1e-3, 1e-5])
    hits = []
    for seed in range(40):
        sample = chi2.rvs(size=1000, random_state=np.random.default_rng(seed))
        _, lower, upper = FaultProbability(coverage=0.9).fit(sample).tail_probability(
            s, return_band=True)
        hits.append((lower <= chi2.sf(s)) & (chi2.sf(s) <= upper))
    assert (np.mean(hits, axis=0) >= 0.75).all()


def test_exponential_tail_extrapolates_beyond_the_data():
    rng = np.random.default_rng(1)
    fp = FaultProbability().fit(rng.exponential(2.0, size=5000))
    assert fp.xi_[0] < 0.05
    assert fp.sigma_[0] == pytest.approx(2.0, rel=0.1)
    s = np.array([25.0, 40.0])  # far beyond the largest of 5000 values (about 17)
    p, lower, upper = fp.tail_probability(s, return_band=True)
    np.testing.assert_allclose(np.log(p), -s / 2.0, rtol=0.1)
    assert ((lower <= np.exp(-s / 2)) & (np.exp(-s / 2) <= upper)).all()


def test_fault_probability_is_the_calibrated_bayes_rule():
    fp = FaultProbability(prior_fault=0.05).fit(np.arange(1.0, 1001.0))
    # below the tail threshold the tail probability is the empirical share of values >= s
    p = fp.tail_probability([500.5, 800.5])
    np.testing.assert_allclose(p, [0.5, 0.2])
    prob, lower, upper = fp.fault_probability([500.5, 800.5])
    bayes = -np.e * 0.2 * np.log(0.2)  # Sellke-Bayarri-Berger bound; 1 above p = 1/e
    np.testing.assert_allclose(prob, [0.05, 0.05 / (0.05 + 0.95 * bayes)])
    assert (lower <= prob).all() and (prob <= upper).all()
    assert upper[1] > prob[1] > lower[1]


def test_monotone_banded_and_sharper_with_more_data():
    rng = np.random.default_rng(2)
    s = np.linspace(0.0, 80.0, 400)
    small = FaultProbability().fit(rng.chisquare(9, size=400))
    large = FaultProbability().fit(rng.chisquare(9, size=8000))
    for fp in (small, large):
        prob, lower, upper = fp.fault_probability(s)
        assert (np.diff(prob) >= 0).all()
        assert (np.diff(lower) >= -1e-12).all() and (np.diff(upper) >= -1e-12).all()
        assert (lower <= prob + 1e-15).all() and (prob <= upper + 1e-15).all()
        assert prob[0] == pytest.approx(fp.prior_fault) and prob[-1] > 0.999
    level = [stats.chi2(9).isf(1e-3)]
    width = [np.diff(np.log(fp.tail_probability(level, return_band=True)[1:]), axis=0)[0, 0]
             for fp in (small, large)]
    assert width[1] < 0.5 * width[0]


def test_k_statistics_mix_their_tail_probabilities():
    rng = np.random.default_rng(3)
    a, b = rng.chisquare(4, size=1500), 3 * rng.chisquare(2, size=1500)
    both = FaultProbability().fit(np.column_stack([a, b]))
    s = np.array([[3.0, 3.0], [12.0, 30.0], [20.0, 5.0]])
    one, two = FaultProbability().fit(a), FaultProbability().fit(b)
    for mixed, first, second in zip(both.tail_probability(s, return_band=True),
                                    one.tail_probability(s[:, 0], return_band=True),
                                    two.tail_probability(s[:, 1], return_band=True), strict=True):
        np.testing.assert_allclose(mixed, 0.5 * (first + second), rtol=1e-10)
    assert both.n_statistics_ == 2


def test_predict_and_decision_function():
    rng = np.random.default_rng(4)
    fp = FaultProbability(threshold=0.8).fit(rng.chisquare(3, size=2000))
    s = np.array([1.0, 12.0, 25.0, 60.0])
    prob = fp.decision_function(s)
    np.testing.assert_array_equal(fp.predict(s), (prob >= 0.8).astype(int))
    assert fp.predict(s)[0] == 0 and fp.predict(s)[-1] == 1


def test_sklearn_conventions_and_bad_input():
    rng = np.random.default_rng(5)
    fp = FaultProbability(prior_fault=0.02)
    assert clone(fp).get_params() == fp.get_params()
    with pytest.raises(NotFittedError):
        fp.tail_probability([1.0])
    statistics = rng.chisquare(3, size=500)
    before = statistics.copy()
    fp.fit(statistics)
    np.testing.assert_array_equal(statistics, before)
    with pytest.raises(ValueError, match="statistics has 2 columns but fit saw 1"):
        fp.tail_probability(np.ones((3, 2)))
    with pytest.raises(ValueError, match="statistics holds 1 NaN"):
        FaultProbability().fit(np.append(statistics, np.nan))
    with pytest.raises(ValueError, match="at least 10 are needed"):
        FaultProbability().fit(statistics[:50])
    with pytest.raises(ValueError, match="at least 10 are needed"):
        FaultProbability().fit(np.r_[np.zeros(495), np.arange(1.0, 6.0)])  # mostly zeros
    with pytest.raises(ValueError, match=r"prior_fault must lie in \(0, 1\)"):
        FaultProbability(prior_fault=1.0).fit(statistics)
    with pytest.raises(ValueError, match=r"tail_fraction must lie in \(0, 1\)"):
        FaultProbability(tail_fraction=0.0).fit(statistics)
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        FaultProbability().fit(np.ones((10, 2, 2)))
    with pytest.raises(TypeError, match="statistics must hold real numbers"):
        FaultProbability().fit(np.array(["a"] * 20))
