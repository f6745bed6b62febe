"""Bad inputs to the monitors (MOLA, PCA, DPCA): each gets a clear error or a documented handling.

Property-based (hypothesis): random shapes, NaN and inf, constant columns, too few rows, wrong
dtypes, wrong ndim, runs of different widths, reordered / renamed / missing / extra columns,
unfitted models and parameters changed after fit. Every error must be a ValueError or TypeError
raised by mola_ts itself (never from inside torch, numpy or pandas) whose message names the
problem, and the user's data must be unchanged afterwards, on error paths too. The streaming
monitor's own inputs are covered in test_monitor_stream.py.
"""

from __future__ import annotations

import copy
import traceback

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from mola_ts.monitor import DPCAMonitor, MOLAMonitor, PCAMonitor, ResidualMonitor

COLUMNS = [f"v{i}" for i in range(6)]
MOLA_PARAMS = dict(blocks={"b1": COLUMNS[:3], "b2": COLUMNS[3:]}, window=3, hidden_size=4,
                   code_size=2, epochs=2, patience=1, random_state=0)
KINDS = ("mola", "pca", "dpca", "residual")
PROPERTY = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _process(n: int = 240, seed: int = 0, n_vars: int = 6) -> pd.DataFrame:
    """A correlated AR(1) process with a 3-minute DatetimeIndex."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, n_vars))
    x = np.zeros((n, n_vars))
    for t in range(1, n):
        x[t] = 0.6 * x[t - 1] + e[t]
    x[:, 1:] += 0.5 * x[:, :1]
    return pd.DataFrame(x, columns=[f"v{i}" for i in range(n_vars)],
                        index=pd.date_range("2024-01-01", periods=n, freq="3min"))


def _new(kind: str):
    return {"mola": lambda: MOLAMonitor(**MOLA_PARAMS),
            "pca": lambda: PCAMonitor(n_components=2),
            "dpca": lambda: DPCAMonitor(n_lags=1, n_components=2),
            "residual": lambda: ResidualMonitor()}[kind]()


def _min_rows(monitor) -> int:
    """Rows a scoring call needs."""
    if isinstance(monitor, MOLAMonitor):
        return monitor._history() + 1  # its warm-up rows score a finite 0 (flag warmup)
    if isinstance(monitor, ResidualMonitor):
        return monitor.order + 1
    return getattr(monitor, "n_lags", 0) + 1


@pytest.fixture(scope="module")
def fitted():
    X = _process()
    return {kind: _new(kind).fit(X) for kind in KINDS}


TEST = _process(80, seed=1)


def _raised_by_mola_ts(info: pytest.ExceptionInfo) -> None:
    """The error comes from mola_ts's own checks, not from deep inside a library."""
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    assert "/mola_ts/" in frame.filename.replace("\\", "/"), (frame.filename, info.value)


def _same(a, b) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


SCORING = ("statistics", "score_samples", "predict", "decision_function", "contributions")


# --------------------------------------------------------------------------- NaN and inf
@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(data=st.data())
def test_nan_or_inf_at_scoring_raises_naming_columns_and_rows(fitted, kind, data):
    monitor = fitted[kind]
    n = data.draw(st.integers(_min_rows(monitor), 40), label="rows")
    cells = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 5)), min_size=1,
                               max_size=6, unique=True), label="cells")
    value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="value")
    as_array = data.draw(st.booleans(), label="as_array")
    method = data.draw(st.sampled_from(SCORING), label="method")
    X = TEST.iloc[:n].copy()
    for r, c in cells:
        X.iloc[r, c] = value
    if as_array:
        X = X.to_numpy()
    before = copy.deepcopy(X)
    with pytest.raises(ValueError) as info:
        getattr(monitor, method)(X)
    _raised_by_mola_ts(info)
    message = str(info.value)
    assert ("NaN" in message) if np.isnan(value) else ("infinite" in message)
    first_row = min(r for r, _ in cells)
    first_col = min(c for _, c in cells)
    assert repr(f"x{first_col}" if as_array else COLUMNS[first_col]) in message, message
    # rows are named by position for arrays, by index label for frames
    rows = message.split("rows [", 1)[1].split("]", 1)[0]
    shown = [v.strip().strip("'") for v in rows.split(",")]
    assert (str(first_row) if as_array else str(TEST.index[first_row])) in shown, message
    _same(X, before)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(data=st.data())
