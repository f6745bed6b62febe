"""Save/load of every estimator: round trips, and clear errors for files that must not load.

Files of a newer format version, truncated or zero-byte files, files with flipped bytes or an
edited payload (the payload's sha256 is stored in the file), files of another estimator class
(forecasters and monitors both ways), foreign files, missing paths and directories: each gets a
clear error (EstimatorFileError, a ValueError, naming the file and the problem; FileNotFoundError
/ IsADirectoryError for paths). A round trip gives bit-identical predictions. Version-1 files
(before the hash) still load. The rows of docs/reliability.md point at these tests.
"""

from __future__ import annotations

import hashlib
import io
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SMALL_BACKBONE

from mola_ts import persistence
from mola_ts.forecast import (
    ClassicalForecaster,
    DirectForecaster,
    DLinearForecaster,
    MoLAForecaster,
    SeasonalNaiveForecaster,
)
from mola_ts.monitor import DPCAMonitor, MOLAMonitor, PCAMonitor
from mola_ts.persistence import FORMAT_VERSION, MAGIC, EstimatorFileError

SMALL = SMALL_BACKBONE
FILES = settings(max_examples=15, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow,
                                        HealthCheck.function_scoped_fixture])

FORECASTERS = {
    "mola": lambda: MoLAForecaster(16, 4, segment_length=2, backbone_params=SMALL, n_experts=2,
                                   rank=2, epochs=1, foundation_epochs=1, batch_size=32),
    "direct": lambda: DirectForecaster(16, 4, backbone_params=SMALL, epochs=1, batch_size=32,
                                       n_ensemble=2, uncertainty="laplace"),
    "dlinear": lambda: DLinearForecaster(16, 4, kernel_size=5, epochs=1, batch_size=32),
    "snaive": lambda: SeasonalNaiveForecaster(4),
    "ets": lambda: ClassicalForecaster(4, lookback=12),
}
MONITORS = {
    "pca": lambda: PCAMonitor(n_components=2),
    "dpca": lambda: DPCAMonitor(n_lags=1, n_components=2),
    "mola_monitor": lambda: MOLAMonitor(blocks={"b1": ["a", "b"], "b2": ["c", "d"]}, window=3,
                                        hidden_size=4, code_size=2, epochs=1, random_state=0),
}


