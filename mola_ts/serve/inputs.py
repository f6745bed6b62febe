"""Samples posted to the service: JSON or CSV bodies into checked rows, with clear 4xx errors.

JSON bodies are one row (an object), a list of rows, or ``{"rows": [...]}``; a row holds its
time under ``"time"`` (or ``"timestamp"``) and one number (or ``null``, ``NaN``: missing) per
variable. CSV bodies have a header whose first column is ``time`` (or ``timestamp``); an empty
cell or ``NaN`` is missing. Times are ISO-8601; a time without a zone is UTC. A tag mapping
(historian tag -> the model's column) renames the posted names first.
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["InputError", "Batch", "parse_samples", "read_tag_map", "TIME_KEYS"]

TIME_KEYS = ("time", "timestamp")


class InputError(ValueError):
    """A request the service refuses, with its HTTP status (4xx) and a message naming why."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Batch:
    """Checked rows: UTC times (ns and ISO text) in increasing order and raw values (n, d)."""

    times_ns: np.ndarray
    times: list[str]
    values: np.ndarray


def read_tag_map(path: str | Path) -> dict[str, str]:
    """A tag mapping file: a JSON object ``{"tag": "column"}`` or a two-column CSV
    (``tag,column``, header optional)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"tag mapping {path}: not valid JSON ({exc})") from None
        if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise ValueError(f"tag mapping {path}: expected a JSON object of tag -> column "
                             "names (strings)")
    else:
        rows = [r for r in csv.reader(io.StringIO(text)) if r]
        if rows and [c.strip().lower() for c in rows[0]] == ["tag", "column"]:
            rows = rows[1:]
        if any(len(r) != 2 for r in rows):
            raise ValueError(f"tag mapping {path}: every CSV line must be 'tag,column'")
        mapping = {r[0].strip(): r[1].strip() for r in rows}
    targets = list(mapping.values())
    if len(set(targets)) != len(targets):
        raise ValueError(f"tag mapping {path}: two tags map to the same column")
    return mapping


def _times(raw: list, where: str) -> tuple[np.ndarray, list[str]]:
    for i, value in enumerate(raw):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where} {i}: the time must be an ISO-8601 string, got "
                             f"{value!r}")
    try:
        stamps = pd.to_datetime(raw, utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        for i, value in enumerate(raw):
            try:
                pd.to_datetime([value], utc=True, format="ISO8601")
            except (ValueError, TypeError, OverflowError):
                raise InputError(f"{where} {i}: {value!r} is not an ISO-8601 time "
                                 "(e.g. 2024-05-01T12:00:00Z)") from None
        raise InputError(f"{where}s: the times could not be read as ISO-8601") from None
    ns = stamps.as_unit("ns").asi8
    steps = np.diff(ns)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise InputError(f"{where} {i}: its time {stamps[i].isoformat()} is not after the "
                         f"previous row's {stamps[i - 1].isoformat()}: rows must be in "
                         "increasing time order, each time once")
    return ns.copy(), [t.isoformat() for t in stamps]


def _number(value, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def _columns_order(names: list[str], columns: list[str], tags: dict[str, str] | None,
                   where: str) -> list[int]:
    """For each model column, the position of the posted name that maps to it."""
    mapped = [tags.get(n, n) if tags else n for n in names]
    if len(set(mapped)) != len(mapped):
        dupes = sorted({m for m in mapped if mapped.count(m) > 1})
        raise InputError(f"{where}: the columns {dupes[:8]} are given twice")
    position = {m: i for i, m in enumerate(mapped)}
    missing = [c for c in columns if c not in position]
    unknown = [n for n, m in zip(names, mapped, strict=True) if m not in set(columns)]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing columns {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unknown:
            parts.append(f"unknown columns {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
        raise InputError(f"{where}: {' and '.join(parts)}; the model expects its "
                         f"{len(columns)} columns {columns[:4]}{' ...' if len(columns) > 4 else ''}"
                         " plus 'time'")
    return [position[c] for c in columns]


def _parse_json(body: bytes, columns: list[str], tags: dict | None, max_rows: int) -> Batch:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not valid JSON: {exc}", status=400) from None
    if isinstance(data, dict) and "rows" in data:
        data = data["rows"]
    rows = [data] if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError("the JSON body must be a row object, a list of row objects or "
                         "{\"rows\": [...]}")
    _check_count(len(rows), max_rows)
    key = next((k for k in TIME_KEYS if k in rows[0]), None)
    if key is None:
        raise InputError(f"row 0 has no time: give it under one of {list(TIME_KEYS)}")
    names = [k for k in rows[0] if k != key]
    order = _columns_order(names, columns, tags, "row 0")
    name_set = set(rows[0])
    pick = operator.itemgetter(*[names[pos] for pos in order])
    allowed = {float, int, type(None)}
    table = []
    raw_times = []
    for i, row in enumerate(rows):
        if len(row) != len(name_set) or row.keys() != name_set:
            diff = sorted(set(row) ^ name_set)
            raise InputError(f"row {i} has other keys than row 0 (differing: {diff[:8]})")
        raw_times.append(row[key])
        picked = pick(row) if len(order) > 1 else (pick(row),)
        if not set(map(type, picked)) <= allowed:  # a string, a boolean, a list...
            for j, value in enumerate(picked):
                _number(value, f"row {i}, column {names[order[j]]!r}")
        table.append(picked)
    values = np.array(table, dtype=np.float64)  # None -> NaN
    times_ns, times = _times(raw_times, "row")
    return Batch(times_ns, times, values)


def _parse_csv(body: bytes, columns: list[str], tags: dict | None, max_rows: int) -> Batch:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"the CSV body is not UTF-8 text: {exc}", status=400) from None
    try:
        lines = [r for r in csv.reader(io.StringIO(text)) if r]
    except csv.Error as exc:
        raise InputError(f"the body is not valid CSV: {exc}", status=400) from None
    if not lines:
        raise InputError("the CSV body is empty: expected a header and at least one row")
    header = [h.strip() for h in lines[0]]
    if header[0].lower() not in TIME_KEYS:
        raise InputError(f"the CSV header must start with a time column named one of "
                         f"{list(TIME_KEYS)}, got {header[0]!r}")
    body_rows = lines[1:]
    if not body_rows:
        raise InputError("the CSV body has a header but no rows")
    _check_count(len(body_rows), max_rows)
    names = header[1:]
    order = _columns_order(names, columns, tags, "the CSV header")
    for i, row in enumerate(body_rows):
        if len(row) != len(header):
            raise InputError(f"CSV row {i} has {len(row)} fields, the header {len(header)}")
    cells = np.array([r[1:] for r in body_rows], dtype=object)[:, order]
    cells = np.char.strip(cells.astype(str))
    cells[cells == ""] = "nan"
    try:
        values = cells.astype(np.float64)
    except ValueError:
        for i, j in np.ndindex(cells.shape):
            try:
                float(cells[i, j])
            except ValueError:
                raise InputError(f"CSV row {i}, column {names[order[j]]!r}: {cells[i, j]!r} "
                                 "is not a number (leave the cell empty for a missing "
                                 "value)") from None
        raise
    times_ns, times = _times([r[0].strip() for r in body_rows], "CSV row")
    return Batch(times_ns, times, values)


def _check_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise InputError("the body holds no rows")
    if n > max_rows:
        raise InputError(f"the body holds {n} rows, more than the limit of {max_rows} per "
                         "request: send smaller batches", status=413)


def parse_samples(body: bytes, content_type: str | None, columns: list[str],
                  tags: dict[str, str] | None = None, max_rows: int = 10_000) -> Batch:
    """Checked rows of a request body (``application/json`` or ``text/csv``).

    Raises :class:`InputError` (400 malformed, 413 too many rows, 415 other media types,
    422 wrong columns, values or times). Missing values come back as NaN (canonical bits,
    so equal rows compare equal byte for byte).
    """
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind in ("application/json", "text/json", ""):
        batch = _parse_json(body, columns, tags, max_rows)
    elif kind in ("text/csv", "application/csv"):
        batch = _parse_csv(body, columns, tags, max_rows)
    else:
        raise InputError(f"unsupported content type {kind!r}: send application/json or "
                         "text/csv", status=415)
    values = batch.values
    values[np.isnan(values)] = np.nan  # one NaN bit pattern
    return batch
