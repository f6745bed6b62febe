import numpy as np
import pytest

from mola_ts.data import TEP_COLUMNS, load_tep, tep_fault_mask


def test_tep_shapes_after_transposing_d00():
    assert load_tep(0, "train").shape == (500, 52)
    assert load_tep(1, "train").shape == (480, 52)
    assert load_tep(1, "test").shape == (960, 52)
    assert load_tep(0, "test").shape == (960, 52)


@pytest.mark.parametrize(
    "fault, split, first, second, last",
    [
        (0, "train", 0.24987, 0.25118, 19.999),  # d00.dat (stored transposed)
        (1, "train", 0.23766, 0.23591, 18.223),  # d01.dat
        (1, "test", 0.25025, 0.25135, 15.28),  # d01_te.dat
        (0, "test", 0.24889, 0.24904, 18.353),  # d00_te.dat
    ],
)
def test_tep_spot_values(fault, split, first, second, last):
    frame = load_tep(fault, split)
    assert frame.iloc[0]["XMEAS(1)"] == pytest.approx(first)
    assert frame.iloc[1]["XMEAS(1)"] == pytest.approx(second)
    assert frame.iloc[-1]["XMV(11)"] == pytest.approx(last)


def test_tep_columns_index_and_raw_array():
    frame = load_tep(5, "test")
    assert list(frame.columns) == TEP_COLUMNS
    assert frame.columns[0] == "XMEAS(1)" and frame.columns[41] == "XMV(1)"
    assert (frame.index[1] - frame.index[0]).total_seconds() == 180
    raw = load_tep(5, "test", as_frame=False)
    np.testing.assert_array_equal(raw, frame.to_numpy())


def test_tep_bad_arguments():
    with pytest.raises(ValueError, match="0..21"):
        load_tep(22)
    with pytest.raises(ValueError, match="split"):
        load_tep(1, "valid")
    with pytest.raises(TypeError):
        load_tep("1")


def test_tep_missing_bibmon_gives_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "bibmon":
            raise ImportError("no bibmon")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"mola-ts\[tep\]"):
        load_tep(0)


def test_fault_mask():
    mask = tep_fault_mask()
    assert mask.sum() == 800 and not mask[:160].any() and mask[160]