def test_nan_or_inf_at_fit_raises_naming_columns_and_rows(kind, data):
    X = _process(120, seed=2)
    cells = data.draw(st.lists(st.tuples(st.integers(0, 119), st.integers(0, 5)), min_size=1,
                               max_size=4, unique=True), label="cells")
    value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="value")
    as_runs = data.draw(st.booleans(), label="as_runs")
    for r, c in cells:
        X.iloc[r, c] = value
    arg = [X.iloc[:60], X.iloc[60:]] if as_runs else X
    before = copy.deepcopy(arg)
    with pytest.raises(ValueError) as info:
        _new(kind).fit(arg)
    _raised_by_mola_ts(info)
    message = str(info.value)
    assert ("NaN" in message) if np.isnan(value) else ("infinite" in message)
    if as_runs:  # the first run holding a bad value is the one named
        first_run = 0 if any(r < 60 for r, _ in cells) else 1
        assert f"X[{first_run}]" in message
        cells = [(r, c) for r, c in cells if (r < 60) == (first_run == 0)]
    assert repr(COLUMNS[min(c for _, c in cells)]) in message, message
    _same(arg, before)


# --------------------------------------------------------------------------- dtypes
_FRAME_DTYPES = {
    "strings": lambda s: s.astype(str),
    "object numbers": lambda s: s.astype(object),
    "bool": lambda s: s > 0,
    "complex": lambda s: s.astype(complex),
    "category": lambda s: s.round().astype("category"),
    "datetime": lambda s: pd.to_datetime(np.arange(len(s)), unit="s").to_series(index=s.index),
}
_ARRAY_DTYPES = {
    "strings": lambda a: a.astype(str),
    "object": lambda a: a.astype(object),
    "bool": lambda a: a > 0,
    "complex": lambda a: a.astype(complex),
    "datetime64": lambda a: a.astype("datetime64[s]"),
    "timedelta64": lambda a: a.astype("timedelta64[s]"),
}


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(data=st.data())
def test_wrong_dtypes_raise_type_errors_naming_the_column(fitted, kind, data):
    at_fit = data.draw(st.booleans(), label="at_fit")
    X = (_process(120, seed=3) if at_fit else TEST).copy()
    if data.draw(st.booleans(), label="frame"):
        name = data.draw(st.sampled_from(sorted(_FRAME_DTYPES)), label="dtype")
        col = data.draw(st.sampled_from(COLUMNS), label="column")
        X[col] = _FRAME_DTYPES[name](X[col])
        expected = col
    else:
        name = data.draw(st.sampled_from(sorted(_ARRAY_DTYPES)), label="dtype")
        X = _ARRAY_DTYPES[name](X.to_numpy())
        expected = str(X.dtype)
    before = copy.deepcopy(X)
    with pytest.raises(TypeError) as info:
        if at_fit:
            _new(kind).fit(X)
        else:
            fitted[kind].score_samples(X)
    _raised_by_mola_ts(info)
    assert expected in str(info.value), (name, str(info.value))
    _same(X, before)


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(shape=st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple),
       seed=st.integers(0, 2**16))
