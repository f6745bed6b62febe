"""Bad inputs to the forecasters: each gets a clear error or a documented handling.

Property-based (hypothesis) over every public forecaster (MoLA, Direct, DLinear, seasonal
naive, ETS): random shapes, tiny series, constant columns, NaN and inf, wrong dtypes (strings,
bool, complex, datetimes), duplicated / unsorted / missing timestamps, index types that cannot
be extended into the future, wrong ndim, and reordered / renamed / missing / extra columns at
predict (``y_context=``). Every error must be a ValueError or TypeError raised by mola_ts itself
(never from inside torch, numpy, pandas or statsmodels) whose message names the problem, and the
user's data must be unchanged afterwards, on error paths too. Determinism of the neural
forecasters (same seed, same bits; another seed, other numbers; no global RNG leakage) is here
too. The rows of docs/reliability.md point at these tests.
"""

from __future__ import annotations

import copy
import random
import traceback

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SMALL_BACKBONE

from mola_ts.data import to_long
from mola_ts.forecast import (
    ClassicalForecaster,
    DirectForecaster,
    DLinearForecaster,
    MoLAForecaster,
    SeasonalNaiveForecaster,
)

SMALL = SMALL_BACKBONE
HORIZON = 4
KINDS = ("mola", "direct", "dlinear", "snaive", "ets")
NEURAL = ("mola", "direct", "dlinear")
COLUMNS = ["a", "b", "c"]
ERRORS = settings(max_examples=4, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])
FITS = settings(max_examples=6, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _new(kind: str, random_state: int = 0):
    if kind == "mola":
        return MoLAForecaster(16, HORIZON, segment_length=2, backbone_params=SMALL, n_experts=2,
                              rank=2, epochs=1, foundation_epochs=1, batch_size=32,
                              validation_fraction=0, random_state=random_state)
    if kind == "direct":
        return DirectForecaster(16, HORIZON, backbone_params=SMALL, epochs=1, batch_size=32,
                                validation_fraction=0, random_state=random_state)
    if kind == "dlinear":
        return DLinearForecaster(16, HORIZON, kernel_size=5, epochs=1, batch_size=32,
                                 validation_fraction=0, random_state=random_state)
    if kind == "snaive":
        return SeasonalNaiveForecaster(HORIZON, season_length=3)
    return ClassicalForecaster(HORIZON, lookback=12, season_length=1)


def _frame(n: int, columns=COLUMNS, seed: int = 0, freq: str = "h") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    values = np.sin(t / 3.0 + np.arange(len(columns))) + 0.1 * rng.normal(size=(n, len(columns)))
    return pd.DataFrame(values, columns=list(columns),
                        index=pd.date_range("2024-01-01", periods=n, freq=freq))


def _snapshot(obj):
    return copy.deepcopy(obj)


def _assert_unchanged(obj, before) -> None:
    """The user's object equals its deep copy taken before the call (values, dtypes, index)."""
    assert type(obj) is type(before)
    if isinstance(obj, pd.DataFrame):
        pd.testing.assert_frame_equal(obj, before, check_exact=True)
        assert obj.attrs == before.attrs
    elif isinstance(obj, pd.Series):
        pd.testing.assert_series_equal(obj, before, check_exact=True)
    elif isinstance(obj, np.ndarray):
        assert obj.dtype == before.dtype and obj.shape == before.shape
        np.testing.assert_array_equal(obj, before)
    elif isinstance(obj, torch.Tensor):
        assert torch.equal(obj, before)
    else:
        assert obj == before


_OURS = ("/mola_ts/", "/sklearn/utils/validation.py")


def _clear_error(call, error, fragments) -> BaseException:
    """``call()`` raises ``error`` from mola_ts's own checks with every fragment in its message."""
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    exc = info.value
    assert isinstance(exc, error), f"expected {error.__name__}, got {type(exc).__name__}: {exc}"
    where = traceback.extract_tb(info.tb)[-1].filename
    assert any(part in where for part in _OURS), f"raised inside {where}: {exc}"
    message = str(exc)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return exc


# -- corruptions: (bad input, exception type, fragments its message must contain) -----------

def _corrupt(kind: str, clean: pd.DataFrame, draw, name: str, min_rows: int):
    n, c = clean.shape
    i = draw(st.integers(1, n - 2))
    j = draw(st.integers(0, c - 1))
    col = clean.columns[j]
    bad = clean.copy()
    if kind == "nan":
        bad.iloc[i, j] = np.nan
        return bad, ValueError, [f"{name} holds 1 NaN", repr(col), str(clean.index[i])]
    if kind == "inf":
        bad.iloc[i, j] = draw(st.sampled_from([np.inf, -np.inf]))
        return bad, ValueError, ["1 infinite", repr(col), str(clean.index[i])]
    if kind == "strings":
        bad[col] = bad[col].map(lambda v: f"{v:.3f}")
        return bad, TypeError, ["numeric", repr(col)]
    if kind == "bool":
        bad[col] = bad[col] > 0
        return bad, TypeError, ["numeric", repr(col), "bool"]
    if kind == "complex":
        bad[col] = bad[col] + 1j
        return bad, TypeError, ["complex", repr(col)]
    if kind == "datetime":
        bad[col] = pd.date_range("2000-01-01", periods=n, freq="D")
        return bad, TypeError, ["numeric", repr(col)]
    if kind == "duplicated_timestamp":
        index = bad.index.tolist()
        index[i] = index[i - 1]
        bad.index = pd.DatetimeIndex(index)
        return bad, ValueError, ["duplicated timestamps", str(clean.index[i - 1])]
    if kind == "unsorted":
        index = bad.index.tolist()
        index[i], index[i + 1] = index[i + 1], index[i]
        bad.index = pd.DatetimeIndex(index)
        return bad, ValueError, ["not sorted", str(clean.index[i])]
    if kind == "nat":
        index = bad.index.tolist()
        index[i] = pd.NaT
        bad.index = pd.DatetimeIndex(index)
        return bad, ValueError, ["NaT", f"rows [{i}]"]
    if kind == "string_index":
        bad.index = [f"t{k}" for k in range(n)]
        return bad, TypeError, ["DatetimeIndex or integer", "reset_index"]
    if kind == "float_index":
        bad.index = np.arange(n) * 0.5
        return bad, TypeError, ["DatetimeIndex or integer", "float64"]
    if kind == "unsorted_int_index":
        index = list(range(n))
        index[i], index[i + 1] = index[i + 1], index[i]
        bad.index = index
        return bad, ValueError, ["increase strictly", f"position {i + 1}"]
    if kind == "duplicated_columns":
        bad.columns = [clean.columns[0]] * c if c > 1 else [col]
        if c == 1:  # one column cannot clash: add a copy of it
            bad = pd.concat([bad, bad], axis=1)
        return bad, ValueError, ["duplicated column names", repr(clean.columns[0])]
    if kind == "too_short":
        short = clean.iloc[: min_rows - 1]
        return short, ValueError, [f"{name} has {min_rows - 1} rows", f"at least {min_rows}"]
    if kind == "3d":
        cube = clean.to_numpy()[None]
        return cube, ValueError, ["2-D", str(cube.shape)]
    if kind == "no_columns":
        return clean.iloc[:, :0], ValueError, ["no columns"]
    if kind == "ragged":
        rows = clean.to_numpy().tolist()
        rows[i] = rows[i][:-1] + [] if c > 1 else []
        return rows, ValueError, ["differ in length"]
    if kind == "not_an_array":
        value = draw(st.sampled_from(["text", 3.5, {"a": [1.0, 2.0]}, None]))
        if value is None:
            value = torch.zeros(n, c)
        return value, TypeError, ["DataFrame", "numpy array"]
    if kind == "object_array":
        arr = clean.to_numpy().astype(str).astype(object)
        return arr, TypeError, ["real numbers", "object"]
    if kind == "timedelta_array":
        arr = (clean.to_numpy() * 1e6).astype("timedelta64[us]")
        return arr, TypeError, ["real numbers", "timedelta64"]
    if kind == "long_duplicate":
        long = to_long(clean)
        return pd.concat([long, long.iloc[[i]]]), ValueError, ["1 duplicated (unique_id, ds)"]
    if kind == "long_missing_ds":
        long = to_long(clean)
        long.loc[long.index[i], "ds"] = pd.NaT
        return long, ValueError, ["missing values in 'ds'", f"row {i}"]
    raise AssertionError(kind)


CORRUPTIONS = ("nan", "inf", "strings", "bool", "complex", "datetime", "duplicated_timestamp",
               "unsorted", "nat", "string_index", "float_index", "unsorted_int_index",
               "duplicated_columns", "too_short", "3d", "no_columns", "ragged", "not_an_array",
               "object_array", "timedelta_array", "long_duplicate", "long_missing_ds")


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("kind", KINDS)
@ERRORS
@given(data=st.data())
def test_fit_rejects_bad_series_clearly_and_leaves_them_unchanged(kind, corruption, data):
    model = _new(kind)
    need = model._min_fit_rows()
    n = data.draw(st.integers(max(need, 4), need + 12), label="rows")
    c = data.draw(st.integers(1, 3), label="columns")
    clean = _frame(n, COLUMNS[:c])
    bad, error, fragments = _corrupt(corruption, clean, data.draw, "y", need)
    before = _snapshot(bad)
    _clear_error(lambda: model.fit(bad), error, fragments)
    _assert_unchanged(bad, before)


@pytest.fixture(scope="module")
def fitted():
    """One fitted model of each kind on a 3-column hourly frame, and that frame."""
    y = _frame(60)
    return y, {kind: _new(kind).fit(y) for kind in KINDS}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("kind", KINDS)
@ERRORS
@given(data=st.data())
def test_predict_rejects_bad_contexts_clearly_and_leaves_them_unchanged(fitted, kind,
                                                                         corruption, data):
    y, models = fitted
    model = models[kind]
    ctx = model._context_length()
    n = data.draw(st.integers(max(ctx, 4), ctx + 12), label="rows")
    clean = _frame(n, seed=1)
    bad, error, fragments = _corrupt(corruption, clean, data.draw, "y_context", ctx)
    before = _snapshot(bad)
    _clear_error(lambda: model.predict(y_context=bad), error, fragments)
    _assert_unchanged(bad, before)


@pytest.mark.parametrize("kind", KINDS)
@settings(ERRORS, max_examples=15)
@given(data=st.data())
def test_context_columns_are_matched_by_name_or_named_in_the_error(fitted, kind, data):
    """Reordered columns are reordered back (documented); renamed, missing or extra columns
    raise a ValueError naming them."""
    y, models = fitted
    model = models[kind]
    context = _frame(model._context_length() + 3, seed=2)
    expected = model.predict(y_context=context)
    change = data.draw(st.sampled_from(["reorder", "rename", "drop", "extra"]), label="change")
    col = data.draw(st.sampled_from(COLUMNS), label="column")
    if change == "reorder":
        order = data.draw(st.permutations(COLUMNS), label="order")
        shuffled = context[order]
        before = _snapshot(shuffled)
        pd.testing.assert_frame_equal(model.predict(y_context=shuffled), expected,
                                      check_exact=True)
        _assert_unchanged(shuffled, before)
        return
    if change == "rename":
        bad = context.rename(columns={col: col.upper()})
        fragments = ["columns differ", f"missing ['{col}']", f"unknown ['{col.upper()}']"]
    elif change == "drop":
        bad = context.drop(columns=col)
        fragments = ["2 columns but the estimator was fitted on 3", f"missing ['{col}']"]
    else:
        bad = context.assign(extra=1.0)
        fragments = ["4 columns but the estimator was fitted on 3", "unknown ['extra']"]
    before = _snapshot(bad)
    _clear_error(lambda: model.predict(y_context=bad), ValueError, fragments)
    _assert_unchanged(bad, before)


def test_array_fitted_model_matches_a_frame_context_by_position():
    y = _frame(40)
    model = _new("snaive").fit(y.to_numpy())
    by_position = model.predict(y_context=y.to_numpy())
    frame_out = model.predict(y_context=y.rename(columns=str.upper))
    np.testing.assert_array_equal(frame_out.to_numpy(), by_position.to_numpy())


@pytest.mark.parametrize("layout", ["hourly", "daily", "range", "array", "series", "long",
                                    "int_frame", "int_array"])
@pytest.mark.parametrize("kind", KINDS)
@settings(FITS, max_examples=3)
@given(extra=st.integers(0, 12), n_cols=st.integers(1, 3),
       constant=st.lists(st.booleans(), min_size=3, max_size=3),
       scale=st.sampled_from([1e-6, 1.0, 1e4]))
def test_valid_series_of_any_shape_fit_and_forecast_finitely(kind, extra, n_cols, constant,
                                                             layout, scale):
    """Tiny series (exactly the rows needed), constant columns, every input layout: fit and
    predict work, the forecast is finite, has the horizon's rows and the next timestamps, and
    the input is unchanged."""
    model = _new(kind)
    n = model._min_fit_rows() + extra
    if layout == "series":
        n_cols = 1
    frame = _frame(n, COLUMNS[:n_cols], freq="D" if layout == "daily" else "h") * scale
    for j in range(n_cols):
        if constant[j]:
            frame.iloc[:, j] = 3.0 * scale
    ints = (frame * 10).round().astype(np.int64)  # documented: integers are read as floats
    y = {"hourly": frame, "daily": frame, "range": frame.reset_index(drop=True),
         "array": frame.to_numpy(), "series": frame.iloc[:, 0], "long": to_long(frame),
         "int_frame": ints, "int_array": ints.to_numpy()}[layout]
    before = _snapshot(y)
    out = model.fit(y).predict()
    _assert_unchanged(y, before)
    if layout == "long":
        out = out.pivot(index="ds", columns="unique_id", values="y")
    assert out.shape == (HORIZON, n_cols)
    assert np.isfinite(out.to_numpy(dtype=np.float64)).all()
    if layout in ("hourly", "daily", "series", "long", "int_frame"):
        step = frame.index[1] - frame.index[0]
        assert out.index[0] == frame.index[-1] + step
    else:
        assert list(out.index) == list(range(n, n + HORIZON))


@pytest.mark.parametrize("kind", ["direct", "dlinear"])
@FITS
@given(exponent=st.integers(-30, 300), scale=st.booleans())
def test_extreme_magnitudes_forecast_finitely_or_raise_clearly(kind, exponent, scale):
    """Values of any magnitude: finite forecasts, or a ValueError saying they are too large
    (never NaN forecasts, never a NaN loss deep in training)."""
    model = _new(kind).set_params(scale=scale)
    y = _frame(model._min_fit_rows() + 4) * 10.0 ** exponent
    try:
        out = model.fit(y).predict()
    except ValueError as exc:
        assert "float32" in str(exc) or "overflow" in str(exc), str(exc)
        assert np.abs(y.to_numpy()).max() > (1e150 if scale else 1e18)
    else:
        assert np.isfinite(out.to_numpy()).all()


def test_validation_series_is_checked_like_y():
    model = _new("direct")
    y = _frame(40)
    bad = y.copy()
    bad.iloc[5, 1] = np.nan
    before = _snapshot(bad)
    _clear_error(lambda: model.fit(y, y_val=bad), ValueError, ["y_val holds 1 NaN", "'b'"])
    _assert_unchanged(bad, before)
    _clear_error(lambda: model.fit(y, y_val=y[["a", "b"]]), ValueError,
                 ["y_val has 2 columns", "missing ['c']"])


# -- determinism ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", NEURAL)
def test_same_seed_same_bits_other_seed_other_forecast_no_global_rng_leak(kind):
    """Two fits with one random_state give bit-identical forecasts on CPU, also with another
    model fitted in between and the global generators disturbed; another random_state gives
    other forecasts; a fit leaves the caller's global random streams as they were."""
    y = _frame(48)
    context = _frame(20, seed=5)
    first = _new(kind, random_state=3).fit(y)
    a, a_ctx = first.predict(), first.predict(y_context=context)

    _new("direct", random_state=11).fit(_frame(40, seed=9))  # another model in between
    torch.manual_seed(1234)
    np.random.seed(99)  # noqa: NPY002 - disturb the legacy global generator on purpose
    random.seed(7)
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    torch_state = torch.random.get_rng_state()

    second = _new(kind, random_state=3).fit(y)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    b, b_ctx = second.predict(), second.predict(y_context=context)
    assert np.array_equal(a.to_numpy(), b.to_numpy())
    assert np.array_equal(a_ctx.to_numpy(), b_ctx.to_numpy())

    other = _new(kind, random_state=4).fit(y).predict()
    assert not np.array_equal(a.to_numpy(), other.to_numpy())
