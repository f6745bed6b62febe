import numpy as np
import pytest
from scipy import stats

from mola_ts.metrics import (
    crps_mixture,
    interval_coverage,
    interval_score,
    interval_width,
    nll_mixture,
    pinball_loss,
    pit_calibration_error,
    probabilistic_scores,
)
from mola_ts.uncertainty import GaussianMixture


def _random_mixture(rng, shape, k):
    means = rng.normal(scale=2.0, size=shape + (k,))
    variances = rng.uniform(0.1, 3.0, size=shape + (k,))
    weights = rng.dirichlet(np.ones(k), size=shape)
    return means, variances, weights


def test_crps_of_one_gaussian_is_the_textbook_formula():
    y, mu, sd = np.array([0.3, -1.0, 2.5]), np.array([0.0, 0.5, 2.0]), np.array([1.0, 2.0, 0.3])
    z = (y - mu) / sd
    expected = sd * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    got = crps_mixture(y, mu, sd**2, average=False)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert crps_mixture(y, mu, sd**2) == pytest.approx(expected.mean())


def test_closed_form_crps_agrees_with_monte_carlo():
    rng = np.random.default_rng(0)
    means, variances, weights = np.array([-1.0, 0.5, 3.0]), np.array([0.5, 1.0, 0.2]), np.array(
        [0.2, 0.5, 0.3])
    n = 400_000
    comp = rng.choice(3, size=(2, n), p=weights)
    x = means[comp] + np.sqrt(variances[comp]) * rng.standard_normal((2, n))
    for y in (-2.0, 0.7, 3.1):
        monte_carlo = np.mean(np.abs(x[0] - y)) - 0.5 * np.mean(np.abs(x[0] - x[1]))
        closed = crps_mixture([y], means[None], variances[None], weights)
        assert closed == pytest.approx(monte_carlo, abs=6e-3)


