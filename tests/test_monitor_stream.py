"""The streaming MOLA monitor: sensor-dropout policy, time order, restart and bounded memory.

Policy under test (documented in MonitorStream and docs/how-to/streaming.md): a NaN or inf in a
streamed sample holds the variable's last valid value and flags the sample (sensor_fault,
missing_variables); past max_hold consecutive held samples of a variable, or with every
variable missing, the sample is unmonitorable (every statistic 0 -- it was NaN before scores
became always finite --, monitorable = 0, CUSUM and W-BF untouched) or raises
(on_stale="raise"); a variable missing before any valid value raises;
missing="raise" raises on any NaN/inf. A failed update leaves the stream unchanged.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from mola_ts.monitor import MOLAMonitor, MonitorStream
from mola_ts.persistence import EstimatorFileError

COLUMNS = [f"v{i}" for i in range(6)]
PARAMS = dict(blocks={"b1": COLUMNS[:3], "b2": COLUMNS[3:]}, window=4, hidden_size=6,
              code_size=2, epochs=2, patience=1, random_state=0)
W = PARAMS["window"]
QUALITY = ["sensor_fault", "missing_variables", "monitorable", "out_of_range"]
PROPERTY = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _process(n: int = 240, seed: int = 0, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, 6))
    x = np.zeros((n, 6))
    for t in range(1, n):
        x[t] = 0.6 * x[t - 1] + e[t]
    x[:, 1:] += 0.5 * x[:, :1]
    return pd.DataFrame(x, columns=COLUMNS,
                        index=pd.date_range(start, periods=n, freq="3min"))


@pytest.fixture(scope="module")
def monitor():
    return MOLAMonitor(**PARAMS).fit(_process())


def _faulty(n: int = 90, seed: int = 1) -> pd.DataFrame:
    """A test run with a persistent shift, so the CUSUMs and the W-BF episode carry state."""
    X = _process(n, seed=seed)
    X.iloc[n // 3:, 4] += 2.5
    return X


TEST = _faulty()


def _statistics_only(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=QUALITY)


def _feed(stream: MonitorStream, X: pd.DataFrame, cuts: list[int]) -> pd.DataFrame:
    bounds = [0, *sorted(set(cuts)), len(X)]
    parts = [stream.update(X.iloc[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
             if b > a]
    return pd.concat(parts)


# --------------------------------------------------------------------------- stream == batch
@PROPERTY
@given(cuts=st.lists(st.integers(1, len(TEST) - 1), max_size=12),
       form=st.sampled_from(["frame", "array", "rows"]))
def test_a_finite_stream_equals_the_batch_result_for_any_chunking(monitor, cuts, form):
    batch = monitor.statistics(TEST)
    stream = monitor.stream()
    if form == "frame":
        out = _feed(stream, TEST, cuts)
    elif form == "array":
        bounds = [0, *sorted(set(cuts)), len(TEST)]
        out = pd.concat([stream.update(TEST.to_numpy()[a:b]) for a, b in
                         zip(bounds[:-1], bounds[1:], strict=True) if b > a])
        assert list(out.index) == list(range(len(TEST)))  # positions in the stream
        out = out.set_axis(TEST.index)
    else:
        out = pd.concat([stream.update(TEST.iloc[i]) for i in range(len(TEST))])
    pd.testing.assert_frame_equal(out, batch, check_exact=True, check_freq=False)
    assert stream.n_seen == len(TEST)


# --------------------------------------------------------------------------- hold policy
@st.composite
def _dropouts(draw, max_run: int):
    """A missing-value mask (rows, 6): first row complete, no all-missing row, runs bounded."""
    n = len(TEST)
    mask = np.zeros((n, 6), dtype=bool)
    for _ in range(draw(st.integers(1, 6))):
        j = draw(st.integers(0, 5))
        t = draw(st.integers(1, n - 1))
        mask[t:t + draw(st.integers(1, max_run)), j] = True
    mask[mask.all(axis=1)] = False
    return mask


@PROPERTY
@given(mask=_dropouts(max_run=8), value=st.sampled_from([np.nan, np.inf, -np.inf]),
       cuts=st.lists(st.integers(1, len(TEST) - 1), max_size=6))
def test_held_values_are_scored_exactly_as_the_forward_filled_run(monitor, mask, value, cuts):
    broken = TEST.mask(mask, value)
    before = broken.copy()
    filled = TEST.mask(mask).ffill()
    out = _feed(monitor.stream(max_hold=len(TEST)), broken, cuts)
    pd.testing.assert_frame_equal(broken, before)  # the input is never modified
    pd.testing.assert_frame_equal(_statistics_only(out), _statistics_only(
        monitor.statistics(filled)), check_exact=True, check_freq=False)
    np.testing.assert_array_equal(out["sensor_fault"], mask.any(axis=1).astype(int))
    assert (out["monitorable"] == 1).all()
    for t in range(len(TEST)):
        assert out["missing_variables"].iloc[t] == tuple(c for c, m in
                                                         zip(COLUMNS, mask[t], strict=True) if m)


@PROPERTY
@given(max_hold=st.integers(0, 4), gap=st.integers(1, 9), var=st.integers(0, 5),
       start=st.integers(W, 60))
def test_a_variable_missing_past_max_hold_makes_samples_unmonitorable(monitor, max_hold, gap,
                                                                      var, start):
    broken = TEST.iloc[:start + gap + 2].copy()
    broken.iloc[start:start + gap, var] = np.nan
    stream = monitor.stream(max_hold=max_hold)
    states, rows = [], []
    for t in range(len(broken)):
        states.append(stream.get_state())
        rows.append(stream.update(broken.iloc[t]))
    out = pd.concat(rows)
    stale = np.zeros(len(broken), dtype=bool)
    stale[start + max_hold:start + gap] = True
    np.testing.assert_array_equal(out["monitorable"], (~stale).astype(int))
    level_columns = [c for c in out if c.endswith((".T2", ".W", ".SPE", ".index", ".weight"))]
    assert (out.loc[stale, level_columns + ["PFI", "score"]] == 0).all().all()
    assert (out.loc[stale, "alarm"] == 0).all() and (out.loc[stale, "sensor_fault"] == 1).all()
    for t in np.flatnonzero(stale):  # an unmonitorable sample advances no CUSUM or episode
        after = states[t + 1] if t + 1 < len(states) else stream.get_state()
        for b_before, b_after in zip(states[t]["engine"]["cusums"], after["engine"]["cusums"],
                                     strict=True):
            for (u0, e0), (u1, e1) in zip(b_before, b_after, strict=True):
                np.testing.assert_array_equal(u0, u1)
                np.testing.assert_array_equal(e0, e1)
        for a, b in zip(states[t]["engine"]["order_weights"], after["engine"]["order_weights"],
                        strict=True):
            np.testing.assert_array_equal(a, b)
    # before the first stale sample the stream is the forward-filled batch
    first = start + max_hold
    filled = broken.ffill()
    pd.testing.assert_frame_equal(_statistics_only(out.iloc[:first]), _statistics_only(
        monitor.statistics(filled).iloc[:first]), check_exact=True, check_freq=False)


def test_on_stale_raise_names_the_variable_and_leaves_the_stream_unchanged(monitor):
    broken = TEST.copy()
    broken.iloc[20:30, 2] = np.nan
    stream = monitor.stream(max_hold=3, on_stale="raise")
    stream.update(broken.iloc[:23])  # three held samples are allowed
    state = stream.get_state()
    with pytest.raises(ValueError, match=r"\['v2'\] have been missing for more than "
                                         r"max_hold=3 samples") as info:
        stream.update(broken.iloc[23:40])
    assert str(broken.index[23]) in str(info.value)
    _assert_same_state(stream.get_state(), state)


@pytest.mark.parametrize("on_stale", ["flag", "raise"])
def test_a_sample_with_every_variable_missing_is_unmonitorable(monitor, on_stale):
    broken = TEST.copy()
    broken.iloc[30] = np.nan
    stream = monitor.stream(on_stale=on_stale)
    stream.update(broken.iloc[:30])
    if on_stale == "raise":
        with pytest.raises(ValueError, match="every variable is missing"):
            stream.update(broken.iloc[30:])
        return
    out = stream.update(broken.iloc[30:])
    assert out["monitorable"].iloc[0] == 0 and out["PFI"].iloc[0] == out["score"].iloc[0] == 0
    assert out["missing_variables"].iloc[0] == tuple(COLUMNS)
    assert (out["monitorable"].iloc[1:] == 1).all() and out["PFI"].iloc[1:].notna().all()


def test_a_variable_missing_before_any_valid_value_raises(monitor):
    broken = TEST.copy()
    broken.iloc[:3, 5] = np.nan
    before = broken.copy()
    stream = monitor.stream()
    with pytest.raises(ValueError, match=r"\['v5'\] before any valid value") as info:
        stream.update(broken.iloc[:10])
    assert str(broken.index[0]) in str(info.value)
    pd.testing.assert_frame_equal(broken, before)
    assert stream.n_seen == 0
    with pytest.raises(ValueError, match="before any valid value"):
        stream.update(np.full(6, np.nan))


def test_missing_raise_refuses_any_nan_or_inf_naming_variable_and_sample(monitor):
    for value in (np.nan, np.inf):
        broken = TEST.copy()
        broken.iloc[12, [1, 3]] = value
        before = broken.to_numpy().copy()
        stream = monitor.stream(missing="raise")
        with pytest.raises(ValueError, match=r"\['v1', 'v3'\].*missing='raise'") as info:
            stream.update(broken)
        assert str(broken.index[12]) in str(info.value)
        np.testing.assert_array_equal(broken.to_numpy(), before)
        array = broken.to_numpy()
        with pytest.raises(ValueError, match="sample 12 of the stream"):
            stream.update(array)  # arrays: the position in the stream
        np.testing.assert_array_equal(array, before)
        assert stream.n_seen == 0


def test_a_failed_update_leaves_the_stream_unchanged_and_can_be_continued(monitor):
    batch = monitor.statistics(TEST)
    stream = monitor.stream(missing="raise")
    first = stream.update(TEST.iloc[:25])
    state = stream.get_state()
    bad = TEST.iloc[25:50].copy()
    bad.iloc[10, 0] = np.nan
    with pytest.raises(ValueError, match="missing='raise'"):
        stream.update(bad)
    _assert_same_state(stream.get_state(), state)
    rest = stream.update(TEST.iloc[25:])
    pd.testing.assert_frame_equal(pd.concat([first, rest]), batch, check_exact=True,
                                  check_freq=False)


def test_batch_statistics_with_nan_raise_and_the_hold_policy_is_one_call_away(monitor):
    broken = TEST.copy()
    broken.iloc[40, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN values \(columns \['v3'\], rows "
                                         r"\['2024-01-01 02:00:00'\]\)"):
        monitor.statistics(broken)
    out = monitor.stream(missing="hold").update(broken)
    assert out["sensor_fault"].sum() == 1 and out["missing_variables"].iloc[40] == ("v3",)


# --------------------------------------------------------------------------- stream inputs
def test_samples_must_arrive_in_time_order_across_updates(monitor):
    stream = monitor.stream()
    stream.update(TEST.iloc[:10])
    state = stream.get_state()
    for again in (TEST.iloc[9], TEST.iloc[5:8], TEST.iloc[[9, 10]]):
        with pytest.raises(ValueError, match="not after the stream's last sample"):
            stream.update(again)
        _assert_same_state(stream.get_state(), state)
    with pytest.raises(ValueError, match="time zone"):
        stream.update(TEST.iloc[10:12].tz_localize("UTC"))
    with pytest.raises(ValueError, match="not sorted"):
        stream.update(TEST.iloc[[12, 11]])
    stream.update(TEST.iloc[10])  # the next sample is fine


@pytest.mark.parametrize("bad, error, match", [
    (np.ones(5), ValueError, "5 columns but the estimator was fitted on 6"),
    (pd.Series(np.ones(6), index=[*COLUMNS[:5], "zz"]), ValueError, r"missing \['v5'\]"),
    (np.array(["1"] * 6), TypeError, "real numbers"),
    (np.ones(6, dtype=bool), TypeError, "real numbers"),
    (np.ones(6, dtype=complex), TypeError, "complex"),
    ([[1.0] * 6, [1.0] * 5], ValueError, "differ in length"),
    (np.ones((2, 6, 1)), ValueError, "2-D"),
    (1.0, TypeError, "float"),
    ({c: 1.0 for c in COLUMNS}, TypeError, "dict"),
])
def test_bad_stream_inputs_raise_clear_errors_and_change_nothing(monitor, bad, error, match):
    stream = monitor.stream()
    stream.update(TEST.iloc[:8])
    state = stream.get_state()
    with pytest.raises(error, match=match):
        stream.update(bad)
    _assert_same_state(stream.get_state(), state)


def test_bad_policy_settings_and_unfitted_or_changed_monitors(monitor):
    for kwargs, match in (({"missing": "zero"}, "missing must be one of"),
                          ({"max_hold": -1}, "max_hold must be an int >= 0"),
                          ({"max_hold": 2.5}, "max_hold must be an int >= 0"),
                          ({"on_stale": "ignore"}, "on_stale must be one of")):
        with pytest.raises(ValueError, match=match):
            monitor.stream(**kwargs)
    with pytest.raises(NotFittedError):
        MonitorStream(MOLAMonitor())
    changed = clone(monitor).fit(_process())
    stream = changed.stream()
    changed.set_params(n_bins=5)
    with pytest.raises(ValueError, match=r"\['n_bins'\] changed since fit"):
        stream.update(TEST.iloc[0])


# --------------------------------------------------------------------------- restart
def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "engine":
            _assert_same_state(a[key], b[key])
        elif key == "cusums":
            for block_a, block_b in zip(a[key], b[key], strict=True):
                for (u0, e0), (u1, e1) in zip(block_a, block_b, strict=True):
                    np.testing.assert_array_equal(u0, u1)
                    np.testing.assert_array_equal(e0, e1)
        elif key == "order_weights":
            for x, y in zip(a[key], b[key], strict=True):
                np.testing.assert_array_equal(x, y)
        elif isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key]


_BROKEN = TEST.copy()
_BROKEN.iloc[40:44, 1] = np.nan  # a dropout in progress at some restart points


@PROPERTY
@given(k=st.integers(1, len(TEST) - 1), through_file=st.booleans())
def test_a_restarted_stream_continues_bit_identically(monitor, tmp_path_factory, k,
                                                      through_file):
    whole = monitor.stream(max_hold=5).update(_BROKEN)
    first = monitor.stream(max_hold=5)
    head = first.update(_BROKEN.iloc[:k])
    if through_file:
        path = first.save(tmp_path_factory.mktemp("stream") / "stream.pt")
        restored = MonitorStream.load(path)
        assert restored.monitor is not monitor
        assert (restored.missing, restored.max_hold, restored.on_stale) == ("hold", 5, "flag")
    else:
        restored = monitor.stream(max_hold=5)
        restored.set_state(first.get_state())
    _assert_same_state(restored.get_state(), first.get_state())
    tail = restored.update(_BROKEN.iloc[k:])
    pd.testing.assert_frame_equal(pd.concat([head, tail]), whole, check_exact=True,
                                  check_freq=False)
    # the original, continued after the save, agrees with the restored copy
    pd.testing.assert_frame_equal(first.update(_BROKEN.iloc[k:]), tail, check_exact=True)


def test_a_restored_stream_keeps_its_held_values_and_time(monitor, tmp_path):
    stream = monitor.stream(max_hold=2)
    stream.update(_BROKEN.iloc[:42])  # v1 missing for two samples: one more may be held
    back = MonitorStream.load(stream.save(tmp_path / "s.pt"))
    assert back.hold_count[1] == 2 and back.last_value[1] == _BROKEN.iloc[39, 1]
    assert back.last_time == _BROKEN.index[41].isoformat()
    out = back.update(_BROKEN.iloc[42:44])
    np.testing.assert_array_equal(out["monitorable"], [0, 0])  # the third and fourth held
    with pytest.raises(ValueError, match="not after"):
        back.update(_BROKEN.iloc[43])


def test_restoring_a_foreign_or_damaged_state_or_file_fails_clearly(monitor, tmp_path):
    other = MOLAMonitor(**{**PARAMS, "blocks": "single"}).fit(_process())
    foreign = other.stream()
    foreign.update(TEST.iloc[:10])
    stream = monitor.stream()
    with pytest.raises(ValueError, match="cusums"):
        stream.set_state(foreign.get_state())
    state = stream.get_state()
    with pytest.raises(ValueError, match="keys"):
        stream.set_state({"buffer": state["engine"]["buffer"]})
    with pytest.raises(ValueError, match="buffer"):
        stream.set_state({**state, "engine": {**state["engine"], "buffer": np.zeros((2, 5))}})
    with pytest.raises(ValueError, match="n_seen"):
        stream.set_state({**state, "n_seen": -1})
    _assert_same_state(stream.get_state(), state)
    path = stream.save(tmp_path / "stream.pt")
    with pytest.raises(EstimatorFileError, match="MonitorStream"):
        MOLAMonitor.load(path)
    with pytest.raises(EstimatorFileError, match="MOLAMonitor"):
        MonitorStream.load(monitor.save(tmp_path / "monitor.pt"))
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(EstimatorFileError):
        MonitorStream.load(tmp_path / "cut.pt")


# --------------------------------------------------------------------------- memory
def _state_numbers(stream: MonitorStream) -> int:
    state = stream.get_state()
    engine = state["engine"]
    total = engine["buffer"].size + state["last_value"].size + state["hold_count"].size
    total += sum(u.size + np.size(e) for block in engine["cusums"] for u, e in block)
    total += engine["order_weights"][0].size
    return total


def _chunks(n_chunks: int, size: int, seed: int):
    """Fresh in-control chunks (with an occasional dropout) that continue the clock."""
    start = pd.Timestamp("2025-01-01")
    for c in range(n_chunks):
        X = _process(size, seed=seed + c, start=str(start + pd.Timedelta(minutes=3 * size * c)))
        if c % 3 == 1:
            X.iloc[size // 2, c % 6] = np.nan
        yield X


def test_stream_state_and_memory_stay_bounded(monitor):
    stream = monitor.stream()
    size = 500
    chunks = _chunks(40, size, seed=100)
    sizes = []
    for _ in range(24):  # 12 000 samples: the state holds the same count of numbers throughout
        stream.update(next(chunks))
        sizes.append(_state_numbers(stream))
        assert stream.engine["buffer"].shape == (W, 6)  # one lag + window - 1 rows
    assert len(set(sizes)) == 1
    gc.collect()
    tracemalloc.start()
    try:  # traced memory after N and after 2N more samples (N = 4 000)
        for _ in range(8):
            stream.update(next(chunks))
        gc.collect()
        middle, _ = tracemalloc.get_traced_memory()
        for _ in range(8):
            stream.update(next(chunks))
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stream.n_seen == 40 * size and _state_numbers(stream) == sizes[0]
    # a few hundred bytes of numpy/pandas free lists may still settle; a leak of 4 bytes per
    # sample (say, one more float32 kept per sample) would exceed the 16 KiB
    assert abs(end - middle) < 16 * 1024, (middle, end)