def test_random_shapes_score_exactly_when_valid_else_raise(fitted, kind, shape, seed):
    monitor = fitted[kind]
    if len(shape) == 2 and shape[1] == 1:
        shape = (shape[0], 6)  # make the valid width (and enough rows) likely enough
    X = np.random.default_rng(seed).normal(size=shape)
    before = X.copy()
    # MOLA and the residual monitor score any run of at least one row (their warm-up rows a
    # finite 0, flagged)
    warm = kind in ("mola", "residual")
    need = 1 if warm else _min_rows(monitor)
    valid = len(shape) == 2 and shape[1] == 6 and shape[0] >= need
    if valid:
        scores = monitor.score_samples(X)
        assert scores.shape == (shape[0],)
        assert np.isfinite(scores).all()
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            monitor.score_samples(X)
        _raised_by_mola_ts(info)
        message = str(info.value)
        assert any(word in message for word in ("2-D", "rows", "columns")), message
    np.testing.assert_array_equal(X, before)


@pytest.mark.parametrize("bad, error, match", [
    (None, TypeError, "NoneType"),
    ({"v0": [1.0]}, TypeError, "dict"),
    ("text", TypeError, "str"),
    (3.5, TypeError, "float"),
    ([[1.0, 2.0], [3.0]], ValueError, "differ in length"),
])
@pytest.mark.parametrize("kind", KINDS)
def test_non_array_inputs_raise_clear_errors(fitted, kind, bad, error, match):
    for call in (fitted[kind].score_samples, _new(kind).fit):
        with pytest.raises(error, match=match) as info:
            call(bad)
        _raised_by_mola_ts(info)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(i=st.integers(1, 79), j=st.integers(1, 79))
def test_duplicated_or_unsorted_timestamps_raise(fitted, kind, i, j):
    X = TEST.copy()
    index = X.index.to_numpy().copy()
    if i == j:
        index[i] = index[i - 1]
        match = "duplicated timestamps"
    else:
        index[[i, j]] = index[[j, i]]
        match = "not sorted"
    X.index = pd.DatetimeIndex(index)
    before = X.copy()
    with pytest.raises(ValueError, match=match) as info:
        fitted[kind].statistics(X)
    _raised_by_mola_ts(info)
    with pytest.raises(ValueError, match=match):
        _new(kind).fit([_process(120, seed=12), X])
    pd.testing.assert_frame_equal(X, before)


# --------------------------------------------------------------------------- columns
@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(order=st.permutations(COLUMNS))
def test_reordered_columns_are_matched_by_name(fitted, kind, order):
    monitor = fitted[kind]
    shuffled = TEST[list(order)]
    before = shuffled.copy()
    pd.testing.assert_frame_equal(monitor.statistics(shuffled), monitor.statistics(TEST),
                                  check_exact=True)
    pd.testing.assert_frame_equal(shuffled, before)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(data=st.data())
def test_renamed_missing_or_extra_columns_raise_naming_them(fitted, kind, data):
    monitor = fitted[kind]
    change = data.draw(st.sampled_from(["rename", "drop", "extra"]), label="change")
    X = TEST.copy()
    if change == "rename":
        old = data.draw(st.sampled_from(COLUMNS), label="old")
        X = X.rename(columns={old: "zz_" + old})
        named = [old, "zz_" + old]
    elif change == "drop":
        gone = data.draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=5,
                                  unique=True), label="dropped")
        X = X.drop(columns=gone)
        named = sorted(gone)[:1]
    else:
        extra = data.draw(st.lists(st.sampled_from(["e1", "e2", "e3"]), min_size=1,
                                   unique=True), label="extra")
        X = X.assign(**{e: 1.0 for e in extra})
        named = sorted(extra)[:1]
    before = X.copy()
    with pytest.raises(ValueError) as info:
        monitor.statistics(X)
    _raised_by_mola_ts(info)
    for name in named:
        assert repr(name) in str(info.value), str(info.value)
    pd.testing.assert_frame_equal(X, before)


def test_arrays_are_matched_by_position_for_a_model_fitted_on_a_frame(fitted):
    # documented handling: an array carries no names, so its columns are taken in fit order
    for kind in KINDS:
        np.testing.assert_array_equal(fitted[kind].score_samples(TEST.to_numpy()),
                                      fitted[kind].score_samples(TEST))


