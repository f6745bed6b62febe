"""The replay driver: post a recorded or simulated run to a running service, paced.

A source is a CSV file (first column the time), ``tep:NN`` (the Braatz test run of fault NN,
the fault entering after sample 160) or ``sim:DISTURBANCE`` (a run of the Tennessee Eastman
simulator, ``mola_ts.data.simulate_tep``, with that disturbance from ``onset`` hours). Rows are
posted in batches at ``speed`` times real time (``"max"``: as fast as the service answers).
A batch that fails (connection refused or reset, 5xx, 429) is sent again until the service
answers or ``retry_seconds`` pass; a batch the service had committed before it died comes back
with its stored results (the service recognises the equal rows), so a replay across a kill -9
loses and repeats nothing.
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ReplayClient", "ServiceUnavailable", "load_source", "shift_times", "parse_speed",
           "replay", "batch_json"]


class ServiceUnavailable(RuntimeError):
    """The service did not answer (or kept refusing) within the retry time."""


def parse_speed(text: str) -> float:
    """``"60x"`` or ``"60"`` -> 60.0; ``"max"`` -> inf (no pacing)."""
    text = str(text).strip().lower()
    if text in ("max", "inf"):
        return math.inf
    try:
        speed = float(text[:-1] if text.endswith("x") else text)
    except ValueError:
        raise ValueError(f"speed must look like '60x' or 'max', got {text!r}") from None
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {text!r}")
    return speed


def load_source(source: str, *, hours: float = 48.0, onset: float = 8.0, seed: int = 0,
                data_home: str | None = None) -> pd.DataFrame:
    """The run named by ``source`` (see the module doc) with a DatetimeIndex."""
    from .. import data

    if source.startswith("tep:"):
        number = source[4:].lstrip("d").removesuffix("_te")
        if not number.isdigit():
            raise ValueError(f"a Braatz source is tep:NN (fault 0..21), got {source!r}")
        return data.load_tep(int(number), "test")
    if source.startswith("sim:"):
        disturbance = source[4:] or None
        if disturbance in ("normal", "none"):
            disturbance = None
        return data.simulate_tep(hours, seed=seed, disturbance=disturbance, onset_hours=onset,
                                 data_home=data_home)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"replay source {source!r} is neither a file nor tep:NN nor "
                                "sim:DISTURBANCE")
    frame = pd.read_csv(path, index_col=0)
    try:
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index, format="ISO8601"))
    except (ValueError, TypeError):
        raise ValueError(f"{path}: the first column must hold ISO-8601 times") from None
    return frame


def shift_times(frame: pd.DataFrame, start: pd.Timestamp | None) -> pd.DataFrame:
    """A copy of ``frame`` whose first row is at ``start`` (None: unchanged), spacing kept."""
    if start is None:
        return frame
    index = frame.index
    if index.tz is None:
        index = index.tz_localize("UTC")
    start = start.tz_localize("UTC") if start.tz is None else start
    out = frame.copy()
    out.index = index - index[0] + start
    return out


def batch_json(frame: pd.DataFrame) -> bytes:
    """Rows as the JSON body of ``POST /samples`` (NaN as null, times ISO-8601)."""
    index = frame.index
    times = [t.isoformat() for t in (index.tz_localize("UTC") if index.tz is None else index)]
    keys = ["time", *(str(c) for c in frame.columns)]
    values = frame.to_numpy(dtype=np.float64)
    finite = np.isfinite(values).all(axis=1)
    rows = []
    for t, ok, row in zip(times, finite, values.tolist(), strict=True):
        if not ok:
            row = [v if math.isfinite(v) else None for v in row]
        rows.append(dict(zip(keys, [t, *row], strict=True)))
    return json.dumps({"rows": rows}, separators=(",", ":")).encode()


class ReplayClient:
    """A keep-alive HTTP client of one service (``http://host:port``), with its token."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must look like http://127.0.0.1:8000, got {url!r}")
        self.parts, self.token, self.timeout = parts, token, timeout
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.parts.scheme == "https" else \
                http.client.HTTPConnection
            self.conn = cls(self.parts.hostname, self.parts.port, timeout=self.timeout)
        return self.conn

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        """``(status, decoded JSON)``; raises OSError / HTTPException when unreachable."""
        headers = {"Content-Type": content_type} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection()
        try:
            conn.request(method, self.parts.path.rstrip("/") + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        try:
            return response.status, json.loads(data) if data else None
        except json.JSONDecodeError:
            return response.status, data.decode(errors="replace")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _post_retrying(client: ReplayClient, body: bytes, retry_seconds: float) -> Any:
    deadline = time.monotonic() + retry_seconds
    wait = 0.1
    while True:
        try:
            status, answer = client.request("POST", "/samples", body)
            if status == 200:
                return answer
            if status < 500 and status != 429:
                message = answer.get("error") if isinstance(answer, dict) else answer
                raise ValueError(f"the service refused a batch ({status}): {message}")
            why = f"status {status}"
        except (OSError, http.client.HTTPException) as exc:
            why = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"the service did not take the batch within "
                                     f"{retry_seconds:g} s (last: {why})")
        time.sleep(wait)
        wait = min(2.0, wait * 2)


def replay(frame: pd.DataFrame, client: ReplayClient, *, speed: float = math.inf,
           batch: int = 1, retry_seconds: float = 60.0,
           report: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Post ``frame`` in order (see the module doc); ``report`` gets every answer.

    Returns a summary: rows posted, rows the service had already accepted, alarms raised
    (time of the first), seconds taken.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if len(frame) == 0:
        raise ValueError("the replay source has no rows")
    offsets = (frame.index - frame.index[0]).total_seconds().to_numpy()
    began = time.monotonic()
    posted = repeated = raised = 0
    first_alarm = None
    alarm_on = False
    for start in range(0, len(frame), batch):
        part = frame.iloc[start:start + batch]
        if math.isfinite(speed):
            due = began + offsets[min(start + batch, len(frame)) - 1] / speed
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        answer = _post_retrying(client, batch_json(part), retry_seconds)
        posted += answer["accepted"]
        repeated += answer["repeated"]
        for row in answer["results"]:
            if row["alarm"] and not alarm_on:
                raised += 1
                first_alarm = first_alarm or row["time"]
            alarm_on = bool(row["alarm"])
        if report is not None:
            report(answer)
    return {"rows": len(frame), "accepted": posted, "repeated": repeated,
            "alarms_raised": raised, "first_alarm": first_alarm,
            "seconds": round(time.monotonic() - began, 3)}
