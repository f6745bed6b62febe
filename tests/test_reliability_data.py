"""Bad data files and bad inputs to the loaders: clear errors, re-fetches, never a silent use.

Data files (offline: a fake registry entry and a replaced downloader, data homes in tmp_path):
a truncated, zero-byte or otherwise mismatching file is re-fetched when downloading is allowed
and reported (file, expected and actual sha256, what to do offline) when not; a download that
dies or does not match never leaves a file under the target's name; a leftover partial download
is never used; a CSV without a published hash that fails to parse is reported naming the file
(and its hash recorded at first use is forgotten). Loaders and helpers (hypothesis):
to_wide/to_long, sliding_windows, n_windows, WindowDataset, ltsf_split, load_dataset/fetch_*,
load_tep. The rows of docs/reliability.md point at these tests.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import traceback
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mola_ts.data import (
    DataIntegrityError,
    DataNotFoundError,
    DatasetInfo,
    RemoteFile,
    WindowDataset,
    fetch_ett,
    fetch_file,
    load_dataset,
    load_tep,
    ltsf_split,
    n_windows,
    sliding_windows,
    to_long,
    to_wide,
)
from mola_ts.data import fetch as fetch_module
from mola_ts.data import loaders as loaders_module

PROPERTY = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _csv(n: int = 30) -> bytes:
    dates = pd.date_range("2024-01-01", periods=n, freq="h")
    rows = [f"{d:%Y-%m-%d %H:%M:%S},{np.sin(i):.6f},{np.cos(i) * 100:.3f}"
            for i, d in enumerate(dates)]
    return ("date,a,b\n" + "\n".join(rows) + "\n").encode()


GOOD = _csv()
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
URL = "https://example.invalid/fake/data.csv"


class FakeServer:
    """Stands in for the network: ``_http_get`` writes ``content`` (or dies halfway)."""

    def __init__(self, content: bytes = GOOD):
        self.content = content
        self.die = False
        self.calls: list[str] = []

    def __call__(self, url, destination):
        self.calls.append(url)
        with open(destination, "wb") as handle:
            if self.die:
                handle.write(self.content[: len(self.content) // 2])
                raise ConnectionError("connection reset by peer")
            handle.write(self.content)


@pytest.fixture
def server(monkeypatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(fetch_module, "_http_get", fake)
    return fake


def _remote(sha256: str | None = GOOD_SHA, url: str | None = URL) -> RemoteFile:
    return RemoteFile("fake/data.csv", url, sha256)


def _leftovers(home) -> list[str]:
    return sorted(p.name for p in (home / "fake").glob("*.part"))


def _message_has(exc: BaseException, *fragments) -> None:
    for fragment in fragments:
        assert fragment in str(exc), f"{fragment!r} not in {str(exc)!r}"


# -- data files ------------------------------------------------------------------------------

BROKEN = {
    "truncated": lambda: GOOD[: len(GOOD) // 2],
    "zero_bytes": lambda: b"",
    "appended_garbage": lambda: GOOD + b"\x00garbage",
    "one_byte_changed": lambda: GOOD[:40] + bytes([GOOD[40] ^ 1]) + GOOD[41:],
}


@pytest.mark.parametrize("broken", BROKEN)
def test_broken_file_is_fetched_again_when_downloading_is_allowed(tmp_path, server, broken):
    target = tmp_path / "fake" / "data.csv"
    target.parent.mkdir()
    target.write_bytes(BROKEN[broken]())
    with pytest.warns(UserWarning, match="downloading it again"):
        path = fetch_file(_remote(), data_home=tmp_path)
    assert path == target and target.read_bytes() == GOOD
    assert server.calls == [URL]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("broken", BROKEN)
def test_broken_file_offline_is_reported_with_both_hashes_and_what_to_do(tmp_path, broken):
    target = tmp_path / "fake" / "data.csv"
    target.parent.mkdir()
    content = BROKEN[broken]()
    target.write_bytes(content)
    with pytest.raises(DataIntegrityError) as info:
        fetch_file(_remote(), data_home=tmp_path, download_if_missing=False)
    if content:
        _message_has(info.value, str(target), GOOD_SHA, hashlib.sha256(content).hexdigest(),
                     "without internet")
    else:
        _message_has(info.value, str(target), "empty (0 bytes)", "without internet")
    assert target.read_bytes() == content  # reported, not touched


def test_zero_byte_file_with_unknown_hash_is_never_recorded(tmp_path, server):
    target = tmp_path / "fake" / "data.csv"
    target.parent.mkdir()
    target.write_bytes(b"")
    with pytest.raises(DataIntegrityError, match="empty"):
        fetch_file(_remote(sha256=None), data_home=tmp_path, download_if_missing=False)
    assert not (tmp_path / ".mola_ts_hashes.json").exists()
    with pytest.warns(UserWarning):
        fetch_file(_remote(sha256=None), data_home=tmp_path)
    records = json.loads((tmp_path / ".mola_ts_hashes.json").read_text())
    assert records == {"fake/data.csv": GOOD_SHA}


def test_download_that_dies_halfway_leaves_no_file(tmp_path, server):
    server.die = True
    with pytest.raises(DataNotFoundError) as info:
        fetch_file(_remote(), data_home=tmp_path)
    _message_has(info.value, str(tmp_path / "fake" / "data.csv"), "ConnectionError",
                 "Without internet")
    assert not (tmp_path / "fake" / "data.csv").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("served", ["truncated", "zero_bytes"])
def test_download_that_does_not_match_is_not_used(tmp_path, server, served):
    server.content = BROKEN[served]()
    with pytest.raises(DataIntegrityError) as info:
        fetch_file(_remote(), data_home=tmp_path)
    _message_has(info.value, URL, "was not used")
    if server.content:
        _message_has(info.value, GOOD_SHA, hashlib.sha256(server.content).hexdigest())
    assert not (tmp_path / "fake" / "data.csv").exists()
    assert _leftovers(tmp_path) == []


def test_leftover_partial_download_is_never_used(tmp_path, server):
    folder = tmp_path / "fake"
    folder.mkdir()
    stale = folder / ".data.csv.k1l2m3.part"
    fresh = folder / ".data.csv.n4o5p6.part"
    for part in (stale, fresh):
        part.write_bytes(GOOD[:100])
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    with pytest.raises(DataNotFoundError) as info:
        fetch_file(_remote(), data_home=tmp_path, download_if_missing=False)
    _message_has(info.value, "partial download", "not used")
    path = fetch_file(_remote(), data_home=tmp_path)
    assert path.read_bytes() == GOOD
    assert _leftovers(tmp_path) == [fresh.name]  # an hour-old one was removed, not a recent one


def test_broken_file_without_url_is_reported(tmp_path):
    target = tmp_path / "fake" / "data.csv"
    target.parent.mkdir()
    target.write_bytes(GOOD[:10])
    with pytest.raises(DataIntegrityError, match="sha256 mismatch"):
        fetch_file(_remote(url=None), data_home=tmp_path)


# -- corrupted CSVs without a published hash ---------------------------------------------------

@pytest.fixture
def fake_dataset(monkeypatch):
    info = DatasetInfo(name="Fake", files=(_remote(sha256=None, url=None),), licence="-",
                       citation="-", frequency="h", lookback=4, horizons=(2,), split="ratio")
    monkeypatch.setattr(loaders_module, "get_dataset_info", lambda name: info)
    return info


def _good_lines() -> list[str]:
    return GOOD.decode().splitlines()


CORRUPT_CSVS = {
    "binary_garbage": (lambda: bytes(range(256)) * 4 + b"\n", "cannot be parsed as CSV"),
    "extra_field": (lambda: ("\n".join(_good_lines()[:5] + ["2024-02-01 00:00:00,1,2,3,4"]
                                       + _good_lines()[5:]) + "\n").encode(),
                    "cannot be parsed as CSV"),
    "header_only": (lambda: b"date,a,b\n", "no data rows"),
    "no_date_column": (lambda: GOOD.replace(b"date,", b"time,", 1), "expected a 'date' column"),
    "bad_date": (lambda: GOOD.replace(b"2024-01-01 03:00:00", b"2024-13-45 03:00:00"),
                 "unreadable or missing dates"),
    "text_in_numbers": (lambda: GOOD.replace(b"-0.958924", b"oops"), "non-numeric column 'a'"),
    "missing_value": (lambda: GOOD.replace(b",-0.958924,", b",,"), "1 missing values"),
    "cut_mid_row": (lambda: GOOD[:GOOD.rindex(b",")], "does not end with a line break"),
    "duplicated_date": (lambda: GOOD.replace(b"2024-01-01 04:00:00", b"2024-01-01 03:00:00"),
                        "duplicated dates"),
    "unsorted_dates": (lambda: GOOD.replace(b"2024-01-01 04:00:00", b"2024-01-01 01:30:00"),
                       "dates out of order"),
}


@pytest.mark.parametrize("corruption", CORRUPT_CSVS)
def test_corrupted_csv_without_published_hash_names_the_file(tmp_path, fake_dataset,
                                                            corruption):
    make, fragment = CORRUPT_CSVS[corruption]
    target = tmp_path / "fake" / "data.csv"
    target.parent.mkdir()
    target.write_bytes(make())
    fetch_module._warned_unknown.discard("fake/data.csv")
    with warnings.catch_warnings(record=True) as caught, \
            pytest.raises(DataIntegrityError) as info:
        warnings.simplefilter("always")
        load_dataset("Fake", data_home=tmp_path)
    _message_has(info.value, str(target), fragment, "fetch it again")
    # a refused file is never recorded, and no warning says it was
    assert not [w for w in caught if "recorded" in str(w.message)]
    records = tmp_path / ".mola_ts_hashes.json"
    assert "fake/data.csv" not in (json.loads(records.read_text()) if records.exists() else {})


def _fake_cli_dataset(monkeypatch, info):
    import mola_ts.data as data_package
    from mola_ts.data import registry

    monkeypatch.setattr(registry, "get_dataset_info", lambda name: info)
    monkeypatch.setattr(data_package, "get_dataset_info", lambda name: info)


def test_a_complete_last_row_without_line_break_loads_with_a_warning(tmp_path, fake_dataset,
                                                                    monkeypatch, capsys):
    """Like the canonical exchange_rate.csv: no final line break, last row complete. Loaded
    (with a warning saying a cut inside the last number cannot be ruled out), recorded, and
    ``datasets fetch`` agrees."""
    target = tmp_path / "fake" / "data.csv"
    target.parent.mkdir()
    target.write_bytes(GOOD.rstrip(b"\n"))
    fetch_module._warned_unknown.discard("fake/data.csv")
    with pytest.warns(UserWarning, match="cannot be ruled out"):
        frame = load_dataset("Fake", data_home=tmp_path)
    assert len(frame) == GOOD.count(b"\n") - 1
    assert frame.iloc[-1]["b"] == pytest.approx(float(GOOD.rstrip(b"\n").split(b",")[-1]))
    assert "fake/data.csv" in json.loads((tmp_path / ".mola_ts_hashes.json").read_text())
    _fake_cli_dataset(monkeypatch, fake_dataset)
    from mola_ts.cli import main

    with pytest.warns(UserWarning, match="cannot be ruled out"):
        assert main(["datasets", "fetch", "Fake", "--data-home", str(tmp_path)]) == 0
    assert f"{len(frame)} rows" in capsys.readouterr().out


@pytest.mark.parametrize("cut", ["mid_row", "empty_field", "mid_date"])
def test_a_last_row_cut_mid_row_is_refused_by_both_commands(tmp_path, fake_dataset,
                                                            monkeypatch, capsys, cut):
    body = GOOD.rstrip(b"\n")
    content = {"mid_row": body[:body.rindex(b",")],
               "empty_field": body[:body.rindex(b",") + 1],
               "mid_date": body[:body.rindex(b"\n") + 8]}[cut]
    target = tmp_path / "fake" / "data.csv"
    target.parent.mkdir()
    target.write_bytes(content)
    records = tmp_path / ".mola_ts_hashes.json"
    with pytest.raises(DataIntegrityError, match="does not end with a line break") as info:
        load_dataset("Fake", data_home=tmp_path)
    _message_has(info.value, str(target), "cut off")
    assert not records.exists() or "fake/data.csv" not in json.loads(records.read_text())
    _fake_cli_dataset(monkeypatch, fake_dataset)
    from mola_ts.cli import main

    assert main(["datasets", "fetch", "Fake", "--data-home", str(tmp_path)]) == 2
    assert "does not end with a line break" in capsys.readouterr().err
    assert not records.exists() or "fake/data.csv" not in json.loads(records.read_text())


def test_exchange_is_judged_by_its_registered_hash():
    from mola_ts.data import get_dataset_info

    info = get_dataset_info("Exchange")
    assert info.files[0].sha256 == ("d55e7aa2641009814a18ba3279431b13f6d413b0eab195b9ff21988d8"
                                    "cf94e97")
    assert "2010-10-10" in info.description


@PROPERTY
@given(cut=st.integers(1, len(GOOD) - 1))
def test_a_csv_cut_anywhere_is_refused_or_is_a_clean_prefix(tmp_path_factory, cut):
    """Without a published hash, a file cut at any byte is refused naming the file, unless the
    cut falls exactly after a line break (then it is a shorter, valid file: its first rows)."""
    home = tmp_path_factory.mktemp("cut")
    info = DatasetInfo(name="Fake", files=(_remote(sha256=None, url=None),), licence="-",
                       citation="-", frequency="h", lookback=4, horizons=(2,), split="ratio")
    (home / "fake").mkdir()
    (home / "fake" / "data.csv").write_bytes(GOOD[:cut])
    full = loaders_module._read_csv(_write(home / "full.csv", GOOD), info, verified=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = loaders_module._read_csv(home / "fake" / "data.csv", info, verified=False)
    except DataIntegrityError as exc:
        assert str(home / "fake" / "data.csv") in str(exc)
    else:
        if GOOD[cut - 1:cut] == b"\n":  # a clean prefix: its first rows, no warning
            assert not caught
            pd.testing.assert_frame_equal(frame, full.iloc[: len(frame)], check_freq=False)
        else:  # a complete-looking last row (cut inside its last number): used, with a warning
            assert any("cannot be ruled out" in str(w.message) for w in caught)
            rest = GOOD[cut:]
            assert b"," not in rest[:rest.index(b"\n")]  # the cut fell in the last field
            pd.testing.assert_frame_equal(frame.iloc[:-1], full.iloc[: len(frame) - 1],
                                          check_freq=False)


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


# -- to_wide / to_long -----------------------------------------------------------------------

names = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=6)


@PROPERTY
@given(n=st.integers(1, 12), columns=st.lists(names, min_size=1, max_size=4, unique=True),
       dated=st.booleans(), seed=st.integers(0, 99))
def test_long_and_wide_round_trip_without_touching_the_input(n, columns, dated, seed):
    columns = [c for c in columns if c not in ("ds", "y")] or ["v"]
    index = pd.date_range("2024-01-01", periods=n, freq="D") if dated else pd.RangeIndex(n)
    wide = pd.DataFrame(np.random.default_rng(seed).normal(size=(n, len(columns))),
                        index=index, columns=columns)
    before = wide.copy(deep=True)
    long = to_long(wide)
    long_before = long.copy(deep=True)
    back = to_wide(long)
    pd.testing.assert_frame_equal(wide, before)
    pd.testing.assert_frame_equal(long, long_before)
    pd.testing.assert_frame_equal(back[sorted(columns)], wide[sorted(columns)],
                                  check_names=False, check_freq=False,
                                  check_index_type=False)


@PROPERTY
@given(data=st.data())
def test_malformed_long_frames_are_rejected_naming_the_problem(data):
    wide = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=["a", "b", "c"],
                        index=pd.date_range("2024-01-01", periods=4, freq="D"))
    long = to_long(wide)
    i = data.draw(st.integers(0, len(long) - 1))
    problem = data.draw(st.sampled_from(["duplicate", "nan_id", "nan_ds", "hole", "no_y",
                                         "not_a_frame"]))
    if problem == "duplicate":
        bad, error, fragment = pd.concat([long, long.iloc[[i]]]), ValueError, "duplicated"
    elif problem == "nan_id":
        bad = long.astype({"unique_id": object})
        bad.loc[i, "unique_id"] = None
        error, fragment = ValueError, "missing values in 'unique_id'"
    elif problem == "nan_ds":
        bad = long.copy()
        bad.loc[i, "ds"] = pd.NaT
        error, fragment = ValueError, "missing values in 'ds'"
    elif problem == "hole":
        bad, error, fragment = long.drop(index=i), ValueError, "do not share their timestamps"
    elif problem == "no_y":
        bad, error, fragment = long.drop(columns="y"), ValueError, "missing the columns ['y']"
    else:
        bad, error, fragment = long.to_numpy(), TypeError, "must be a DataFrame"
    before = copy.deepcopy(bad)
    with pytest.raises(error) as info:
        to_wide(bad)
    assert fragment in str(info.value)
    if isinstance(bad, pd.DataFrame):
        pd.testing.assert_frame_equal(bad, before)


@pytest.mark.parametrize("wide, error, fragment", [
    (pd.DataFrame({"ds": [1.0], "a": [2.0]}), ValueError, "columns named ['ds']"),
    (pd.DataFrame({"y": [1.0]}), ValueError, "columns named ['y']"),
    (pd.DataFrame([[1.0, 2.0]], columns=pd.MultiIndex.from_tuples([("x", 1), ("x", 2)])),
     ValueError, "2 levels of column names"),
    (np.zeros((2, 2)), TypeError, "must be a DataFrame"),
])
def test_to_long_rejects_frames_it_cannot_melt(wide, error, fragment):
    with pytest.raises(error) as info:
        to_long(wide)
    assert fragment in str(info.value)


# -- windows ---------------------------------------------------------------------------------

@PROPERTY
@given(n=st.integers(1, 40), c=st.integers(1, 3), lookback=st.integers(1, 12),
       horizon=st.integers(0, 6), stride=st.integers(1, 4))
def test_sliding_windows_and_window_dataset_agree_with_slices(n, c, lookback, horizon, stride):
    values = np.random.default_rng(n).normal(size=(n, c))
    before = values.copy()
    count = n_windows(n, lookback, horizon, stride)
    assert count == (max(0, (n - lookback - horizon) // stride + 1)
                     if n >= lookback + horizon else 0)
    if count == 0:
        for build in (lambda: sliding_windows(values, lookback, horizon, stride),
                      lambda: WindowDataset(values, lookback, horizon, stride)):
            with pytest.raises(ValueError, match="too short"):
                build()
        return
    x, y = sliding_windows(values, lookback, horizon, stride)
    dataset = WindowDataset(values, lookback, horizon, stride)
    assert x.shape == (count, lookback, c) and y.shape == (count, horizon, c)
    assert len(dataset) == count and not x.flags.writeable
    k = count - 1
    np.testing.assert_array_equal(x[k], values[k * stride:k * stride + lookback])
    np.testing.assert_array_equal(y[k], values[k * stride + lookback:
                                               k * stride + lookback + horizon])
    np.testing.assert_array_equal(dataset[k][0].numpy(), x[k].astype(np.float32))
    np.testing.assert_array_equal(values, before)


@pytest.mark.parametrize("args, error, fragment", [
    ((4, 2, 0), ValueError, "stride == 0"),
    ((0, 2, 1), ValueError, "lookback == 0"),
    ((-3, 2, 1), ValueError, "lookback == -3"),
    ((4, -1, 1), ValueError, "horizon == -1"),
    ((2.5, 2, 1), TypeError, "lookback must be an instance"),
    ((4, "2", 1), TypeError, "horizon must be an instance"),
    ((True, 2, 1), TypeError, "lookback must be an integer, got bool"),
])
def test_window_sizes_are_validated(args, error, fragment):
    values = np.zeros((20, 2))
    for build in (sliding_windows, WindowDataset):
        with pytest.raises(error) as info:
            build(values, *args)
        assert fragment in str(info.value)
        assert "/mola_ts/" in traceback.extract_tb(info.tb)[-1].filename or \
            "/sklearn/utils/validation.py" in traceback.extract_tb(info.tb)[-1].filename


@pytest.mark.parametrize("values, error, fragment", [
    (np.zeros(20), ValueError, "2-D"),
    (np.zeros((20, 2, 2)), ValueError, "2-D"),
    (np.array([["1", "2"]] * 20), TypeError, "real numbers"),
    (np.zeros((20, 2), dtype=complex), TypeError, "real numbers, got dtype complex128"),
    (np.zeros((20, 2), dtype=bool), TypeError, "real numbers, got dtype bool"),
])
def test_window_values_are_validated(values, error, fragment):
    for build in (sliding_windows, WindowDataset):
        with pytest.raises(error) as info:
            build(values, 4, 2)
        assert fragment in str(info.value)


@PROPERTY
@given(row=st.integers(0, 19), value=st.sampled_from([np.nan, np.inf, -np.inf, 1e39]))
def test_window_dataset_refuses_non_finite_training_values(row, value):
    values = np.zeros((20, 2))
    values[row, 1] = value
    with pytest.raises(ValueError, match=f"first in row {row}"):
        WindowDataset(values, 4, 2)


# -- ltsf_split ------------------------------------------------------------------------------

def _split_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(n, 2)), columns=["a", "b"],
                        index=pd.date_range("2024-01-01", periods=n, freq="h"))


@PROPERTY
@given(n=st.integers(20, 120), lookback=st.integers(1, 10))
def test_ltsf_split_borders_and_train_only_scaler(n, lookback):
    data = _split_frame(n)
    before = data.copy(deep=True)
    split = ltsf_split(data, "ratio", lookback)
    n_train, n_test = int(n * 0.7), int(n * 0.2)
    assert split.borders["train"] == (0, n_train)
    assert split.borders["test"] == (n - n_test - lookback, n)
    np.testing.assert_allclose(split.scaler.mean_, data.iloc[:n_train].mean().to_numpy())
    pd.testing.assert_frame_equal(data, before)


@pytest.mark.parametrize("corruption, error, fragment", [
    ("nan", ValueError, "data holds 1 NaN values (columns ['b']"),
    ("inf", ValueError, "data holds 1 infinite values"),
    ("strings", TypeError, "non-numeric columns {'a'"),
    ("unsorted", ValueError, "not sorted"),
    ("duplicated", ValueError, "duplicated timestamps"),
    ("lookback_str", TypeError, "lookback must be an instance"),
    ("lookback_zero", ValueError, "lookback == 0"),
    ("lookback_too_long", ValueError, "longer than the train split"),
    ("rule", ValueError, "rule must be one of"),
    ("array", TypeError, "must be a DataFrame or a dataset name"),
])
def test_ltsf_split_rejects_bad_data_naming_it(corruption, error, fragment):
    data = _split_frame()
    rule, lookback = "ratio", 4
    if corruption == "nan":
        data.iloc[7, 1] = np.nan
    elif corruption == "inf":
        data.iloc[7, 0] = np.inf
    elif corruption == "strings":
        data["a"] = data["a"].astype(str)
    elif corruption == "unsorted":
        data = data.iloc[::-1]
    elif corruption == "duplicated":
        data = pd.concat([data.iloc[:1], data])
    elif corruption == "lookback_str":
        lookback = "4"
    elif corruption == "lookback_zero":
        lookback = 0
    elif corruption == "lookback_too_long":
        lookback = 50
    elif corruption == "rule":
        rule = "weekly"
    elif corruption == "array":
        data = data.to_numpy()
    before = copy.deepcopy(data)
    with pytest.raises(error) as info:
        ltsf_split(data, rule, lookback)
    assert fragment in str(info.value)
    if isinstance(data, pd.DataFrame):
        pd.testing.assert_frame_equal(data, before)


# -- names and arguments of the loaders ------------------------------------------------------

@PROPERTY
@given(name=st.one_of(st.text(max_size=12), st.integers(), st.none(), st.floats()))
def test_unknown_dataset_names_are_rejected_before_any_file_access(tmp_path_factory, name):
    from mola_ts.data import list_datasets

    if isinstance(name, str) and name in list_datasets():
        return
    home = tmp_path_factory.mktemp("names")
    with pytest.raises((ValueError, TypeError)) as info:
        load_dataset(name, data_home=home, download_if_missing=False)
    message = str(info.value)
    assert "unknown dataset" in message or "must be a str" in message
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("name", ["ETTh3", "etth1", "", "ILI"])
def test_fetch_ett_names_its_choices(name):
    with pytest.raises(ValueError, match="ETTh1, ETTh2, ETTm1, ETTm2"):
        fetch_ett(name)


def test_tep_is_not_a_single_table():
    with pytest.raises(ValueError, match="load_tep"):
        load_dataset("TEP")


@PROPERTY
@given(fault=st.one_of(st.integers(), st.text(max_size=3), st.floats(), st.booleans(),
                       st.none()),
       split=st.sampled_from(["train", "test", "val", "", "TRAIN"]))
def test_load_tep_validates_fault_and_split(fault, split):
    valid_fault = isinstance(fault, int) and not isinstance(fault, bool) and 0 <= fault <= 21
    if valid_fault and split in ("train", "test"):
        frame = load_tep(fault, split)
        assert frame.shape[1] == 52 and np.isfinite(frame.to_numpy()).all()
        return
    with pytest.raises((ValueError, TypeError)) as info:
        load_tep(fault, split)
    message = str(info.value)
    assert ("fault must be" in message) if not valid_fault else ("split must be" in message)