# --------------------------------------------------------------------------- fit-time data
@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(col=st.sampled_from(COLUMNS),
       value=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
def test_a_constant_column_at_fit_is_named(kind, col, value):
    X = _process(120, seed=4)
    X[col] = value
    before = X.copy()
    with pytest.raises(ValueError, match="constant columns") as info:
        _new(kind).fit(X)
    _raised_by_mola_ts(info)
    assert repr(col) in str(info.value)
    pd.testing.assert_frame_equal(X, before)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(n=st.integers(0, 53))
def test_too_few_rows_at_fit_raise(kind, n):
    # MOLA's tiny setting needs 54 rows; PCA with k = 2 and cross-fitted limits (2 time
    # blocks) needs 8 rows (each fold model 4 rows), DPCA with one lag and 3 blocks 8 too
    # (lag windows stay inside each block)
    X = _process(max(n, 1), seed=5).iloc[:n]
    needed = {"mola": 54, "pca": 8, "dpca": 8, "residual": 20}[kind]
    if n >= needed:
        _new(kind).fit(X)
        return
    with pytest.raises(ValueError, match="rows") as info:
        _new(kind).fit(X)
    _raised_by_mola_ts(info)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(widths=st.lists(st.integers(1, 7), min_size=2, max_size=4).filter(
    lambda w: len(set(w)) > 1), frames=st.booleans())
def test_runs_of_different_widths_raise(kind, widths, frames):
    base = _process(100, seed=6, n_vars=7)
    runs = [base.iloc[:, :w] if frames else base.iloc[:, :w].to_numpy() for w in widths]
    before = copy.deepcopy(runs)
    with pytest.raises(ValueError, match="every run must have the same columns") as info:
        _new(kind).fit(runs)
    _raised_by_mola_ts(info)
    bad = next(i for i, w in enumerate(widths) if w != widths[0])
    assert f"X[{bad}]" in str(info.value)
    _same(runs, before)


@pytest.mark.parametrize("kind", KINDS)
def test_runs_with_renamed_or_reordered_columns_or_a_series_raise(kind):
    X = _process(120, seed=7)
    for second, match in ((X.rename(columns={"v2": "w"}), "same columns in the same order"),
                          (X[COLUMNS[::-1]], "same columns in the same order"),
                          (X["v0"], "X\\[1\\] has 1 columns")):
        with pytest.raises(ValueError, match=match) as info:
            _new(kind).fit([X, second])
        _raised_by_mola_ts(info)


@pytest.mark.parametrize("kind", KINDS)
def test_values_too_large_to_standardise_at_fit_raise(kind):
    X = _process(120, seed=8)
    X["v3"] *= 1e307
    with pytest.raises(ValueError, match=r"overflows float64 \['v3'") as info:
        _new(kind).fit(X)
    _raised_by_mola_ts(info)


@pytest.mark.parametrize("kind", KINDS)
def test_identical_rows_are_constant_columns_up_to_rounding(kind):
    # the std of identical values is a few ulps, not 0: still constant
    X = pd.DataFrame(np.tile([[0.1, 0.7, 1e-3, 3.3, 12.9, -4.1]], (120, 1)), columns=COLUMNS)
    with pytest.raises(ValueError, match="constant columns"):
        _new(kind).fit(X)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=6, deadline=None)
@given(n_vars=st.integers(2, 5), n=st.integers(60, 150), seed=st.integers(0, 1000),
       as_array=st.booleans())
