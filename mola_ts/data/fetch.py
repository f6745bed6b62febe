"""Locating, downloading and verifying dataset files.

Data home: the ``data_home`` argument, else the environment variable ``MOLA_TS_DATA``, else the
user cache directory (``pooch.os_cache("mola_ts")``). A file is used only after its sha256 matches
the registry. A file whose hash is not known is hashed on first use and the hash is recorded in
``<data_home>/.mola_ts_hashes.json``; later uses are checked against that record.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from .registry import DatasetInfo, RemoteFile, get_dataset_info

__all__ = [
    "DATA_HOME_ENV",
    "DataIntegrityError",
    "DataNotFoundError",
    "get_data_home",
    "file_sha256",
    "fetch_file",
    "verify_dataset",
]

DATA_HOME_ENV = "MOLA_TS_DATA"
_RECORD_NAME = ".mola_ts_hashes.json"
_warned_unknown: set[str] = set()


class DataIntegrityError(ValueError):
    """A data file exists but its content does not match the expected sha256."""


class DataNotFoundError(FileNotFoundError):
    """A data file is missing and could not (or may not) be downloaded."""


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The folder holding the dataset files (argument > ``MOLA_TS_DATA`` > user cache)."""
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_ENV) or None
    if data_home is None:
        import pooch

        data_home = pooch.os_cache("mola_ts")
    return Path(data_home).expanduser()


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record_path(home: Path) -> Path:
    return home / _RECORD_NAME


def _read_records(home: Path) -> dict[str, str]:
    path = _record_path(home)
    if not path.exists():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataIntegrityError(
            f"the hash record {path} is unreadable ({exc}); delete it to re-record the hashes"
        ) from exc
    if not isinstance(records, dict):
        raise DataIntegrityError(f"the hash record {path} is not a JSON object; delete it")
    return records


def _write_record(home: Path, rel_path: str, digest: str) -> None:
    records = _read_records(home)
    records[rel_path] = digest
    try:
        _record_path(home).write_text(json.dumps(records, indent=2, sort_keys=True))
    except OSError:  # a read-only data home (a shared mirror) is fine: we only lose the record
        pass


def _expected_hash(home: Path, remote: RemoteFile) -> tuple[str | None, str]:
    """The hash to check against and where it comes from ("registry" or "first download")."""
    if remote.sha256 is not None:
        return remote.sha256, "registry"
    recorded = _read_records(home).get(remote.path)
    return recorded, "hash recorded at first use"


def _check(path: Path, expected: str | None, origin: str) -> str:
    actual = file_sha256(path)
    if expected is not None and actual != expected:
        raise DataIntegrityError(
            f"{path}: sha256 mismatch (expected {expected} from the {origin}, got {actual}). "
            "The file is corrupted, truncated or a different version; it was not used. "
            "Delete it and fetch it again (`mola-ts datasets fetch NAME`)."
        )
    return actual


def _download(remote: RemoteFile, target: Path, expected: str | None) -> None:
    import pooch

    if remote.url is None:
        raise DataNotFoundError(f"{target} is missing and the registry has no URL for it")
    target.parent.mkdir(parents=True, exist_ok=True)
    known = f"sha256:{expected}" if expected else None
    try:
        pooch.retrieve(
            url=remote.url, known_hash=known, fname=target.name, path=target.parent,
            progressbar=False,
        )
    except ValueError as exc:  # pooch's hash mismatch: the partial file is removed by pooch
        raise DataIntegrityError(
            f"downloaded {remote.url} but its sha256 does not match {expected}: {exc}"
        ) from exc
    except Exception as exc:  # network errors of every kind
        raise DataNotFoundError(
            f"{target} is missing and downloading it from {remote.url} failed "
            f"({type(exc).__name__}: {exc}). Without internet, copy the file to {target} "
            f"(or point {DATA_HOME_ENV} at a folder holding '{remote.path}')."
        ) from exc


def fetch_file(remote: RemoteFile, data_home: str | os.PathLike | None = None,
               download_if_missing: bool = True) -> Path:
    """Path of a verified local copy of ``remote``, downloading it when allowed.

    Raises
    ------
    DataNotFoundError
        The file is absent and ``download_if_missing`` is False or the download failed; the
        message says where to put the file.
    DataIntegrityError
        The file's sha256 differs from the registry (or from the hash recorded at first use).
    """
    home = get_data_home(data_home)
    target = home / remote.path
    expected, origin = _expected_hash(home, remote)
    if not target.exists():
        if not download_if_missing:
            raise DataNotFoundError(
                f"{target} does not exist and download_if_missing=False. Put the file there "
                f"(or point {DATA_HOME_ENV} / data_home at a folder holding '{remote.path}')."
            )
        _download(remote, target, expected)
    actual = _check(target, expected, origin)
    if expected is None:
        _write_record(home, remote.path, actual)
        if remote.path not in _warned_unknown:
            _warned_unknown.add(remote.path)
            warnings.warn(
                f"{remote.path}: no published sha256 is known; recorded {actual} from this copy "
                "and will check later uses against it.",
                UserWarning,
                stacklevel=3,
            )
    return target


def verify_dataset(name: str | DatasetInfo, data_home: str | os.PathLike | None = None
                   ) -> list[tuple[str, str, str | None, str | None]]:
    """Check every file of a dataset that is present; nothing is downloaded.

    Returns one ``(path, status, expected, actual)`` row per file, status being ``"ok"``,
    ``"mismatch"``, ``"missing"`` or ``"unknown-hash"`` (present, no hash to check against).
    """
    info = name if isinstance(name, DatasetInfo) else get_dataset_info(name)
    home = get_data_home(data_home)
    rows = []
    for remote in info.files:
        target = home / remote.path
        expected, _ = _expected_hash(home, remote)
        if not target.exists():
            rows.append((str(target), "missing", expected, None))
            continue
        actual = file_sha256(target)
        if expected is None:
            status = "unknown-hash"
        else:
            status = "ok" if actual == expected else "mismatch"
        rows.append((str(target), status, expected, actual))
    return rows
