import numbers

import numpy as np
import pandas as pd
import pytest

from mola_ts.data import (
    check_columns_match,
    check_number,
    check_series,
    future_index,
    to_long,
    to_wide,
)


def _frame(n=10):
    idx = pd.date_range("2020-01-01", periods=n, freq="h")
    return pd.DataFrame({"a": np.arange(n, dtype=float), "b": np.ones(n)}, index=idx)


def test_check_series_copies_and_never_modifies():
    frame = _frame()
    before = frame.copy()
    out = check_series(frame)
    out.values[:] = -1
    pd.testing.assert_frame_equal(frame, before)
    assert out.columns == ["a", "b"]


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ("text", TypeError, "DataFrame"),
        (np.array([["a"]], dtype=object), TypeError, "real numbers"),
        (np.zeros((2, 2, 2)), ValueError, "2-D"),
        (np.array([[1.0, np.nan]]), ValueError, "1 NaN"),
        (np.array([[1.0, np.inf]]), ValueError, "infinite"),
    ],
)
def test_check_series_errors(bad, error, match):
    with pytest.raises(error, match=match):
        check_series(bad)


def test_check_series_index_and_length_errors():
    frame = _frame()
    with pytest.raises(ValueError, match="at least 20"):
        check_series(frame, min_rows=20)
    with pytest.raises(ValueError, match="duplicated timestamps"):
        check_series(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(ValueError, match="not sorted"):
        check_series(frame.iloc[::-1])
    with pytest.raises(TypeError, match="non-numeric"):
        check_series(frame.assign(c="x"))


def test_columns_reordered_by_name_or_rejected():
    fitted = ["a", "b"]
    swapped = check_columns_match(check_series(_frame()[["b", "a"]]), fitted)
    assert swapped.columns == fitted and swapped.values[3, 0] == 3.0
    with pytest.raises(ValueError, match="unknown"):
        check_columns_match(check_series(_frame().rename(columns={"a": "z"})), fitted)
    with pytest.raises(ValueError, match="3 columns"):
        check_columns_match(check_series(np.zeros((4, 3))), fitted)


def test_future_index_and_long_format_round_trip():
    frame = _frame()
    fut = future_index(frame.index, len(frame), 3)
    assert fut[0] == frame.index[-1] + pd.Timedelta(hours=1) and len(fut) == 3
    assert list(future_index(None, 10, 2)) == [10, 11]
    long = to_long(frame)
    assert list(long.columns) == ["unique_id", "ds", "y"] and len(long) == 20
    wide = to_wide(long)
    pd.testing.assert_frame_equal(wide, frame, check_freq=False, check_names=False)
    with pytest.raises(ValueError, match="do not share"):
        to_wide(long.iloc[1:])


def test_check_number_returns_python_numbers_and_accepts_numpy_scalars():
    assert check_number(np.int64(3), "rank", min_val=1) == 3
    assert type(check_number(np.int64(3), "rank", min_val=1)) is int
    assert check_number(np.float32(0.5), "lr", numbers.Real, min_val=0) == 0.5
    assert type(check_number(1, "lr", numbers.Real)) is float


@pytest.mark.parametrize("value, kind, bounds, error, match", [
    (True, numbers.Integral, {"min_val": 1}, TypeError, "epochs must be an integer, got bool"),
    (False, numbers.Real, {}, TypeError, "epochs must be a number, got bool"),
    (2.5, numbers.Integral, {"min_val": 1}, TypeError, "epochs must be an instance of int"),
    ("3", numbers.Integral, {}, TypeError, "epochs must be an instance of int, not str"),
    (0, numbers.Integral, {"min_val": 1}, ValueError, "epochs == 0, must be >= 1"),
    (float("nan"), numbers.Real, {"min_val": 0}, ValueError, "epochs must be a number, got NaN"),
    (1.0, numbers.Real, {"min_val": 0, "max_val": 1, "include_boundaries": "left"},
     ValueError, "epochs == 1.0, must be < 1"),
])
def test_check_number_names_the_parameter_the_expected_and_the_received(value, kind, bounds,
                                                                        error, match):
    with pytest.raises(error, match=match):
        check_number(value, "epochs", kind, **bounds)