def test_valid_random_shapes_fit_and_score_without_touching_the_input(kind, n_vars, n, seed,
                                                                      as_array):
    X = _process(n, seed=seed, n_vars=n_vars)
    if as_array:
        X = X.to_numpy()
        X.flags.writeable = False  # a read-only input is read, never written
    before = copy.deepcopy(X)
    params = {"mola": {**MOLA_PARAMS, "blocks": "auto", "epochs": 1},
              "residual": {}}.get(kind, {"n_components": 1})
    monitor = clone(_new(kind)).set_params(**params).fit(X)
    scores = monitor.score_samples(X)
    assert np.isfinite(scores).all()  # every monitor: finite scores, warm-up rows flagged
    warmup = monitor.statistics(X)["warmup"].to_numpy()
    np.testing.assert_array_equal(warmup[:_min_rows(monitor) - 1], 1)
    assert (scores[warmup == 1] == 0).all() and (warmup[_min_rows(monitor) - 1:] == 0).all()
    assert set(np.unique(monitor.predict(X))) <= {0, 1}
    _same(X, before)


# --------------------------------------------------------------------------- extreme values
@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(row=st.integers(5, 60), col=st.integers(0, 5),
       value=st.sampled_from([1e308, -1e308, 1e200, -5e250]))
def test_absurd_finite_values_never_give_a_nan_score(fitted, kind, row, col, value):
    monitor = fitted[kind]
    X = TEST.copy()
    X.iloc[row, col] = value
    stats = monitor.statistics(X)
    scores = monitor.score_samples(X)
    assert not np.isnan(scores[_min_rows(monitor) - 1:]).any()
    assert monitor.predict(X)[row] == 1 and stats["alarm"].iloc[row] == 1
    if kind == "mola":
        # the LSTM codes saturate, so T^2 and W may stay low: the out-of-range guard raises
        # the alarm with PFI 1 and a large finite score (it was +inf before)
        assert stats["out_of_range"].iloc[row] == 1 and stats["PFI"].iloc[row] == 1.0
        assert 10 * monitor.threshold_ <= stats["score"].iloc[row] < np.inf
        assert np.isfinite(stats.drop(columns=["missing_variables"]).to_numpy(float)).all()


def test_the_out_of_range_guard_catches_spikes_the_saturated_codes_miss():
    X = _process()
    residual = MOLAMonitor(**MOLA_PARAMS).fit(X)
    spiked = TEST.copy()
    spiked.iloc[30, 4] = residual.mean_[4] + 1e3 * residual.scale_[4]
    stats = residual.statistics(spiked)  # the residual design guards its scaled residuals
    assert stats["out_of_range"].iloc[30] == 1 and stats["alarm"].iloc[30] == 1
    assert (residual.statistics(TEST)["out_of_range"] == 0).all()
    # the level design guards the standardised levels (the first implementation's guard)
    monitor = MOLAMonitor(**MOLA_PARAMS, design="level").fit(X)
    low, high = monitor.training_range_
    assert (low < 0).all() and (high > 0).all()
    clean = monitor.statistics(TEST)
    spiked = TEST.copy()
    spiked.iloc[30, 4] = monitor.mean_[4] + 1e3 * monitor.scale_[4]  # 1000 standard deviations
    stats = monitor.statistics(spiked)
    assert stats["out_of_range"].iloc[30] == 1 and stats["alarm"].iloc[30] == 1
    assert monitor.predict(spiked)[30] == 1
    assert 10 * monitor.threshold_ <= monitor.score_samples(spiked)[30] < np.inf
    assert stats["out_of_range"].drop(stats.index[30]).eq(0).all()
    assert (clean["out_of_range"] == 0).all()
    # just inside the widened range: no guard alarm; just outside: alarm
    margin = monitor.range_margin * (high[4] - low[4])
    for z_value, expected in ((high[4] + 0.99 * margin, 0), (high[4] + 1.01 * margin, 1)):
        probe = TEST.copy()
        probe.iloc[30, 4] = monitor.mean_[4] + z_value * monitor.scale_[4]
        assert monitor.statistics(probe)["out_of_range"].iloc[30] == expected
    # switched off by set_params without a refit: the saturated codes stay quiet again
    monitor.set_params(range_margin=None)
    off = monitor.statistics(spiked)
    assert off["out_of_range"].iloc[30] == 0 and np.isfinite(off["PFI"].iloc[30])
    with pytest.raises(ValueError, match="range_margin"):
        MOLAMonitor(**MOLA_PARAMS, range_margin=-1.0).fit(X)


