import numpy as np
import pytest
from scipy import integrate, stats

from mola_ts.metrics import crps_mixture
from mola_ts.uncertainty import GaussianMixture


@pytest.fixture
def bimodal() -> GaussianMixture:
    """Per point: 0.3 N(-2, 0.5^2) + 0.7 N(1.5 + shift, 1), shift = 0, 1, 2 (three points)."""
    shift = np.arange(3.0)
    means = np.stack([np.full(3, -2.0), 1.5 + shift], axis=-1)
    variances = np.stack([np.full(3, 0.25), np.ones(3)], axis=-1)
    noise = np.stack([np.full(3, 0.05), np.full(3, 0.4)], axis=-1)
    return GaussianMixture(means, variances, [0.3, 0.7], noise_variances=noise)


def test_moments_and_their_split(bimodal):
    m = 0.3 * -2.0 + 0.7 * (1.5 + np.arange(3.0))
    second = 0.3 * (0.25 + 4.0) + 0.7 * (1.0 + (1.5 + np.arange(3.0)) ** 2)
    np.testing.assert_allclose(bimodal.mean, m)
    np.testing.assert_allclose(bimodal.var, second - m**2)
    np.testing.assert_allclose(bimodal.std, np.sqrt(second - m**2))
    split = bimodal.variance_decomposition()
    np.testing.assert_allclose(split["noise"], 0.3 * 0.05 + 0.7 * 0.4)
    np.testing.assert_allclose(split["laplace"], 0.3 * 0.2 + 0.7 * 0.6)
    between = 0.3 * (-2.0 - m) ** 2 + 0.7 * (1.5 + np.arange(3.0) - m) ** 2
    np.testing.assert_allclose(split["ensemble"], between)
    np.testing.assert_allclose(sum(split.values()), bimodal.var)
    assert bimodal.batch_shape == (3,) and bimodal.n_components == 2


def test_cdf_and_log_prob_against_scipy(bimodal):
    y = np.array([-2.5, 0.1, 3.0])
    shift = np.arange(3.0)
    cdf = 0.3 * stats.norm.cdf(y, -2.0, 0.5) + 0.7 * stats.norm.cdf(y, 1.5 + shift, 1.0)
    pdf = 0.3 * stats.norm.pdf(y, -2.0, 0.5) + 0.7 * stats.norm.pdf(y, 1.5 + shift, 1.0)
    np.testing.assert_allclose(bimodal.cdf(y), cdf, rtol=1e-12)
    np.testing.assert_allclose(bimodal.log_prob(y), np.log(pdf), rtol=1e-12)
    # the density integrates to one and the CDF is its integral
    first = GaussianMixture(bimodal.means[0], bimodal.variances[0], bimodal.weights[0])
    total, _ = integrate.quad(lambda x: np.exp(first.log_prob(x)), -np.inf, np.inf)
    assert total == pytest.approx(1.0, abs=1e-8)
    part, _ = integrate.quad(lambda x: np.exp(first.log_prob(x)), -np.inf, 0.3)
    assert first.cdf(0.3) == pytest.approx(part, abs=1e-8)
    # a scalar broadcasts over the batch
    assert bimodal.cdf(0.0).shape == (3,)


def test_ppf_inverts_the_cdf(bimodal):
    q = np.array([1e-6, 0.01, 0.1, 0.3, 0.5, 0.77, 0.95, 0.999999])
    for level in q:
        x = bimodal.ppf(level)
        np.testing.assert_allclose(bimodal.cdf(x), level, rtol=1e-8, atol=1e-12)
    y = np.array([-3.0, 0.0, 2.0])
    np.testing.assert_allclose(bimodal.ppf(bimodal.cdf(y)), y, atol=1e-8)
    # per-point levels broadcast with the batch
    np.testing.assert_allclose(bimodal.cdf(bimodal.ppf(np.array([0.2, 0.5, 0.9]))), [0.2, 0.5, 0.9],
                               atol=1e-9)
    lo, hi = bimodal.ppf(0.0), bimodal.ppf(1.0)
    assert np.isneginf(lo).all() and np.isposinf(hi).all()
    # far-apart modes: a flat CDF between them sends Newton astray; the bracket keeps it safe
    apart = GaussianMixture([[-50.0, 50.0, 51.0]], [[1.0, 0.01, 4.0]], [0.3, 0.5, 0.2])
    for level in (0.1, 0.31, 0.5, 0.9):
        assert apart.cdf(apart.ppf(level))[0] == pytest.approx(level, rel=1e-7)


def test_ppf_of_one_gaussian_is_exact():
    dist = GaussianMixture.gaussian([0.0, 3.0], [1.0, 4.0])
    for level in (0.05, 0.5, 0.975):
        np.testing.assert_allclose(dist.ppf(level), stats.norm.ppf(level, [0.0, 3.0], [1.0, 2.0]),
                                   rtol=1e-12, atol=1e-12)


def test_intervals_nest_and_quantiles_are_monotone(bimodal):
    lo80, hi80 = bimodal.interval(0.8)
    lo90, hi90 = bimodal.interval(0.9)
    lo95, hi95 = bimodal.interval(0.95)
    assert (lo95 < lo90).all() and (lo90 < lo80).all() and (lo80 < hi80).all()
    assert (hi80 < hi90).all() and (hi90 < hi95).all()
    np.testing.assert_allclose(bimodal.cdf(hi90) - bimodal.cdf(lo90), 0.9, atol=1e-9)
    alphas = [0.05, 0.25, 0.5, 0.75, 0.95]
    qs = bimodal.quantiles(alphas)
    assert qs.shape == (3, 5)
    assert (np.diff(qs, axis=-1) > 0).all()
    np.testing.assert_allclose(qs[:, 0], lo90)
    np.testing.assert_allclose(qs[:, 2], bimodal.ppf(0.5))


