"""Locating, downloading and verifying dataset files.

Data home: the ``data_home`` argument, else the environment variable ``MOLA_TS_DATA``, else the
user cache directory (``pooch.os_cache("mola_ts")``). A file is used only after its sha256 matches
the registry. A file whose hash is not known is hashed on first use and the hash is recorded in
``<data_home>/.mola_ts_hashes.json``; later uses are checked against that record.

Downloads go to a temporary ``.<name>.<random>.part`` file beside the target, are checked
against the expected sha256 there, and only then renamed onto the target (an atomic rename): a
killed or failed download never leaves a file under the target's name. A present file that is
empty or fails its hash check (a truncated copy, a partial download by another tool) is fetched
again when downloading is allowed, else reported with both hashes and what to do offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
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


def _forget_recorded_hash(remote: RemoteFile, data_home: str | os.PathLike | None = None) -> None:
    """Drop the hash recorded at first use of ``remote`` (a copy found unusable after all)."""
    home = get_data_home(data_home)
    records = _read_records(home)
    if records.pop(remote.path, None) is not None:
        try:
            _record_path(home).write_text(json.dumps(records, indent=2, sort_keys=True))
        except OSError:
            pass


def _expected_hash(home: Path, remote: RemoteFile) -> tuple[str | None, str]:
    """The hash to check against and where it comes from ("registry" or "first download")."""
    if remote.sha256 is not None:
        return remote.sha256, "registry"
    recorded = _read_records(home).get(remote.path)
    return recorded, "hash recorded at first use"


def _problem(path: Path, expected: str | None, origin: str) -> tuple[str | None, str | None]:
    """``(problem, actual sha256)`` of a present file: None when it may be used."""
    if path.stat().st_size == 0:
        return "is empty (0 bytes): an interrupted or failed download", None
    actual = file_sha256(path)
    if expected is not None and actual != expected:
        return (f"has a sha256 mismatch (expected {expected} from the {origin}, got {actual}): "
                "the file is truncated, corrupted or a different version"), actual
    return None, actual


def _http_get(url: str, destination: Path) -> None:
    """Write the content at ``url`` to ``destination`` (the only network access here)."""
    import pooch

    pooch.HTTPDownloader(progressbar=False)(url, str(destination), None)


_STALE_PART_SECONDS = 3600.0


def _partial_files(target: Path) -> list[Path]:
    """Leftover temporary files of interrupted downloads of ``target``."""
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f".{target.name}.*.part"))


def _remove_stale_partials(target: Path) -> None:
    # only old ones: a recent one may belong to a download running in another process
    now = time.time()
    for part in _partial_files(target):
        try:
            if now - part.stat().st_mtime > _STALE_PART_SECONDS:
                part.unlink()
        except OSError:
            pass


def _download(remote: RemoteFile, target: Path, expected: str | None, origin: str) -> str:
    """Download ``remote`` to a temporary file, check it, rename it onto ``target``.

    Returns the file's sha256. Nothing is written under ``target``'s name unless the whole
    file arrived and matches ``expected`` (when known).
    """
    if remote.url is None:
        raise DataNotFoundError(
            f"{target} is missing or unusable and the registry has no URL for it; copy a good "
            f"file there (or point {DATA_HOME_ENV} at a folder holding '{remote.path}')"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        try:
            _http_get(remote.url, tmp)
        except Exception as exc:  # network errors of every kind, an interrupted transfer
            raise DataNotFoundError(
                f"{target} is missing or unusable and downloading it from {remote.url} failed "
                f"({type(exc).__name__}: {exc}). Without internet, copy the file to {target} "
                f"(or point {DATA_HOME_ENV} at a folder holding '{remote.path}')."
            ) from exc
        problem, actual = _problem(tmp, expected, origin)
        if problem is not None:
            raise DataIntegrityError(
                f"downloaded {remote.url} for {target}, but the download {problem}; it was "
                f"not used and {target} was left as it was. Try again later, or copy a good "
                "file there."
            )
        os.replace(tmp, target)
        return actual
    finally:
        tmp.unlink(missing_ok=True)


def fetch_file(remote: RemoteFile, data_home: str | os.PathLike | None = None,
               download_if_missing: bool = True, check=None) -> Path:
    """Path of a verified local copy of ``remote``, downloading it when allowed.

    A present file that is empty or whose sha256 differs from the expected one is downloaded
    again when ``download_if_missing`` is True (with a warning naming both hashes). ``check``,
    a callable given the path, judges the content of a file without a known hash before its
    hash is recorded: whatever it raises propagates and nothing is recorded (the loaders pass
    their CSV checks, so a refused file never leaves a recorded hash behind).

    Raises
    ------
    DataNotFoundError
        The file is absent and ``download_if_missing`` is False or the download failed; the
        message says where to put the file.
    DataIntegrityError
        The file is empty or its sha256 differs from the registry (or from the hash recorded
        at first use), and it may not or could not be downloaded again; or a download did not
        match. The message names the file, the expected and the actual hash and what to do.
    """
    home = get_data_home(data_home)
    target = home / remote.path
    expected, origin = _expected_hash(home, remote)
    if target.is_dir():
        raise DataIntegrityError(f"{target} is a directory, not the data file '{remote.path}'")
    if not target.exists():
        if not download_if_missing:
            partial = _partial_files(target)
            hint = (f" The partial download {partial[0].name} beside it is incomplete and is "
                    "not used; delete it.") if partial else ""
            raise DataNotFoundError(
                f"{target} does not exist and download_if_missing=False. Put the file there "
                f"(or point {DATA_HOME_ENV} / data_home at a folder holding '{remote.path}')."
                + hint
            )
        actual = _download(remote, target, expected, origin)
    else:
        problem, actual = _problem(target, expected, origin)
        if problem is not None:
            if not download_if_missing or remote.url is None:
                raise DataIntegrityError(
                    f"{target} {problem}; it was not used. Delete it and fetch it again "
                    "(`mola-ts datasets fetch NAME`, or download_if_missing=True); without "
                    f"internet copy a good file to {target}."
                )
            warnings.warn(f"{target} {problem}; downloading it again", UserWarning,
                          stacklevel=2)
            actual = _download(remote, target, expected, origin)
    if expected is None:
        if check is not None:
            check(target)
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
