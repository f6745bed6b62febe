"""MOLAMonitor.predict_fault_probability: the calibrated probability of fault (uncertainty §4)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from test_monitor_mola import PARAMS, _process  # the same small process and monitor

from mola_ts.monitor import MOLAMonitor
from mola_ts.uncertainty import FaultProbability


@pytest.fixture(scope="module")
def fitted():
    return MOLAMonitor(**PARAMS).fit(_process(700, 0))


def _faulty():
    test = _process(300, 1)
    test.iloc[150:, 2] += 4.0
    test.iloc[150:, 5] -= 4.0
    return test


def test_columns_index_and_unscored_rows(fitted):
    test = _faulty()
    out = fitted.predict_fault_probability(test)
    stats = fitted.statistics(test)
    assert list(out.columns) == ["PFI", "score", "p_value", "fault_probability",
                                 "fault_probability_lower", "fault_probability_upper"]
    pd.testing.assert_index_equal(out.index, stats.index)
    np.testing.assert_array_equal(out["PFI"].to_numpy(), stats["PFI"].to_numpy())
    warm = fitted._history()  # warm-up rows: p-value 1, probability 0 (they were NaN before)
    assert (out.p_value.iloc[:warm] == 1).all() and (out.fault_probability.iloc[:warm] == 0).all()
    scored = out.iloc[warm:]
    assert scored.notna().all().all()
    assert ((scored.fault_probability_lower <= scored.fault_probability + 1e-12)
            & (scored.fault_probability <= scored.fault_probability_upper + 1e-12)).all()
    assert ((scored.fault_probability >= 0) & (scored.fault_probability <= 1)).all()


def test_it_is_the_tail_model_of_the_held_out_normal_index(fitted):
    test = _faulty()
    out = fitted.predict_fault_probability(test, coverage=0.8, prior_fault=0.05)
    held = fitted.validation_statistics_["score"]  # the out-of-fold scores behind the limit
    reference = FaultProbability(prior_fault=0.05, coverage=0.8).fit(held[np.isfinite(held)])
    scored = out.iloc[fitted._history():]
    point, lower, upper = reference.fault_probability(scored.score.to_numpy())
    np.testing.assert_allclose(scored.fault_probability, point)
    np.testing.assert_allclose(scored.fault_probability_lower, lower)
    np.testing.assert_allclose(scored.fault_probability_upper, upper)
    np.testing.assert_allclose(scored.p_value,
                               reference.tail_probability(scored.score.to_numpy()))


def test_faulty_samples_get_high_and_normal_samples_low_probability(fitted):
    out = fitted.predict_fault_probability(_faulty())
    before = out.fault_probability.iloc[fitted.window - 1:150]
    after = out.fault_probability.iloc[170:]
    assert before.mean() < 0.2
    assert after.mean() > 0.8
    # monotone in the score: a higher score never gets a lower probability
    scored = out.iloc[fitted.window - 1:].sort_values("score")
    assert (np.diff(scored.fault_probability.to_numpy()) >= -1e-12).all()
    # the default prior is the monitor's alpha, and a larger prior raises every probability
    larger = fitted.predict_fault_probability(_faulty(), prior_fault=0.2)
    assert (larger.fault_probability.iloc[fitted.window - 1:]
            >= out.fault_probability.iloc[fitted.window - 1:] - 1e-12).all()


def test_save_load_and_recalibrate(fitted, tmp_path):
    test = _faulty()
    out = fitted.predict_fault_probability(test)
    loaded = MOLAMonitor.load(fitted.save(tmp_path / "m.pt"))
    pd.testing.assert_frame_equal(loaded.predict_fault_probability(test), out)
    # recalibrating with another alpha refits the limits and the calibration on top
    other = MOLAMonitor.load(tmp_path / "m.pt").set_params(alpha=0.05)
    other.recalibrate(_process(700, 0))
    changed = other.predict_fault_probability(test)
    assert not np.allclose(changed.fault_probability.iloc[fitted.window - 1:],
                           out.fault_probability.iloc[fitted.window - 1:])


def test_bad_settings_and_unfitted_raise():
    with pytest.raises(NotFittedError, match="MOLAMonitor instance is not fitted yet"):
        MOLAMonitor(**PARAMS).predict_fault_probability(_faulty())


def test_bad_coverage_names_it(fitted):
    with pytest.raises(ValueError, match="coverage"):
        fitted.predict_fault_probability(_faulty(), coverage=1.5)
