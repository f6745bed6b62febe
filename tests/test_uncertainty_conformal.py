"""Conformal correction of a predictive mixture's intervals (split and adaptive)."""

import numpy as np
import pytest

from mola_ts.uncertainty import GaussianMixture
from mola_ts.uncertainty.conformal import ConformalCalibrator, choose_method, conformity_scores


def _gaussian(n, steps=4, variables=3, scale=1.0):
    zeros = np.zeros((n, steps, variables))
    return GaussianMixture.gaussian(zeros, np.full(zeros.shape, scale ** 2))


def _coverage(cal, dist, y, c):
    lo, hi = cal.interval(dist, c)
    return float(((y >= lo) & (y <= hi)).mean())


@pytest.mark.parametrize("coverage", [0.5, 0.8, 0.9, 0.95])
def test_split_conformal_reaches_nominal_coverage_on_exchangeable_data(coverage):
    """The model says N(0, 1), the data are N(0, 2^2): raw intervals under-cover, the corrected
    ones cover the nominal share of 24k fresh points."""
    rng = np.random.default_rng(0)
    calib = 2.0 * rng.normal(size=(500, 4, 3))
    cal = ConformalCalibrator("split").fit(conformity_scores(_gaussian(500), calib))
    assert cal.pooling_ == "variables"
    y = 2.0 * rng.normal(size=(2000, 4, 3))
    dist = _gaussian(2000)
    lo, hi = dist.interval(coverage)
    assert ((y >= lo) & (y <= hi)).mean() < coverage - 0.1
    assert abs(_coverage(cal, dist, y, coverage) - coverage) <= 0.015


def test_few_windows_pool_the_steps_too():
    rng = np.random.default_rng(1)
    cal = ConformalCalibrator("split", min_windows=100).fit(
        conformity_scores(_gaussian(40), rng.normal(size=(40, 4, 3))))
    assert cal.pooling_ == "steps and variables"
    levels = cal.levels(0.9)
    assert np.all(levels == levels[0])


def test_the_split_quantile_matches_mapie():
    """For a constant-variance Gaussian the level score is a monotone map of the absolute
    residual, so the corrected half-width equals MAPIE's split-conformal one."""
    mapie = pytest.importorskip("mapie.regression")
    from sklearn.dummy import DummyRegressor

    rng = np.random.default_rng(2)
    y_cal = 1.5 * rng.normal(size=400)
    cal = ConformalCalibrator("split").fit(
        conformity_scores(_gaussian(400, 1, 1), y_cal[:, None, None]))
    lo, hi = cal.interval(_gaussian(1, 1, 1), 0.9)
    reg = DummyRegressor(strategy="constant", constant=0.0).fit(np.zeros((2, 1)), [0.0, 0.0])
    split = mapie.SplitConformalRegressor(reg, confidence_level=0.9, prefit=True)
    split.conformalize(np.zeros((400, 1)), y_cal)
    _, bounds = split.predict_interval(np.zeros((1, 1)))
    assert float(hi.ravel()[0]) == pytest.approx(float(bounds[0, 1, 0]), rel=1e-6)
    assert float(lo.ravel()[0]) == pytest.approx(float(bounds[0, 0, 0]), rel=1e-6)


def test_adaptive_conformal_follows_a_drift_that_split_misses():
    """The noise doubles after calibration; adaptive conformal, fed the realised scores one
    step at a time, gets the long-run coverage back near nominal."""
    rng = np.random.default_rng(3)
    calib = conformity_scores(_gaussian(300, 1, 2), rng.normal(size=(300, 1, 2)))
    split = ConformalCalibrator("split").fit(calib)
    adaptive = ConformalCalibrator("adaptive", gamma=0.02).fit(calib)
    dist = _gaussian(1, 1, 2)
    hits_split, hits_adaptive = [], []
    for _ in range(3000):
        y = 2.0 * rng.normal(size=(1, 1, 2))
        for cal, hits in ((split, hits_split), (adaptive, hits_adaptive)):
            lo, hi = cal.interval(dist, 0.9)
            hits.append(((y >= lo) & (y <= hi)).mean())
        adaptive.observe(conformity_scores(dist, y)[0])
    assert np.mean(hits_split) < 0.8
    assert abs(np.mean(hits_adaptive) - 0.9) < 0.02


def test_walk_fixes_split_levels_and_replays_the_updates_of_adaptive():
    rng = np.random.default_rng(4)
    scores = rng.uniform(size=(60, 3, 2))
    split = ConformalCalibrator("split").fit(scores[:30])
    walked = split.walk(scores[30:], (0.5, 0.9))
    assert walked[0.9].shape == (30, 3) and np.all(walked[0.9] == split.levels(0.9))
    adaptive = ConformalCalibrator("adaptive", gamma=0.05).fit(scores[:30])
    by_hand = ConformalCalibrator("adaptive", gamma=0.05).fit(scores[:30])
    walked = adaptive.walk(scores[30:], (0.9,))
    for i in range(30):  # window i is forecast, then its next row realises step h of i - h
        np.testing.assert_array_equal(walked[0.9][i], by_hand.levels(0.9))
        rows = np.full((3, 2), np.nan)
        for h in range(3):
            if i - h >= 0:
                rows[h] = scores[30 + i - h, h]
        by_hand.observe(rows)
    assert not np.allclose(walked[0.9][-1], walked[0.9][0])
    with pytest.raises(ValueError, match="shape"):
        split.walk(scores[:, :2])


def test_choose_method_picks_adaptive_on_a_drift_and_is_near_nominal_on_exchangeable_data():
    rng = np.random.default_rng(5)
    model = _gaussian(800, 2, 3)
    steady = conformity_scores(model, rng.normal(size=(800, 2, 3)))
    chosen, errors = choose_method(steady)
    assert set(errors) == {"split", "adaptive"} and errors["split"] < 0.02
    assert errors[chosen] == min(errors.values())
    # the noise grows through the held-out windows: split, calibrated on the calm first half,
    # under-covers the second; adaptive follows
    scale = np.linspace(1.0, 3.0, 800)[:, None, None]
    drift = conformity_scores(model, scale * rng.normal(size=(800, 2, 3)))
    chosen, errors = choose_method(drift)
    assert chosen == "adaptive" and errors["split"] > 2 * errors["adaptive"]
    with pytest.raises(ValueError, match="n_windows >= 4"):
        choose_method(steady[:3])


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="method"):
        ConformalCalibrator("cqr").fit(np.zeros((3, 1, 1)))
    with pytest.raises(ValueError, match="shape"):
        ConformalCalibrator().fit(np.zeros((3, 1)))
    cal = ConformalCalibrator().fit(np.full((3, 1, 1), 0.5))
    with pytest.raises(ValueError, match="coverage"):
        cal.levels(1.5)
