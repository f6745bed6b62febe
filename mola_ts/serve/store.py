"""The service's durable history: one SQLite database in the state directory.

Tables: ``meta`` (the model the directory belongs to), ``samples`` (every accepted row: its
UTC time, raw values and the stream's result), ``alarms`` (each alarm episode: raised, cleared,
acknowledged) and ``stream`` (the stream's state after the last accepted batch). A batch is
accepted in one transaction (rows, alarm changes and the new stream state together) committed
with ``synchronous=FULL`` in WAL mode, so a killed service restarts at a batch boundary: no
row lost, none counted twice.

The stream state is stored exactly: arrays as their raw bytes (base64 in JSON), floats in
Python's round-trip ``repr``, so a restarted stream continues bit for bit.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["StateStore", "StateDirError", "encode_state", "decode_state", "DB_NAME"]

DB_NAME = "mola-ts-serve.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY,
    time_ns INTEGER NOT NULL UNIQUE,
    time TEXT NOT NULL,
    raw BLOB NOT NULL,
    score REAL,
    alarm INTEGER NOT NULL,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY,
    raised_seq INTEGER NOT NULL,
    raised_time TEXT NOT NULL,
    cleared_seq INTEGER,
    cleared_time TEXT,
    acknowledged_at TEXT,
    acknowledged_by TEXT
);
CREATE TABLE IF NOT EXISTS stream (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL);
"""


class StateDirError(ValueError):
    """The state directory cannot be used with this model (written for another one, or not a
    database of this service)."""


