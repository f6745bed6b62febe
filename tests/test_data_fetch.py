import shutil

import pytest

from mola_ts.cli import main
from mola_ts.data import (
    DataIntegrityError,
    DataNotFoundError,
    RemoteFile,
    fetch_file,
    get_data_home,
    get_dataset_info,
    load_dataset,
)


@pytest.fixture
def tmp_home(tmp_path, data_home):
    """A writable data home holding a copy of the offline ETTh1 file."""
    (tmp_path / "ett").mkdir()
    shutil.copy(data_home / "ett" / "ETTh1.csv", tmp_path / "ett" / "ETTh1.csv")
    return tmp_path


def test_data_home_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MOLA_TS_DATA", str(tmp_path / "env"))
    assert get_data_home() == tmp_path / "env"
    assert get_data_home(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("MOLA_TS_DATA")
    assert "mola_ts" in str(get_data_home())


def test_loader_returns_frame_with_datetime_index(tmp_home):
    frame = load_dataset("ETTh1", data_home=tmp_home, download_if_missing=False)
    assert frame.shape == (17420, 7)
    assert str(frame.index.dtype).startswith("datetime64")
    assert frame.index[0].isoformat() == "2016-07-01T00:00:00"
    assert list(frame.columns) == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    bunch = load_dataset("ETTh1", data_home=tmp_home, as_frame=False)
    assert bunch.data.shape == (17420, 7) and bunch.feature_names[-1] == "OT"


def test_hash_mismatch_names_file_expected_and_actual(tmp_home):
    path = tmp_home / "ett" / "ETTh1.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a truncated download
    expected = get_dataset_info("ETTh1").files[0].sha256
    with pytest.raises(DataIntegrityError) as info:
        load_dataset("ETTh1", data_home=tmp_home, download_if_missing=False)
    message = str(info.value)
    assert "ETTh1.csv" in message and expected in message and "got " in message


def test_missing_file_offline_says_where_to_put_it(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("ETTh2", data_home=tmp_path, download_if_missing=False)
    assert str(tmp_path / "ett" / "ETTh2.csv") in str(info.value)


def test_failed_download_says_where_to_put_the_file(tmp_path):
    remote = RemoteFile("x/data.csv", "http://127.0.0.1:9/data.csv", None)
    with pytest.raises(DataNotFoundError) as info:
        fetch_file(remote, data_home=tmp_path)
    assert str(tmp_path / "x" / "data.csv") in str(info.value)


def test_unknown_hash_is_recorded_then_enforced(tmp_path):
    (tmp_path / "x").mkdir()
    target = tmp_path / "x" / "data.csv"
    target.write_text("date,a\n2020-01-01,1\n")
    remote = RemoteFile("x/data.csv", None, None)
    with pytest.warns(UserWarning, match="no published sha256"):
        fetch_file(remote, data_home=tmp_path)
    assert "x/data.csv" in (tmp_path / ".mola_ts_hashes.json").read_text()
    target.write_text("date,a\n2020-01-01,2\n")
    with pytest.raises(DataIntegrityError, match="recorded at first use"):
        fetch_file(remote, data_home=tmp_path)


def test_cli_verify_exit_codes(tmp_home, capsys):
    assert main(["datasets", "verify", "ETTh1", "--data-home", str(tmp_home)]) == 0
    path = tmp_home / "ett" / "ETTh1.csv"
    path.write_bytes(path.read_bytes() + b"\n")
    assert main(["datasets", "verify", "--data-home", str(tmp_home)]) == 1
    assert "mismatch" in capsys.readouterr().out


def test_cli_list_and_unknown_dataset(capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("ETTh1", "ETTm2", "Weather", "Electricity", "Traffic", "Exchange", "ILI", "TEP"):
        assert name in out
    assert main(["datasets", "fetch", "NoSuchData"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