def test_crps_and_nll_agree_with_scoringrules():
    import scoringrules as sr  # in the dev extra: this test must run in CI

    rng = np.random.default_rng(1)
    means, variances, weights = _random_mixture(rng, (50,), 5)
    y = rng.normal(scale=2.0, size=50)
    sd = np.sqrt(variances)
    np.testing.assert_allclose(crps_mixture(y, means, variances, weights, average=False),
                               sr.crps_mixnorm(y, means, sd, weights, backend="numpy"),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(nll_mixture(y, means, variances, weights, average=False),
                               sr.logs_mixnorm(y, means, sd, weights, backend="numpy"),
                               rtol=1e-10, atol=1e-12)


def test_nll_is_the_negative_log_mixture_density():
    y = np.array([[0.2, -3.0], [1.0, 40.0]])
    means = np.stack([np.zeros_like(y), np.ones_like(y)], axis=-1)
    variances = np.stack([np.ones_like(y), 4 * np.ones_like(y)], axis=-1)
    w = np.array([0.3, 0.7])
    density = w[0] * stats.norm.pdf(y, 0, 1) + w[1] * stats.norm.pdf(y, 1, 2)
    np.testing.assert_allclose(nll_mixture(y, means, variances, w, average=False),
                               -np.log(density), rtol=1e-12)
    # far in the tail the density underflows; logsumexp keeps it finite and exact
    assert np.isfinite(nll_mixture([60.0], [[0.0, 1.0]], [[1.0, 1.0]]))
    # a zero-weight component is ignored
    assert nll_mixture([0.0], [[0.0, 5.0]], [[1.0, 1.0]], [1.0, 0.0]) == pytest.approx(
        -stats.norm.logpdf(0.0))


def test_interval_scores_by_hand():
    y = np.array([0.0, 1.0, 5.0, -3.0])
    lo = np.array([-1.0, 1.5, 0.0, -2.0])
    hi = np.array([1.0, 2.0, 4.0, 2.0])
    assert interval_coverage(y, lo, hi) == 0.25
    assert interval_width(lo, hi) == pytest.approx((2 + 0.5 + 4 + 4) / 4)
    a = 0.2
    by_hand = [2, 0.5 + 2 / a * 0.5, 4 + 2 / a * 1.0, 4 + 2 / a * 1.0]
    assert interval_score(y, lo, hi, coverage=0.8) == pytest.approx(np.mean(by_hand))


def test_pinball_loss_by_hand_and_median_is_half_mae():
    y = np.array([1.0, 2.0, 3.0])
    q = np.array([[0.0, 2.0], [2.0, 2.0], [4.0, 1.0]])
    alphas = [0.1, 0.9]
    by_hand = np.mean([0.1 * 1, 0.1 * 1, 0, 0, 0.9 * 1, 0.9 * 2])
    assert pinball_loss(y, q, alphas) == pytest.approx(by_hand)
    pred = np.array([0.0, 2.5, 7.0])
    assert pinball_loss(y, pred, 0.5) == pytest.approx(0.5 * np.mean(np.abs(y - pred)))


def test_pit_calibration_error():
    uniform = (np.arange(10_000) + 0.5) / 10_000
    assert pit_calibration_error(uniform) < 1e-3
    # every PIT value at 0.5 (too wide a forecast): the gap at level t is t below 0.5, 1 - t above
    t = np.linspace(0.01, 0.99, 99)
    expected = np.mean(np.where(t < 0.5, t, 1 - t))
    assert pit_calibration_error(np.full(100, 0.5)) == pytest.approx(expected)
    assert pit_calibration_error(np.full(10, 0.5), levels=[0.25, 0.75]) == pytest.approx(0.25)


def test_probabilistic_scores_of_a_calibrated_gaussian():
    rng = np.random.default_rng(2)
    mean = rng.normal(size=(400, 6))
    y = mean + 0.5 * rng.standard_normal(mean.shape)
    dist = GaussianMixture.gaussian(mean, np.full(mean.shape, 0.25))
    scores = probabilistic_scores(y, dist)
    assert set(scores) == {"nll", "crps", "pit_error"} | {
        f"{k}{c}" for k in ("coverage", "width", "winkler") for c in (80, 90, 95)}
    for c in (80, 90, 95):
        assert scores[f"coverage{c}"] == pytest.approx(c / 100, abs=0.02)
        lo, hi = dist.interval(c / 100)
        assert scores[f"width{c}"] == pytest.approx(interval_width(lo, hi))
    assert scores["width90"] == pytest.approx(2 * stats.norm.ppf(0.95) * 0.5, rel=1e-8)
    assert scores["crps"] == pytest.approx(crps_mixture(y, mean, np.full(mean.shape, 0.25)))
    assert scores["pit_error"] < 0.02
    # a twice too narrow forecast covers less and has a worse NLL, CRPS and calibration
    narrow = probabilistic_scores(y, GaussianMixture.gaussian(mean, np.full(mean.shape, 0.0625)))
    assert narrow["coverage90"] < 0.7
    for key in ("nll", "crps", "pit_error", "winkler90"):
        assert narrow[key] > scores[key]


def test_inputs_are_validated_and_left_untouched():
    y = np.array([0.0, 1.0])
    means, variances = np.array([[0.0, 1.0], [0.0, 1.0]]), np.ones((2, 2))
    copies = (y.copy(), means.copy(), variances.copy())
    crps_mixture(y, means, variances)
    for before, after in zip(copies, (y, means, variances), strict=True):
        np.testing.assert_array_equal(before, after)
    with pytest.raises(ValueError, match="means has shape"):
        crps_mixture(y, np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="variances has shape"):
        nll_mixture(y, means, np.ones((2, 3)))
    with pytest.raises(ValueError, match="variances must be > 0; 1 values"):
        nll_mixture(y, means, np.array([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="sum to 1"):
        crps_mixture(y, means, variances, [0.5, 0.6])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        crps_mixture(y, means, variances, [1.5, -0.5])
    with pytest.raises(ValueError, match="does not broadcast"):
        crps_mixture(y, means, variances, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="y_true holds 1 NaN"):
        nll_mixture([np.nan, 0.0], means, variances)
    with pytest.raises(TypeError, match="y_true must hold real numbers"):
        nll_mixture(np.array(["a", "b"]), means, variances)
    with pytest.raises(ValueError, match="empty"):
        crps_mixture([], np.ones((0, 1)), np.ones((0, 1)))
    with pytest.raises(ValueError, match="lower must be <= upper; 1 intervals"):
        interval_coverage(y, [0.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="upper has shape"):
        interval_width([0.0, 0.0], [1.0])
    with pytest.raises(ValueError, match=r"y_true has shape \(2,\)"):
        interval_coverage(y, [0.0], [1.0])
    with pytest.raises(ValueError, match=r"coverage must lie in \(0, 1\)"):
        interval_score(y, y, y + 1, coverage=90)
    with pytest.raises(TypeError, match="coverage must be a float"):
        interval_score(y, y, y + 1, coverage="0.9")
    with pytest.raises(ValueError, match=r"alphas must lie in \(0, 1\)"):
        pinball_loss(y, np.ones((2, 2)), [0.5, 1.0])
    with pytest.raises(ValueError, match="quantiles has shape"):
        pinball_loss(y, np.ones((2, 3)), [0.1, 0.9])
    with pytest.raises(ValueError, match=r"pit values must lie in \[0, 1\]"):
        pit_calibration_error([0.5, 1.5])
    with pytest.raises(ValueError, match="coverages must lie"):
        probabilistic_scores(y, GaussianMixture.gaussian([0.0, 0.0], [1.0, 1.0]),
                             coverages=(1.5,))
