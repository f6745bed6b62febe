import numpy as np
import pandas as pd
import pytest

from mola_ts.data import (
    WindowDataset,
    load_dataset,
    ltsf_borders,
    ltsf_split,
    n_windows,
    sliding_windows,
)


def test_etth1_split_sizes_follow_the_protocol():
    split = ltsf_split("ETTh1")
    assert len(split.train) == 8640
    assert len(split.val) == 2880 + 96
    assert len(split.test) == 2880 + 96
    assert split.borders == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}


def test_etth1_has_2785_test_windows_at_horizon_96():
    split = ltsf_split("ETTh1")
    assert n_windows(len(split.test), 96, 96) == 2785
    x, y = sliding_windows(split.test.to_numpy(), 96, 96)
    assert x.shape == (2785, 96, 7) and y.shape == (2785, 96, 7)
    assert len(WindowDataset(split.test.to_numpy(), 96, 96)) == 2785


def test_scaler_sees_train_rows_only():
    raw = load_dataset("ETTh1")
    split = ltsf_split(raw, "ett_hour", 96)
    np.testing.assert_allclose(split.scaler.mean_, raw.iloc[:8640].mean().to_numpy())
    np.testing.assert_allclose(split.train.mean().to_numpy(), 0.0, atol=1e-9)
    # Changing rows outside the train split leaves the scaler untouched.
    changed = raw.copy()
    changed.iloc[9000:] += 1000.0
    np.testing.assert_allclose(ltsf_split(changed, "ett_hour", 96).scaler.mean_,
                               split.scaler.mean_)
    # The scaled test rows are the raw rows through the train statistics.
    expected = (raw.iloc[11424:14400] - raw.iloc[:8640].mean()) / raw.iloc[:8640].std(ddof=0)
    np.testing.assert_allclose(split.test.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-9)


def test_ili_split_follows_the_70_10_20_rule():
    split = ltsf_split("ILI")
    n = 966
    n_train, n_test = int(0.7 * n), int(0.2 * n)
    n_val = n - n_train - n_test
    assert (n_train, n_val, n_test) == (676, 97, 193)
    assert split.lookback == 36
    assert len(split.train) == 676
    assert len(split.val) == 97 + 36
    assert len(split.test) == 193 + 36
    assert split.test.index[-1] == load_dataset("ILI").index[-1]


def test_ett_minute_borders_are_four_times_the_hourly_ones():
    borders = ltsf_borders(69680, "ett_minute", 96)
    assert borders == {"train": (0, 34560), "val": (34464, 46080), "test": (45984, 57600)}


def test_split_rejects_short_data_and_unknown_rule():
    with pytest.raises(ValueError, match="at least 14400 rows"):
        ltsf_borders(1000, "ett_hour", 96)
    with pytest.raises(ValueError, match="rule must be one of"):
        ltsf_borders(1000, "weekly", 96)
    with pytest.raises(ValueError, match="NaN"):
        frame = pd.DataFrame({"a": np.r_[np.arange(99.0), np.nan]})
        ltsf_split(frame, "ratio", 4)


def test_sliding_windows_match_direct_slicing():
    values = np.arange(40.0).reshape(20, 2)
    x, y = sliding_windows(values, 5, 3)
    assert x.shape == (13, 5, 2) and y.shape == (13, 3, 2)
    np.testing.assert_array_equal(x[4], values[4:9])
    np.testing.assert_array_equal(y[4], values[9:12])
    dataset = WindowDataset(values, 5, 3)
    bx, by = dataset.get_batch(np.array([4, 12]))
    np.testing.assert_array_equal(bx[0].numpy(), values[4:9])
    np.testing.assert_array_equal(by[1].numpy(), values[17:20])
    with pytest.raises(ValueError, match="too short"):
        sliding_windows(values, 15, 6)