def test_sample_is_seeded_and_follows_the_mixture(bimodal):
    draws = bimodal.sample(200_000, random_state=0)
    assert draws.shape == (200_000, 3)
    np.testing.assert_array_equal(draws[:5], bimodal.sample(200_000, random_state=0)[:5])
    assert not np.array_equal(draws[:5], bimodal.sample(200_000, random_state=1)[:5])
    rng = np.random.default_rng(3)
    assert bimodal.sample(2, random_state=rng).shape == (2, 3)
    np.testing.assert_allclose(draws.mean(axis=0), bimodal.mean, atol=0.02)
    np.testing.assert_allclose(draws.var(axis=0), bimodal.var, rtol=0.02)
    lo, hi = bimodal.interval(0.9)
    np.testing.assert_allclose(((draws >= lo) & (draws <= hi)).mean(axis=0), 0.9, atol=0.005)
    # a zero-weight component is never drawn
    lone = GaussianMixture([[0.0, 100.0]], [[1.0, 1.0]], [1.0, 0.0]).sample(10_000, random_state=0)
    assert lone.max() < 10


def test_crps_matches_the_metric(bimodal):
    y = np.array([-1.0, 0.5, 8.0])
    np.testing.assert_allclose(
        bimodal.crps(y),
        crps_mixture(y, bimodal.means, bimodal.variances, bimodal.weights, average=False))
    # CRPS = E|X - y| - E|X - X'| / 2, checked by sampling
    x = bimodal.sample(300_000, random_state=1)
    x2 = bimodal.sample(300_000, random_state=2)
    monte_carlo = np.abs(x - y).mean(axis=0) - 0.5 * np.abs(x - x2).mean(axis=0)
    np.testing.assert_allclose(bimodal.crps(y), monte_carlo, atol=0.01)


def test_combine_builds_the_mixture_of_mixtures(bimodal):
    single = GaussianMixture.gaussian(np.zeros(3), np.full(3, 2.0), noise_variance=np.ones(3))
    both = GaussianMixture.combine([bimodal, single], weights=[0.75, 0.25])
    assert both.n_components == 3
    np.testing.assert_allclose(both.weights[0], [0.225, 0.525, 0.25])
    np.testing.assert_allclose(both.mean, 0.75 * bimodal.mean)
    y = np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(both.cdf(y), 0.75 * bimodal.cdf(y) + 0.25 * single.cdf(y))
    np.testing.assert_allclose(both.variance_decomposition()["noise"],
                               0.75 * bimodal.variance_decomposition()["noise"] + 0.25)
    uniform = GaussianMixture.combine([single, single])
    np.testing.assert_allclose(uniform.weights, 0.5)
    np.testing.assert_allclose(uniform.var, single.var)


def test_arrays_are_copied_and_read_only():
    means = np.array([[0.0, 1.0]])
    dist = GaussianMixture(means, np.ones((1, 2)))
    means[0, 0] = 50.0
    assert dist.means[0, 0] == 0.0
    with pytest.raises(ValueError):
        dist.means[0, 0] = 1.0
    np.testing.assert_allclose(dist.weights, [[0.5, 0.5]])
    assert "n_components=2" in repr(dist)


def test_bad_input_is_rejected(bimodal):
    with pytest.raises(ValueError, match="variances has shape"):
        GaussianMixture(np.zeros((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="variances must be > 0"):
        GaussianMixture(np.zeros((3, 2)), -np.ones((3, 2)))
    with pytest.raises(ValueError, match="component axis"):
        GaussianMixture(0.0, 1.0)
    with pytest.raises(ValueError, match="noise_variances must lie in"):
        GaussianMixture(np.zeros((1, 2)), np.ones((1, 2)), noise_variances=np.full((1, 2), 2.0))
    with pytest.raises(ValueError, match="noise_variances has shape"):
        GaussianMixture(np.zeros((1, 2)), np.ones((1, 2)), noise_variances=np.zeros(3))
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(np.zeros((1, 2)), np.ones((1, 2)), [0.2, 0.2])
    with pytest.raises(ValueError, match="means holds 1 NaN"):
        GaussianMixture([[np.nan, 0.0]], [[1.0, 1.0]])
    with pytest.raises(ValueError, match=r"q must lie in \[0, 1\]"):
        bimodal.ppf(1.5)
    with pytest.raises(ValueError, match="does not broadcast"):
        bimodal.cdf(np.zeros(4))
    with pytest.raises(ValueError, match=r"coverage must lie in \(0, 1\)"):
        bimodal.interval(1.0)
    with pytest.raises(ValueError, match=r"alphas must lie in \(0, 1\)"):
        bimodal.quantiles([0.0, 0.5])
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        bimodal.sample(0)
    with pytest.raises(TypeError, match="n_samples must be an int"):
        bimodal.sample(2.5)
    with pytest.raises(ValueError, match="one batch shape"):
        GaussianMixture.combine([bimodal, GaussianMixture.gaussian([0.0], [1.0])])
    with pytest.raises(TypeError, match="non-empty sequence of GaussianMixture"):
        GaussianMixture.combine([])
    with pytest.raises(ValueError, match="weights must be >= 0 and sum to 1"):
        GaussianMixture.combine([bimodal, bimodal], weights=[0.9, 0.9])