def _series(n: int = 64, columns=("a", "b", "c", "d"), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, len(columns)))
    e = rng.normal(size=(n, len(columns)))
    for t in range(1, n):
        x[t] = 0.6 * x[t - 1] + e[t]
    x[:, 1:] += 0.5 * x[:, :1]
    return pd.DataFrame(x, columns=list(columns),
                        index=pd.date_range("2024-01-01", periods=n, freq="h"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every estimator fitted once and saved: {kind: (estimator, path)}."""
    folder = tmp_path_factory.mktemp("saved")
    y = _series()
    out = {}
    for kind, make in {**FORECASTERS, **MONITORS}.items():
        estimator = make().fit(y)
        out[kind] = (estimator, estimator.save(folder / f"{kind}.pt"))
    return out


def _outputs(estimator) -> list[np.ndarray]:
    """What a fitted estimator computes: forecasts (own end and a new context) or scores."""
    y = _series(40, seed=3)
    if hasattr(estimator, "horizon"):
        outs = [estimator.predict(), estimator.predict(y_context=y)]
        if getattr(estimator, "uncertainty", None) is not None:
            outs.append(estimator.predict_interval([0.5, 0.9]))
        return [np.asarray(o.to_numpy()) for o in outs] + [np.asarray(outs[0].index)]
    return [np.asarray(estimator.score_samples(y)), np.asarray(estimator.predict(y))]


def _same(before: list[np.ndarray], after: list[np.ndarray]) -> None:
    """Bit-identical outputs (NaN where a monitor has no score yet counts as equal)."""
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _rewrite(path, target, change) -> None:
    """Write ``path``'s file to ``target`` after ``change(outer, inner)`` edits its dicts; the
    payload hash is recomputed (a consistent file, as a newer mola_ts would write)."""
    outer = torch.load(path, weights_only=True)
    inner = torch.load(io.BytesIO(outer["payload"].numpy().tobytes()), weights_only=True)
    change(outer, inner)
    buffer = io.BytesIO()
    torch.save(inner, buffer)
    raw = buffer.getvalue()
    outer["payload"] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    outer["payload_sha256"] = hashlib.sha256(raw).hexdigest()
    torch.save(outer, target)


def _refused(call, *fragments) -> EstimatorFileError:
    with pytest.raises(EstimatorFileError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


@pytest.mark.parametrize("kind", [*FORECASTERS, *MONITORS])
def test_round_trip_gives_identical_outputs(saved, kind):
    estimator, path = saved[kind]
    loaded = type(estimator).load(path)
    assert loaded.get_params(deep=False).keys() == estimator.get_params(deep=False).keys()
    _same(_outputs(estimator), _outputs(loaded))


def test_file_holds_format_version_params_json_and_payload_hash(saved):
    _, path = saved["direct"]
    outer = torch.load(path, weights_only=True)
    assert outer["magic"] == MAGIC and outer["format_version"] == FORMAT_VERSION == 2
    raw = outer["payload"].numpy().tobytes()
    assert outer["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    inner = torch.load(io.BytesIO(raw), weights_only=True)
    assert '"lookback": 16' in inner["params_json"]


@pytest.mark.parametrize("kind", ["direct", "pca"])
def test_newer_format_version_is_refused(saved, tmp_path, kind):
    estimator, path = saved[kind]

    def newer(outer, inner):
        outer["format_version"] = FORMAT_VERSION + 1

    _rewrite(path, tmp_path / "newer.pt", newer)
    _refused(lambda: type(estimator).load(tmp_path / "newer.pt"),
             f"format version {FORMAT_VERSION + 1}", "upgrade mola_ts", "newer.pt")


@pytest.mark.parametrize("kind", ["mola", "snaive", "mola_monitor"])
@FILES
@given(fraction=st.floats(0.0, 0.999))
def test_truncated_file_is_refused(saved, tmp_path, kind, fraction):
    estimator, path = saved[kind]
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * fraction)])
    _refused(lambda: type(estimator).load(cut), str(cut), "not a readable mola_ts estimator")


@pytest.mark.parametrize("kind", ["direct", "ets", "pca"])
def test_flipped_payload_byte_is_detected_by_the_hash(saved, tmp_path, kind):
    estimator, path = saved[kind]
    data = bytearray(path.read_bytes())
    raw = torch.load(path, weights_only=True)["payload"].numpy().tobytes()
    start = bytes(data).find(raw[:256])
    assert start > 0  # the payload is stored verbatim inside the file
    data[start + len(raw) // 2] ^= 0x01
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    _refused(lambda: type(estimator).load(bad), str(bad), "corrupted or was modified",
             "sha256")


@pytest.mark.parametrize("kind", ["dlinear", "dpca"])
@FILES
@given(where=st.floats(0.0, 0.9999), mask=st.integers(1, 255))
def test_any_flipped_byte_is_refused_or_harmless(saved, tmp_path, kind, where, mask):
    """A byte flipped anywhere: a clear EstimatorFileError, or (zip padding, metadata) a model
    that computes exactly what the saved one did. Never a silently different model."""
    estimator, path = saved[kind]
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= mask
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    try:
        loaded = type(estimator).load(bad)
    except EstimatorFileError as exc:
        assert str(bad) in str(exc)
    else:
        _same(_outputs(estimator), _outputs(loaded))


def test_edited_payload_with_the_old_hash_is_refused(saved, tmp_path):
    estimator, path = saved["snaive"]
    outer = torch.load(path, weights_only=True)
    inner = torch.load(io.BytesIO(outer["payload"].numpy().tobytes()), weights_only=True)
    inner["params_json"] = inner["params_json"].replace('"horizon": 4', '"horizon": 5')
    buffer = io.BytesIO()
    torch.save(inner, buffer)
    outer["payload"] = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    torch.save(outer, tmp_path / "edited.pt")  # payload_sha256 left as it was
    _refused(lambda: SeasonalNaiveForecaster.load(tmp_path / "edited.pt"),
             "modified after saving", outer["payload_sha256"])


@pytest.mark.parametrize("kind, loader", [
    ("mola", DirectForecaster),          # a MoLA file holds a DirectForecaster foundation
    ("dlinear", DirectForecaster),       # DLinearForecaster subclasses DirectForecaster
    ("direct", DLinearForecaster),
    ("snaive", ClassicalForecaster),
    ("pca", MoLAForecaster),             # a monitor file loaded as a forecaster
    ("mola_monitor", DirectForecaster),
    ("direct", PCAMonitor),              # a forecaster file loaded as a monitor
    ("pca", DPCAMonitor),
    ("mola", MOLAMonitor),
])
def test_file_of_another_estimator_class_is_refused(saved, kind, loader):
    estimator, path = saved[kind]
    held = type(estimator).__name__
    _refused(lambda: loader.load(path), f"holds a '{held}', not a '{loader.__name__}'",
             f"{held}.load", str(path))


def test_missing_path_and_directory_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        DirectForecaster.load(tmp_path / "nope.pt")
    assert str(tmp_path / "nope.pt") in str(info.value)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        PCAMonitor.load(tmp_path)


@pytest.mark.parametrize("content, fragment", [
    (b"", "not a readable"),
    (b'{"magic": "mola_ts.estimator"}', "not a readable"),
    (pickle.dumps({"magic": MAGIC, "format_version": 2}, protocol=2), "not a readable"),
])
def test_foreign_files_are_refused(tmp_path, content, fragment):
    (tmp_path / "foreign.pt").write_bytes(content)
    _refused(lambda: SeasonalNaiveForecaster.load(tmp_path / "foreign.pt"), fragment)


def test_plain_torch_files_lack_the_magic_marker(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state_dict.pt")
    _refused(lambda: DirectForecaster.load(tmp_path / "state_dict.pt"), "magic marker")


@FILES
@given(content=st.binary(min_size=1, max_size=4096))
def test_random_bytes_are_refused(tmp_path, content):
    (tmp_path / "random.pt").write_bytes(content)
    _refused(lambda: SeasonalNaiveForecaster.load(tmp_path / "random.pt"))


def test_parameters_or_state_that_do_not_fit_the_class_are_refused(saved, tmp_path):
    _, path = saved["direct"]

    def unknown_param(outer, inner):
        inner["params_json"] = inner["params_json"][:-1] + ', "no_such_param": 1}'

    _rewrite(path, tmp_path / "params.pt", unknown_param)
    _refused(lambda: DirectForecaster.load(tmp_path / "params.pt"),
             "saved parameters do not fit DirectForecaster", "no_such_param")

    def wrong_width(outer, inner):
        params = inner["params_json"].replace('"d_model": 8', '"d_model": 16')
        inner["params_json"] = params

    _rewrite(path, tmp_path / "state.pt", wrong_width)
    _refused(lambda: DirectForecaster.load(tmp_path / "state.pt"),
             "saved state does not fit DirectForecaster")


def test_version_1_files_still_load(saved, tmp_path):
    """Files written before the payload hash (format 1: params and state in the outer dict)."""
    estimator, path = saved["dlinear"]
    outer = torch.load(path, weights_only=True)
    inner = torch.load(io.BytesIO(outer["payload"].numpy().tobytes()), weights_only=True)
    old = {"magic": MAGIC, "format_version": 1, "class": outer["class"], **inner}
    torch.save(old, tmp_path / "v1.pt")
    loaded = DLinearForecaster.load(tmp_path / "v1.pt")
    _same(_outputs(estimator), _outputs(loaded))


def test_save_to_a_directory_or_a_missing_folder_is_named(saved, tmp_path):
    estimator, _ = saved["snaive"]
    with pytest.raises(IsADirectoryError, match="is a directory"):
        estimator.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        estimator.save(tmp_path / "no" / "such" / "m.pt")


def test_interrupted_save_keeps_the_previous_file_and_leaves_no_partial(saved, tmp_path,
                                                                         monkeypatch):
    estimator, _ = saved["snaive"]
    target = estimator.save(tmp_path / "model.pt")
    good = target.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        if isinstance(f, io.BytesIO):  # the in-memory payload: fine
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        with open(f, "wb") as handle:  # half the file, then the process "dies"
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(persistence.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        estimator.save(target)
    monkeypatch.undo()
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    SeasonalNaiveForecaster.load(target)
