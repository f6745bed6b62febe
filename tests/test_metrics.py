import math

import numpy as np
import pytest

from mola_ts.metrics import (
    detection_delay,
    false_alarm_rate,
    fault_detection_rate,
    mae,
    mse,
)


def test_mse_mae_hand_computed():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    p = np.array([[1.0, 0.0], [6.0, 4.0]])
    assert mse(y, p) == pytest.approx((0 + 4 + 9 + 0) / 4)
    assert mae(y, p) == pytest.approx((0 + 2 + 3 + 0) / 4)
    with pytest.raises(ValueError, match="shape"):
        mse(y, p[:1])
    with pytest.raises(ValueError, match="NaN"):
        mae(y, np.full_like(y, np.nan))


def test_fdr_far_on_a_hand_made_run():
    alarms = np.zeros(10, dtype=bool)
    alarms[[1, 6, 7, 9]] = True  # onset 5: samples 6..10 (indices 5..9) are faulty
    assert fault_detection_rate(alarms, onset=5) == pytest.approx(3 / 5)
    assert false_alarm_rate(alarms, stop=5) == pytest.approx(1 / 5)
    assert false_alarm_rate(alarms, start=5) == pytest.approx(3 / 5)


def test_detection_delay_needs_a_run_of_three():
    alarms = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1])  # onset 2: faulty from index 2
    # index 3 alarms alone; the first run of three starts at index 5 -> sample 6 -> delay 4
    assert detection_delay(alarms, onset=2, run=3) == 4
    assert detection_delay(alarms, onset=2, run=1) == 2
    assert math.isnan(detection_delay(np.zeros(9), onset=2))
    immediate = np.ones(9)
    assert detection_delay(immediate, onset=2) == 1


def test_detection_metrics_reject_bad_alarms():
    with pytest.raises(ValueError, match="boolean or 0/1"):
        fault_detection_rate(np.array([0.5, 1.0]), onset=0)
    with pytest.raises(ValueError, match="1-D"):
        false_alarm_rate(np.zeros((2, 2)))