# ---------------------------------------------------------------------- exact state codec
def _enc(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        if data.dtype.kind not in "biuf":
            raise TypeError(f"cannot store a stream state array of dtype {data.dtype}")
        return {"__nd__": base64.b64encode(data.tobytes()).decode("ascii"),
                "dtype": data.dtype.str, "shape": list(data.shape)}
    if isinstance(value, np.generic):
        return _enc(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_enc(v) for v in value]}
    if isinstance(value, list):
        return [_enc(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[k, _enc(v)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a stream state value of type {type(value).__name__}")


def _dec(value: Any) -> Any:
    if isinstance(value, list):
        return [_dec(v) for v in value]
    if isinstance(value, dict):
        if "__nd__" in value:
            raw = base64.b64decode(value["__nd__"])
            return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(
                value["shape"]).copy()
        if "__float__" in value:
            return float(value["__float__"])
        if "__tuple__" in value:
            return tuple(_dec(v) for v in value["__tuple__"])
        return {k: _dec(v) for k, v in value["__dict__"]}
    return value


def encode_state(state: dict) -> str:
    """A stream state (``MonitorStream.get_state()``) as JSON text, exactly."""
    return json.dumps(_enc(state), separators=(",", ":"))


def decode_state(text: str) -> dict:
    """The state written by :func:`encode_state`, bit for bit."""
    return _dec(json.loads(text))


# ---------------------------------------------------------------------- the store
class StateStore:
    """The SQLite database of one service (not thread-safe: the service serialises access)."""

    def __init__(self, state_dir: str | Path, fingerprint: dict[str, Any]):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / DB_NAME
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StateDirError(f"{self.path} is not a database of mola-ts serve ({exc}); "
                                "give another --state-dir") from None
        self._check_model(fingerprint)

    def _check_model(self, fingerprint: dict[str, Any]) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        wanted = json.dumps(fingerprint, sort_keys=True)
        if not meta:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                    [("model", wanted), ("schema", str(SCHEMA_VERSION))])
            return
        if meta.get("schema") != str(SCHEMA_VERSION):
            raise StateDirError(f"{self.path} has schema version {meta.get('schema')}, this "
                                f"mola-ts writes {SCHEMA_VERSION}")
        if meta.get("model") != wanted:
            stored = json.loads(meta.get("model", "{}"))
            raise StateDirError(
                f"the state directory {self.state_dir} was written for another model "
                f"({stored.get('monitor_class')}, file sha256 {stored.get('sha256', '?')[:12]}"
                f"...), not for this one ({fingerprint.get('monitor_class')}, sha256 "
                f"{fingerprint.get('sha256', '?')[:12]}...): give each model its own "
                "--state-dir")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ reads
    def stream_state(self) -> dict | None:
        row = self.db.execute("SELECT state FROM stream WHERE id = 1").fetchone()
        return None if row is None else decode_state(row[0])

    def last_sample(self) -> tuple[int, int] | None:
        """``(seq, time_ns)`` of the last accepted row, or None."""
        return self.db.execute(
            "SELECT seq, time_ns FROM samples ORDER BY seq DESC LIMIT 1").fetchone()

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    def samples_at(self, times_ns: list[int]) -> dict[int, tuple[bytes, str]]:
        """Stored ``(raw, result)`` of the rows at these times (absent times left out)."""
        out = {}
        for start in range(0, len(times_ns), 500):
            part = times_ns[start:start + 500]
            marks = ",".join("?" * len(part))
            for t, raw, result in self.db.execute(
                    f"SELECT time_ns, raw, result FROM samples WHERE time_ns IN ({marks})", part):
                out[t] = (raw, result)
        return out

    def history(self, start_ns: int, end_ns: int, max_points: int) -> list[tuple]:
        """``(seq, time, score, alarm, result)`` of the rows in ``[start, end]``; over
        ``max_points`` rows, the row of the largest score of each run of consecutive rows."""
        n = self.db.execute("SELECT COUNT(*) FROM samples WHERE time_ns BETWEEN ? AND ?",
                            (start_ns, end_ns)).fetchone()[0]
        stride = max(1, -(-n // max_points))
        if stride == 1:
            return self.db.execute(
                "SELECT seq, time, score, alarm, result FROM samples "
                "WHERE time_ns BETWEEN ? AND ? ORDER BY seq", (start_ns, end_ns)).fetchall()
        # SQLite: the bare columns of a MAX() aggregate come from the row holding the maximum
        return self.db.execute(
            "SELECT seq, time, MAX(score), MAX(alarm), result FROM samples "
            "WHERE time_ns BETWEEN ? AND ? GROUP BY seq / ? ORDER BY seq",
            (start_ns, end_ns, stride)).fetchall()

    def raw_before(self, seq: int, n_rows: int) -> list[tuple[str, bytes]]:
        """``(time, raw)`` of the ``n_rows`` rows up to and including ``seq``, oldest first."""
        rows = self.db.execute("SELECT time, raw FROM samples WHERE seq <= ? ORDER BY seq DESC "
                               "LIMIT ?", (seq, n_rows)).fetchall()
        return rows[::-1]

    def time_range(self) -> tuple[str, str] | None:
        row = self.db.execute("SELECT MIN(time_ns), MAX(time_ns) FROM samples").fetchone()
        if row[0] is None:
            return None
        first = self.db.execute("SELECT time FROM samples WHERE time_ns = ?", (row[0],))
        last = self.db.execute("SELECT time FROM samples WHERE time_ns = ?", (row[1],))
        return first.fetchone()[0], last.fetchone()[0]

    _ALARM_COLUMNS = ("id", "raised_seq", "raised_time", "cleared_seq", "cleared_time",
                      "acknowledged_at", "acknowledged_by")

    def alarms(self, limit: int = 50) -> list[dict]:
        """The last ``limit`` alarm episodes, newest first."""
        rows = self.db.execute(f"SELECT {', '.join(self._ALARM_COLUMNS)} FROM alarms "
                               "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(zip(self._ALARM_COLUMNS, row, strict=True)) for row in rows]

    def alarm(self, alarm_id: int) -> dict | None:
        row = self.db.execute(f"SELECT {', '.join(self._ALARM_COLUMNS)} FROM alarms "
                              "WHERE id = ?", (alarm_id,)).fetchone()
        return None if row is None else dict(zip(self._ALARM_COLUMNS, row, strict=True))

    def open_alarm(self) -> dict | None:
        row = self.alarms(limit=1)
        return row[0] if row and row[0]["cleared_seq"] is None else None

    # ------------------------------------------------------------------ writes
    def commit_batch(self, rows: list[tuple], state: dict, changes: list[tuple]) -> list[int]:
        """Write the scored ``rows`` (seq, time_ns, time, raw, score, alarm, result), the alarm
        ``changes`` (("raise", seq, time) / ("clear", seq, time)) and the new stream ``state``
        in one durable transaction; returns the ids of the alarms raised."""
        text = encode_state(state)
        db = self.db
        raised = []
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            for kind, seq, time in changes:
                if kind == "raise":
                    raised.append(db.execute("INSERT INTO alarms (raised_seq, raised_time) "
                                             "VALUES (?, ?)", (seq, time)).lastrowid)
                else:
                    db.execute("UPDATE alarms SET cleared_seq = ?, cleared_time = ? "
                               "WHERE cleared_seq IS NULL", (seq, time))
            db.execute("INSERT INTO stream (id, state) VALUES (1, ?) "
                       "ON CONFLICT(id) DO UPDATE SET state = excluded.state", (text,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return raised

    def acknowledge(self, alarm_id: int, at: str, by: str) -> bool:
        """Mark an alarm acknowledged (False when it does not exist; a second acknowledgement
        keeps the first)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute("UPDATE alarms SET acknowledged_at = COALESCE(acknowledged_at, ?), "
                             "acknowledged_by = COALESCE(acknowledged_by, ?) WHERE id = ?",
                             (at, by, alarm_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return cur.rowcount == 1
