"""Dataset loaders in scikit-learn's ``fetch_*`` style.

Every loader takes ``data_home=`` (see :func:`mola_ts.data.fetch.get_data_home`),
``download_if_missing=`` and ``as_frame=``. With ``as_frame=True`` (the default) it returns a
``pandas.DataFrame`` with a ``DatetimeIndex`` and one float column per variable; with
``as_frame=False`` a :class:`sklearn.utils.Bunch` with ``data`` (float64 ndarray), ``index``,
``feature_names`` and ``DESCR``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from .fetch import DataIntegrityError, _forget_recorded_hash, fetch_file
from .registry import DatasetInfo, get_dataset_info

__all__ = [
    "load_dataset",
    "fetch_ett",
    "fetch_weather",
    "fetch_electricity",
    "fetch_traffic",
    "fetch_exchange",
    "fetch_ili",
]


def _describe(info: DatasetInfo) -> str:
    return (
        f"{info.name}: {info.description}\nSource: {info.source}\nLicence: {info.licence}\n"
        f"Citation: {info.citation}\nFrequency: {info.frequency}; default lookback "
        f"{info.lookback}, horizons {list(info.horizons)}."
    )


def _last_line(path: os.PathLike) -> tuple[bytes, bytes, bool]:
    """(header line, last line, whether the file ends with a line break), read from the ends."""
    with open(path, "rb") as handle:
        header = handle.readline().rstrip(b"\r\n")
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 65536))
        tail = handle.read()
    ends = not size or tail[-1:] in (b"\n", b"\r")
    lines = tail.rstrip(b"\r\n").splitlines()
    return header, (lines[-1] if lines else b""), ends


def _check_last_row(path: os.PathLike, info: DatasetInfo, advice: str) -> None:
    """A file without a final line break: refuse a last row with missing or unreadable fields,
    accept a complete one with a warning (a cut inside its last number cannot be ruled out)."""
    header, last, ends = _last_line(path)
    if ends:
        return
    names = header.decode("utf-8", "replace").split(",")
    fields = last.decode("utf-8", "replace").split(",")
    problem = None
    if len(fields) != len(names):
        problem = f"{len(fields)} of its {len(names)} fields"
    elif any(not f.strip() for f in fields):
        problem = "empty fields"
    else:
        try:
            for name, value in zip(names, fields, strict=True):
                if name == info.date_column:
                    pd.Timestamp(value)
                else:
                    float(value)
        except ValueError:
            problem = f"a field that does not parse ({name}={value!r})"
    if problem is not None:
        raise DataIntegrityError(
            f"{path} does not end with a line break and its last row has {problem}: it was "
            f"cut off; {advice}")
    warnings.warn(
        f"{path} does not end with a line break; its last row is complete ({len(fields)} "
        "fields that parse), so the file is used, but without a published sha256 a cut inside "
        "its last number cannot be ruled out", UserWarning, stacklevel=2)


def _read_csv(path: os.PathLike, info: DatasetInfo, *, verified: bool = True) -> pd.DataFrame:
    """Parse a dataset CSV; anything malformed raises DataIntegrityError naming the file.

    A file whose sha256 is not published is only checked against its first use, so a copy that
    was already damaged then is caught here: unparseable text, an unreadable or missing date,
    non-numeric or missing values, duplicated or unsorted dates, a wrong row count, and (when
    ``verified`` is False: no published hash vouches for the file) a last line without its
    line break that lacks fields or does not parse, the mark of a file cut off mid-row. A last
    row without its line break that is complete is common in real CSVs: it is accepted with a
    warning (a cut inside its last number cannot be ruled out without a hash).
    """
    advice = "the file is corrupted or truncated: delete it and fetch it again"
    if not verified:
        _check_last_row(path, info, advice)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataIntegrityError(
            f"{path} cannot be parsed as CSV ({type(exc).__name__}: {first}); {advice}"
        ) from None
    if info.date_column not in frame.columns:
        raise DataIntegrityError(
            f"{path}: expected a {info.date_column!r} column, found {list(frame.columns)[:5]}; "
            f"{advice}"
        )
    if frame.empty:
        raise DataIntegrityError(f"{path} holds a header but no data rows; {advice}")
    raw_dates = frame.pop(info.date_column)
    dates = pd.to_datetime(raw_dates, errors="coerce")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if len(bad):
        raise DataIntegrityError(
            f"{path}: {len(bad)} unreadable or missing dates in {info.date_column!r}, first in "
            f"data row {bad[0] + 1} ({raw_dates.iloc[bad[0]]!r}); {advice}"
        )
    frame.index = pd.DatetimeIndex(dates, name="date")
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]) and \
                not pd.api.types.is_bool_dtype(frame[column]):
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        rows = np.flatnonzero(numbers.isna().to_numpy() & frame[column].notna().to_numpy())
        where = f", first in data row {rows[0] + 1} ({frame[column].iloc[rows[0]]!r})" \
            if len(rows) else ""
        raise DataIntegrityError(f"{path}: non-numeric column {column!r}{where}; {advice}")
    frame = frame.astype("float64")
    missing = frame.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing.any(axis=1))
        cols = [str(c) for c in frame.columns[missing.any(axis=0)]][:5]
        raise DataIntegrityError(
            f"{path}: {int(missing.sum())} missing values (columns {cols}, first in data row "
            f"{rows[0] + 1}, {frame.index[rows[0]]}); {advice}"
        )
    if frame.index.has_duplicates:
        raise DataIntegrityError(
            f"{path}: duplicated dates, e.g. {frame.index[frame.index.duplicated()][0]}; {advice}"
        )
    if not frame.index.is_monotonic_increasing:
        i = int(np.flatnonzero(np.diff(frame.index.asi8) < 0)[0])
        raise DataIntegrityError(
            f"{path}: dates out of order at data row {i + 2} ({frame.index[i + 1]} after "
            f"{frame.index[i]}); {advice}"
        )
    if info.n_rows is not None and len(frame) != info.n_rows:
        raise DataIntegrityError(
            f"{path}: expected {info.n_rows} rows, found {len(frame)}; {advice}")
    return frame


def _fetch_and_read(info: DatasetInfo, data_home, download_if_missing: bool) -> pd.DataFrame:
    """Fetch the file of a one-table dataset and parse it with every check; a file without a
    published hash has its hash recorded only when it passes them."""
    remote = info.files[0]
    verified = remote.sha256 is not None
    parsed: list[pd.DataFrame] = []

    def check(path: os.PathLike) -> None:
        parsed.append(_read_csv(path, info, verified=verified))

    try:
        path = fetch_file(remote, data_home=data_home, download_if_missing=download_if_missing,
                          check=check)
        if not parsed:  # a hashed file, or one whose hash was recorded before
            parsed.append(_read_csv(path, info, verified=verified))
    except DataIntegrityError:
        if not verified:
            # a hash recorded before would certify a broken copy: forget it
            _forget_recorded_hash(remote, data_home)
        raise
    return parsed[0]


def load_dataset(name: str, *, data_home: str | os.PathLike | None = None,
                 download_if_missing: bool = True, as_frame: bool = True
                 ) -> pd.DataFrame | Bunch:
    """Load any registered forecasting dataset by name (``"ETTh1"``, ``"ILI"``, ...).

    Examples
    --------
    >>> from mola_ts.data import load_dataset
    >>> df = load_dataset("ETTh1")  # doctest: +SKIP
    >>> df.shape  # doctest: +SKIP
    (17420, 7)
    """
    info = get_dataset_info(name)
    if info.split == "tep":
        raise ValueError("TEP is not a single table: use mola_ts.data.load_tep(fault, split)")
    frame = _fetch_and_read(info, data_home, download_if_missing)
    if as_frame:
        frame.attrs["dataset"] = info.name
        return frame
    return Bunch(
        data=frame.to_numpy(dtype=np.float64),
        index=frame.index,
        feature_names=list(frame.columns),
        DESCR=_describe(info),
    )


def fetch_ett(name: str = "ETTh1", **kwargs) -> pd.DataFrame | Bunch:
    """One of the ETT files: ``"ETTh1"``, ``"ETTh2"``, ``"ETTm1"`` or ``"ETTm2"``."""
    if name not in ("ETTh1", "ETTh2", "ETTm1", "ETTm2"):
        raise ValueError(f"name must be one of ETTh1, ETTh2, ETTm1, ETTm2; got {name!r}")
    return load_dataset(name, **kwargs)


def fetch_weather(**kwargs) -> pd.DataFrame | Bunch:
    """The Weather dataset (21 indicators, 10-minute)."""
    return load_dataset("Weather", **kwargs)


def fetch_electricity(**kwargs) -> pd.DataFrame | Bunch:
    """The Electricity dataset (321 clients, hourly)."""
    return load_dataset("Electricity", **kwargs)


def fetch_traffic(**kwargs) -> pd.DataFrame | Bunch:
    """The Traffic dataset (862 sensors, hourly)."""
    return load_dataset("Traffic", **kwargs)


def fetch_exchange(**kwargs) -> pd.DataFrame | Bunch:
    """The Exchange-rate dataset (8 currencies, daily)."""
    return load_dataset("Exchange", **kwargs)


def fetch_ili(**kwargs) -> pd.DataFrame | Bunch:
    """The influenza-like illness dataset (7 series, weekly)."""
    return load_dataset("ILI", **kwargs)
