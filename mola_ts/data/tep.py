"""Tennessee Eastman process (TEP) data: the Braatz files shipped in the ``bibmon`` package.

Files: ``d00.dat`` (normal operation, 500 samples, stored transposed as 52 x 500), ``dNN.dat``
(fault NN training run, 480 x 52, faulty from the first row) and ``dNN_te.dat`` (test run,
960 x 52; the fault enters after sample 160). Sampling every 3 minutes. Columns XMEAS(1..41)
then XMV(1..11). The protocol constants of the monitoring spec §5 live here too.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

__all__ = [
    "TEP_COLUMNS",
    "TEP_XMEAS",
    "TEP_XMV",
    "TEP_DESCRIPTIONS",
    "FAULT_ONSET",
    "TEP_FAULTS",
    "UNDETECTABLE_FAULTS",
    "DETECTABLE_FAULTS",
    "TEP_SAMPLING",
    "load_tep",
    "tep_fault_mask",
]

TEP_XMEAS = [f"XMEAS({i})" for i in range(1, 42)]
TEP_XMV = [f"XMV({i})" for i in range(1, 12)]
TEP_COLUMNS = TEP_XMEAS + TEP_XMV
_STREAM6 = "in the reactor feed (stream 6)"
_STREAM9 = "in the purge gas (stream 9)"
_STREAM11 = "in the product (stream 11)"
#: Short description of each of the 52 TEP variables (the process of Downs and Vogel, 1993):
#: measurements XMEAS(1..41), then manipulated variables XMV(1..11). Handy as the
#: ``descriptions`` of :func:`mola_ts.plotting.contribution_chart`.
TEP_DESCRIPTIONS: dict[str, str] = dict(zip(TEP_COLUMNS, [
    # XMEAS(1..22): continuous process measurements
    "A feed (stream 1)", "D feed (stream 2)", "E feed (stream 3)", "A and C feed (stream 4)",
    "Recycle flow (stream 8)", "Reactor feed rate (stream 6)", "Reactor pressure",
    "Reactor level", "Reactor temperature", "Purge rate (stream 9)",
    "Separator temperature", "Separator level", "Separator pressure",
    "Separator underflow (stream 10)", "Stripper level", "Stripper pressure",
    "Stripper underflow (stream 11)", "Stripper temperature", "Stripper steam flow",
    "Compressor work", "Reactor cooling water outlet temperature",
    "Separator cooling water outlet temperature",
    # XMEAS(23..41): sampled composition analysers
    *(f"Component {c} {_STREAM6}" for c in "ABCDEF"),
    *(f"Component {c} {_STREAM9}" for c in "ABCDEFGH"),
    *(f"Component {c} {_STREAM11}" for c in "DEFGH"),
    # XMV(1..11): manipulated variables
    "D feed flow valve (stream 2)", "E feed flow valve (stream 3)",
    "A feed flow valve (stream 1)", "A and C feed flow valve (stream 4)",
    "Compressor recycle valve", "Purge valve (stream 9)",
    "Separator liquid flow valve (stream 10)", "Stripper product flow valve (stream 11)",
    "Stripper steam valve", "Reactor cooling water flow", "Condenser cooling water flow",
], strict=True))
TEP_SAMPLING = pd.Timedelta(minutes=3)
FAULT_ONSET = 160  # in the test runs the fault enters after sample 160 (1-based samples 161..960)
TEP_FAULTS = tuple(range(1, 22))
UNDETECTABLE_FAULTS = (3, 9, 15)
DETECTABLE_FAULTS = tuple(f for f in TEP_FAULTS if f not in UNDETECTABLE_FAULTS)
_EXPECTED_ROWS = {"train": 480, "test": 960}
_ORIGIN = pd.Timestamp("2000-01-01 00:00:00")


def _tep_folder():
    try:
        import bibmon  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "the Tennessee Eastman files ship with the optional dependency 'bibmon'; install "
            "it with: pip install 'mola-ts[tep]'"
        ) from exc
    return resources.files("bibmon") / "tennessee_eastman"


def _parse(text: str, name: str) -> np.ndarray:
    """Whitespace-separated floats into a 2-D array; any malformed row is a clear error."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"TEP file {name}: rows have differing numbers of fields {sorted(widths)}")
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"TEP file {name}: non-numeric field ({exc})") from exc
    if not np.isfinite(values).all():
        raise ValueError(f"TEP file {name}: {int((~np.isfinite(values)).sum())} non-finite values")
    return values


def load_tep(fault: int = 0, split: str = "train", *, as_frame: bool = True
             ) -> pd.DataFrame | np.ndarray:
    """One run of the Braatz Tennessee Eastman data set.

    Parameters
    ----------
    fault : int
        0 for normal operation, 1..21 for the fault runs.
    split : {"train", "test"}
        ``"train"``: ``dNN.dat`` (d00: 500 samples; faults: 480 samples, faulty throughout).
        ``"test"``: ``dNN_te.dat`` (960 samples; the fault enters after sample 160).
    as_frame : bool
        DataFrame with columns XMEAS(1..41), XMV(1..11) and a 3-minute DatetimeIndex (default),
        or the raw (n_samples, 52) float64 array.

    Examples
    --------
    >>> from mola_ts.data import load_tep
    >>> load_tep(0, "train").shape
    (500, 52)
    >>> load_tep(1, "test").shape
    (960, 52)
    """
    if isinstance(fault, bool) or not isinstance(fault, (int, np.integer)):
        raise TypeError(f"fault must be an int in 0..21, got {type(fault).__name__}")
    if not 0 <= int(fault) <= 21:
        raise ValueError(f"fault must be in 0..21, got {fault}")
    if split not in _EXPECTED_ROWS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    name = f"d{int(fault):02d}{'_te' if split == 'test' else ''}.dat"
    path = _tep_folder() / name
    if not path.is_file():
        raise FileNotFoundError(f"TEP file {name} is missing from the installed bibmon package")
    values = _parse(path.read_text(), name)
    if values.shape[0] == len(TEP_COLUMNS) and values.shape[1] != len(TEP_COLUMNS):
        values = values.T  # d00.dat is stored as 52 x 500
    expected_rows = 500 if (fault == 0 and split == "train") else _EXPECTED_ROWS[split]
    if values.shape != (expected_rows, len(TEP_COLUMNS)):
        raise ValueError(
            f"TEP file {name}: expected shape ({expected_rows}, 52), found {values.shape}"
        )
    if not as_frame:
        return values
    index = pd.date_range(_ORIGIN, periods=len(values), freq=TEP_SAMPLING, name="time")
    frame = pd.DataFrame(values, index=index, columns=TEP_COLUMNS)
    frame.attrs.update({"dataset": "TEP", "fault": int(fault), "split": split})
    return frame


def tep_fault_mask(n_samples: int = 960, onset: int = FAULT_ONSET) -> np.ndarray:
    """Boolean mask of faulty samples of a test run: False for the first ``onset`` samples."""
    if n_samples < onset:
        raise ValueError(f"n_samples ({n_samples}) must be >= onset ({onset})")
    mask = np.zeros(n_samples, dtype=bool)
    mask[onset:] = True
    return mask
