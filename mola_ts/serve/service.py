"""The monitoring service without the web layer: a saved monitor's stream, its durable history
and the rules of accepting samples (order, retries, conflicts), events and explanations.

One :class:`MonitorService` serves one model. :meth:`MonitorService.post` is serialised by a
lock: concurrent posts are scored one batch after the other, each committed (rows, alarm
changes, stream state) before the next starts. A batch either is accepted whole or changes
nothing: the stream is rolled back when its commit fails.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .inputs import Batch, InputError, parse_samples
from .store import StateStore

__all__ = ["MonitorService", "load_stream", "MONITOR_CLASSES", "frame_results"]

MONITOR_CLASSES = ("ResidualMonitor", "MOLAMonitor", "PCAMonitor", "DPCAMonitor")
_BLOCK_INDEX = re.compile(r"^(.+)\.index$")


def load_stream(model_file: str | Path, dropout: dict[str, Any] | None = None):
    """A :class:`~mola_ts.monitor.MonitorStream` from a saved monitor or a saved stream.

    ``dropout`` (``missing``, ``max_hold``, ``on_stale``) sets a monitor's stream policy; a
    saved stream carries its own, so giving one for it is refused.
    """
    from .. import monitor as monitors
    from ..persistence import saved_class

    dropout = {k: v for k, v in (dropout or {}).items() if v is not None}
    name = saved_class(model_file)
    if name == "MonitorStream":
        if dropout:
            raise ValueError(f"{model_file} is a saved stream with its own sensor-dropout "
                             f"policy; do not give {sorted(dropout)} (or serve its monitor)")
        return monitors.MonitorStream.load(model_file)
    if name not in MONITOR_CLASSES:
        raise ValueError(f"{model_file} holds a {name}, not a monitor the service can stream "
                         f"(one of {list(MONITOR_CLASSES)} or a saved MonitorStream)")
    return getattr(monitors, name).load(model_file).stream(**dropout)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def frame_results(first_seq: int, times: list[str], scored: pd.DataFrame) -> list[dict]:
    """The JSON result of each row of a stream's output: float columns under
    ``statistics`` (non-finite ones as null, named in ``non_finite``), integer columns under
    ``flags``, the held variables under ``missing_variables``."""
    arrays = {c: scored[c].to_numpy() for c in scored.columns}  # one pass: pandas is slow
    floats = [c for c, a in arrays.items() if a.dtype.kind == "f"]
    ints = [c for c, a in arrays.items() if a.dtype.kind in "iub"]
    n = len(scored)
    values = np.column_stack([arrays[c] for c in floats]) if floats else np.empty((n, 0))
    finite = np.isfinite(values).all(axis=1)
    value_rows = values.tolist()
    flag_rows = (np.column_stack([arrays[c] for c in ints]).astype(np.int64).tolist()
                 if ints else [[]] * n)
    missing = arrays["missing_variables"].tolist() if "missing_variables" in arrays else \
        [()] * n
    out = []
    for i, iso in enumerate(times):
        stats = dict(zip(floats, value_rows[i], strict=True))
        non_finite = []
        if not finite[i]:
            non_finite = [c for c, v in stats.items() if not math.isfinite(v)]
            stats.update((c, None) for c in non_finite)
        flags = dict(zip(ints, flag_rows[i], strict=True))
        out.append({"seq": first_seq + i, "time": iso, "alarm": flags.get("alarm", 0),
                    "statistics": stats, "flags": flags,
                    "missing_variables": list(missing[i]), "non_finite": non_finite})
    return out


@dataclass
class _Live:
    """What the service keeps in memory beside the database (rebuilt from it at start)."""

    next_seq: int = 0
    last_ns: int | None = None
    alarm_id: int | None = None  # the open alarm, if any
    listeners: list[Callable[[list[dict]], None]] = field(default_factory=list)


class MonitorService:
    """A saved monitor's stream behind a durable history (see the module doc).

    Build it with :meth:`open`; ``post`` scores request bodies, ``status``/``history``/
    ``alarms``/``acknowledge``/``contributions`` answer the page and the API.
    """

    def __init__(self, stream, store: StateStore, *, info: dict[str, Any],
                 tags: dict[str, str] | None = None, max_rows: int = 10_000):
        self.stream = stream
        self.store = store
        self.info = info
        self.tags = tags
        self.max_rows = max_rows
        self.lock = threading.Lock()
        self.started = time.time()
        self.columns = list(stream.monitor.feature_names_)
        self.live = _Live()
        saved = store.stream_state()
        if saved is not None:
            stream.set_state(saved)
        elif stream.last_time is not None and pd.Timestamp(stream.last_time).tz is None:
            stream.last_time = pd.Timestamp(stream.last_time).tz_localize("UTC").isoformat()
        last = store.last_sample()
        if last is not None:
            self.live.next_seq, self.live.last_ns = last[0] + 1, last[1]
        elif stream.last_time is not None:
            self.live.last_ns = int(pd.Timestamp(stream.last_time).as_unit("ns").value)
        opened = store.open_alarm()
        self.live.alarm_id = None if opened is None else opened["id"]

    @classmethod
    def open(cls, model_file: str | Path, state_dir: str | Path, *,
             dropout: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
             max_rows: int = 10_000) -> MonitorService:
        """Load ``model_file`` and its state directory (created if absent; refused when it was
        written for another model)."""
        stream = load_stream(model_file, dropout)
        digest = hashlib.sha256(Path(model_file).read_bytes()).hexdigest()
        info = {"monitor_class": type(stream.monitor).__name__, "sha256": digest,
                "features": list(stream.monitor.feature_names_),
                "dropout": {"missing": stream.missing, "max_hold": stream.max_hold,
                            "on_stale": stream.on_stale}}
        store = StateStore(state_dir, info)
        return cls(stream, store, info=dict(info, file=str(model_file)), tags=tags,
                   max_rows=max_rows)

    def close(self) -> None:
        with self.lock:
            self.store.close()

    # ------------------------------------------------------------------ samples
    def post(self, body: bytes, content_type: str | None) -> dict[str, Any]:
        """Score a request body; ``{"accepted", "repeated", "results"}`` or InputError."""
        return json.loads(self.post_json(body, content_type))

    def post_json(self, body: bytes, content_type: str | None) -> bytes:
        """:meth:`post`'s answer as JSON bytes, made of the stored results' own text (the
        web layer sends it as it is: no second encoding)."""
        batch = parse_samples(body, content_type, self.columns, self.tags, self.max_rows)
        with self.lock:
            repeated, old = self._repeated(batch)
            new = Batch(batch.times_ns[repeated:], batch.times[repeated:],
                        batch.values[repeated:])
            texts = self._score(new) if len(new.times) else []
        return (f'{{"accepted":{len(texts)},"repeated":{repeated},"results":['
                f'{",".join(old + texts)}]}}').encode()

    def _repeated(self, batch: Batch) -> tuple[int, list[str]]:
        """How many leading rows were accepted before (equal values: their stored results'
        JSON);
        409 for an accepted time with other values or a time older than the last accepted."""
        last = self.live.last_ns
        if last is None or batch.times_ns[0] > last:
            return 0, []
        k = int(np.searchsorted(batch.times_ns, last, side="right"))
        stored = self.store.samples_at([int(t) for t in batch.times_ns[:k]])
        results = []
        for i in range(k):
            found = stored.get(int(batch.times_ns[i]))
            if found is None:
                raise InputError(f"row {i}: its time {batch.times[i]} is not after the last "
                                 f"accepted sample and was never accepted: samples must "
                                 "arrive in time order", status=409)
            if found[0] != batch.values[i].tobytes():
                raise InputError(f"row {i}: a sample at {batch.times[i]} was already "
                                 "accepted with other values", status=409)
            results.append(found[1])
        return k, results

    def _score(self, batch: Batch) -> list[str]:
        stream, live = self.stream, self.live
        before = stream.get_state()
        if len(batch.times) == 1:  # one sample: the stream's fast path for a Series
            rows_in = pd.Series(batch.values[0], index=self.columns,
                                name=pd.Timestamp(int(batch.times_ns[0]), tz="UTC"))
        else:
            rows_in = pd.DataFrame(batch.values, columns=self.columns,
                                   index=pd.DatetimeIndex(pd.to_datetime(batch.times_ns,
                                                                         utc=True)))
        try:
            scored = stream.update(rows_in)
        except ValueError as exc:  # the stream's dropout policy or its time order
            raise InputError(str(exc)) from None
        rows, changes, events = [], [], []
        alarm_on = live.alarm_id is not None
        seq = live.next_seq
        results = frame_results(seq, batch.times, scored)
        listening = bool(live.listeners)
        for i, result in enumerate(results):
            rows.append((seq + i, int(batch.times_ns[i]), result["time"],
                         batch.values[i].tobytes(), result["statistics"].get("score"),
                         result["alarm"], json.dumps(result, separators=(",", ":"))))
            if listening:
                events.append(self._row_event(result))
            if bool(result["alarm"]) != alarm_on:
                alarm_on = not alarm_on
                changes.append(("raise" if alarm_on else "clear", seq + i, result["time"]))
        try:
            raised = self.store.commit_batch(rows, stream.get_state(), changes)
        except BaseException:
            stream.set_state(before)
            raise
        live.next_seq, live.last_ns = seq + len(rows), int(batch.times_ns[-1])
        raised_ids = iter(raised)
        for kind, at_seq, iso in changes:
            if kind == "raise":
                live.alarm_id = next(raised_ids)
            events.append({"type": "alarm", "state": "raised" if kind == "raise" else
                           "cleared", "id": live.alarm_id, "seq": at_seq, "time": iso})
            if kind == "clear":
                live.alarm_id = None
        if listening:
            events.sort(key=lambda e: (e["seq"], e["type"] != "alarm"))  # alarm, then its row
            self._publish(events)
        return [row[6] for row in rows]  # the stored JSON of each result

    @staticmethod
    def _row_event(result: dict) -> dict:
        stats = result["statistics"]
        blocks = {}
        for name, value in stats.items():
            match = _BLOCK_INDEX.match(name)
            if match:
                blocks[match.group(1)] = [value, stats.get(f"{name}_limit")]
        return {"type": "row", "seq": result["seq"], "time": result["time"],
                "score": stats.get("score"), "limit": stats.get("score_limit"),
                "alarm": result["alarm"], "blocks": blocks,
                "monitorable": result["flags"].get("monitorable", 1),
                "sensor_fault": result["flags"].get("sensor_fault", 0)}

    # ------------------------------------------------------------------ events
    def subscribe(self, listener: Callable[[list[dict]], None]) -> None:
        """Call ``listener(events)`` after every accepted batch (under the lock: keep it
        short, hand the events over to another thread or loop)."""
        with self.lock:
            self.live.listeners.append(listener)

    def unsubscribe(self, listener: Callable[[list[dict]], None]) -> None:
        with self.lock:
            if listener in self.live.listeners:
                self.live.listeners.remove(listener)

    def _publish(self, events: list[dict]) -> None:
        for listener in list(self.live.listeners):
            listener(events)

    # ------------------------------------------------------------------ reads
    def status(self) -> dict[str, Any]:
        with self.lock:
            stream = self.stream
            last_alarm = self.store.alarms(limit=1)
            span = self.store.time_range()
            return {
                "model": self.info, "blocks": self._blocks(),
                "limit": float(stream.monitor.threshold_),
                "samples": self.store.count(), "stream_samples": int(stream.n_seen),
                "first_time": span[0] if span else None,
                "last_time": span[1] if span else None,
                "alarm_active": self.live.alarm_id is not None,
                "last_alarm": last_alarm[0] if last_alarm else None,
                "subscribers": len(self.live.listeners),
                "uptime_s": round(time.time() - self.started, 3),
                "state_dir": str(self.store.state_dir),
            }

    def _blocks(self) -> list[str]:
        monitor = self.stream.monitor
        limits = getattr(monitor, "limits_", None)
        if type(monitor).__name__ != "MOLAMonitor" or not isinstance(limits, dict):
            return []
        return [name for name, value in limits.items() if isinstance(value, dict)]

    def history(self, start: str | None, end: str | None, max_points: int = 5000
                ) -> dict[str, Any]:
        """The chart's rows between two ISO times (default: the last 24 hours of data)."""
        if not 1 <= max_points <= 100_000:
            raise InputError(f"max_points must be in 1..100000, got {max_points}")
        with self.lock:
            span = self.store.time_range()
            if span is None:
                return {"rows": [], "decimated": False}
            stop = _ns(end, "end") if end else _ns(span[1], "end")
            begin = _ns(start, "start") if start else stop - 24 * 3600 * 10**9
            if begin > stop:
                raise InputError(f"start {start} is after end {end}")
            rows = self.store.history(begin, stop, max_points)
            total = self.store.db.execute("SELECT COUNT(*) FROM samples WHERE time_ns "
                                          "BETWEEN ? AND ?", (begin, stop)).fetchone()[0]
        out = []
        for seq, iso, score, alarm, result in rows:
            event = self._row_event(json.loads(result))
            event.update(seq=seq, time=iso, score=score, alarm=alarm)
            out.append(event)
        return {"rows": out, "decimated": total > len(out), "total": total}

    def alarms(self, limit: int = 50) -> list[dict]:
        if not 1 <= limit <= 10_000:
            raise InputError(f"limit must be in 1..10000, got {limit}")
        with self.lock:
            return self.store.alarms(limit)

    def acknowledge(self, alarm_id: int, by: str) -> dict:
        """Acknowledge an alarm (404 if unknown); publishes an ``ack`` event."""
        by = (by or "operator").strip()[:80] or "operator"
        at = pd.Timestamp.now(tz="UTC").isoformat()
        with self.lock:
            if not self.store.acknowledge(alarm_id, at, by):
                raise InputError(f"no alarm with id {alarm_id}", status=404)
            alarm = self.store.alarm(alarm_id)
            self._publish([{"type": "ack", "id": alarm_id, "seq": alarm["raised_seq"],
                            "acknowledged_at": alarm["acknowledged_at"],
                            "acknowledged_by": alarm["acknowledged_by"]}])
        return alarm

    def contributions(self, alarm_id: int, top: int = 10, rows: int = 200) -> dict[str, Any]:
        """The variables driving an alarm, computed on demand at the row that raised it from
        the ``rows`` stored samples up to it (held values filled forward, as the stream
        did); the monitor's ``contributions`` (residual: smoothed T^2 shares; PCA: T^2;
        MOLA: SPE)."""
        if not 1 <= top <= 1000 or not 2 <= rows <= 100_000:
            raise InputError(f"top must be in 1..1000 and rows in 2..100000, got {top}, {rows}")
        monitor = self.stream.monitor
        with self.lock:
            alarm = self.store.alarm(alarm_id)
            if alarm is None:
                raise InputError(f"no alarm with id {alarm_id}", status=404)
            stored = self.store.raw_before(alarm["raised_seq"], rows)
        values = np.stack([np.frombuffer(raw, dtype=np.float64) for _, raw in stored])
        frame = pd.DataFrame(values, columns=self.columns,
                             index=pd.DatetimeIndex([t for t, _ in stored])).ffill()
        frame = frame[frame.notna().all(axis=1).to_numpy()]
        if not hasattr(monitor, "contributions") or len(frame) == 0:
            raise InputError(f"{type(monitor).__name__} gives no contributions here", 404)
        last = monitor.contributions(frame).iloc[-1]
        total = float(np.abs(last.to_numpy()).sum()) or 1.0
        order = last.abs().sort_values(ascending=False).index[:top]
        return {"alarm": alarm, "time": stored[-1][0], "rows_used": len(frame),
                "variables": [{"variable": str(v), "contribution": _finite(float(last[v])),
                               "share": float(abs(last[v]) / total)} for v in order]}


def _ns(text: str, name: str) -> int:
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise InputError(f"{name} must be an ISO-8601 time, got {text!r}") from None
    stamp = stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
    return int(stamp.as_unit("ns").value)