def test_a_huge_spike_alarms_mola_with_use_spe():
    X = _process()
    monitor = MOLAMonitor(**MOLA_PARAMS, range_margin=None).fit(X).set_params(
        use_spe=True).recalibrate(X)
    for value in (1e3 * monitor.scale_[4], 1e300):
        spiked = TEST.copy()
        spiked.iloc[30, 4] = value
        assert monitor.predict(spiked)[30] == 1


# --------------------------------------------------------------------------- model state
@pytest.mark.parametrize("kind", KINDS)
def test_unfitted_monitors_raise_not_fitted(kind):
    monitor = _new(kind)
    calls = [lambda: monitor.score_samples(TEST), lambda: monitor.statistics(TEST),
             lambda: monitor.predict(TEST), lambda: monitor.decision_function(TEST),
             lambda: monitor.contributions(TEST), lambda: monitor.detection_scores(TEST),
             lambda: monitor.save("never.pt")]
    if kind == "mola":
        calls += [monitor.stream, lambda: monitor.recalibrate(TEST)]
    for call in calls:
        with pytest.raises(NotFittedError):
            call()


@pytest.mark.parametrize("kind, change", [
    ("mola", {"alpha": 0.05}), ("mola", {"use_spe": True}), ("mola", {"window": 4}),
    ("mola", {"blocks": "single"}), ("pca", {"statistic": "t2"}), ("pca", {"n_components": 3}),
    ("dpca", {"n_lags": 2}),
])
def test_parameters_changed_after_fit_are_refused_until_refit(fitted, kind, change):
    monitor = clone(fitted[kind]).fit(_process())
    monitor.set_params(**change)
    name = next(iter(change))
    with pytest.raises(ValueError, match=f"'{name}'.*changed since fit") as info:
        monitor.score_samples(TEST)
    _raised_by_mola_ts(info)
    if kind == "mola" and name in ("alpha", "use_spe"):
        monitor.recalibrate(_process())  # calibration settings: recalibrate is enough
    else:
        monitor.fit(_process())
    assert np.isfinite(monitor.score_samples(TEST)[5:]).all()


def test_random_state_must_be_an_int_a_numpy_generator_or_none():
    with pytest.raises(TypeError, match="random_state must be an int, a numpy RandomState"):
        MOLAMonitor(**{**MOLA_PARAMS, "random_state": 0.5}).fit(TEST)


# --------------------------------------------------------------------------- determinism
def test_same_random_state_gives_bit_identical_statistics_across_fits():
    X = _process(200, seed=9)
    test = _process(90, seed=10)
    test.iloc[40:, 1] += 2.5
    first = MOLAMonitor(**MOLA_PARAMS).fit(X).statistics(test)
    again = MOLAMonitor(**MOLA_PARAMS).fit(X).statistics(test)
    other = MOLAMonitor(**{**MOLA_PARAMS, "random_state": 1}).fit(X).statistics(test)
    torch.rand(7)  # disturb the global generators between fits
    np.random.default_rng().normal()
    after = MOLAMonitor(**MOLA_PARAMS).fit(X).statistics(test)
    for frame in (again, after):
        pd.testing.assert_frame_equal(frame, first, check_exact=True)
    assert not np.array_equal(other["PFI"].to_numpy()[2:], first["PFI"].to_numpy()[2:])
    assert not np.array_equal(other["b1.T2"].to_numpy()[2:], first["b1.T2"].to_numpy()[2:])


@pytest.mark.parametrize("kind", ["pca", "dpca"])
def test_pca_monitors_are_deterministic(kind):
    X = _process(200, seed=11)
    a = _new(kind).fit(X).statistics(TEST)
    b = _new(kind).fit(X.copy()).statistics(TEST)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
