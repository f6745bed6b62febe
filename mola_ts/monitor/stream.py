"""Sample-by-sample scoring for every monitor: time order, the sensor-dropout policy and state.

:class:`MonitorStream` is the one stream class of the toolkit. It owns what every monitor's
stream needs (input checks, time order across updates, the sensor-dropout policy, the data-quality
columns, exact get/set/save/load of its state) and delegates the statistics to its monitor,
which implements three methods (the *stream protocol*):

- ``_stream_init_state() -> dict``: the monitor-specific state of a fresh stream (numpy arrays
  and plain numbers: a lag or window buffer, EWMA and CUSUM vectors, a fusion episode);
- ``_stream_step(state, values, monitorable) -> (columns, new_state)``: score the raw, finite
  rows ``values`` (n, variables) from ``state`` without modifying it; ``columns`` is an ordered
  dict of per-row arrays that holds at least ``score`` (finite), ``alarm`` (1/0) and ``warmup``
  (1 where the row's history is not complete yet); rows not ``monitorable`` must get no alarm
  and leave the state as it was;
- ``_stream_check_state(state) -> dict``: validate a state read from a file or given to
  :meth:`MonitorStream.set_state` (a ValueError says what does not fit).

A monitor's ``statistics(X)`` is a fresh stream fed the whole run, so batch and stream agree.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ..data import ValidatedSeries, check_columns_match, check_series
from ..persistence import EstimatorFileError, load_estimator, save_estimator

__all__ = ["MonitorStream", "MISSING_POLICIES", "STALE_POLICIES"]

MISSING_POLICIES = ("hold", "raise")
STALE_POLICIES = ("flag", "raise")
_COMMON_KEYS = ("n_seen", "last_value", "hold_count", "last_time")


# the monitors a stream file may hold: class name -> module (imported only when loading)
_MONITOR_MODULES = {"MOLAMonitor": "mola_ts.monitor.mola", "PCAMonitor": "mola_ts.monitor.pca",
                    "DPCAMonitor": "mola_ts.monitor.pca",
                    "ResidualMonitor": "mola_ts.monitor.residual"}


def _monitor_class(name: str):
    """The monitor class saved under ``name`` (only the toolkit's own monitors)."""
    if name not in _MONITOR_MODULES:
        raise ValueError(f"unknown monitor class {name!r} (known: {sorted(_MONITOR_MODULES)})")
    return getattr(importlib.import_module(_MONITOR_MODULES[name]), name)


class MonitorStream:
    """Sample-by-sample scoring with the monitor's running state (lags, EWMA, CUSUM, fusion).

    Obtain one with ``monitor.stream()``. :meth:`update` accepts one sample (a 1-D array or
    Series of the variables) or a block of rows, and returns their statistics (the columns of
    ``monitor.statistics``). Finite data fed row by row, in chunks of any size or as one block
    give exactly (bit for bit) the batch result.

    **Sensor dropouts** (NaN or inf in some variables of a sample) are never a silent pass:

    - ``missing="hold"`` (default): each missing variable takes its last valid value in this
      stream; the sample is scored and flagged: ``sensor_fault`` is 1 and
      ``missing_variables`` lists the variables that were held.
    - A variable may be held for at most ``max_hold`` consecutive samples. A sample in which a
      variable has been missing for longer, or in which every variable is missing, is
      *unmonitorable*. With ``on_stale="flag"`` (default) it gets ``monitorable = 0``, no alarm,
      and it advances none of the monitor's running statistics (its held values do enter a
      window or lag buffer); with ``on_stale="raise"`` :meth:`update` raises a ValueError.
    - A variable that is missing before it has had any valid value in this stream raises a
      ValueError: there is nothing to hold.
    - ``missing="raise"``: any NaN or inf raises a ValueError naming the variables and the
      sample.

    An update that raises leaves the stream unchanged: no row of the rejected block is scored.
    Rows with a DatetimeIndex (a DataFrame, or a Series taken from a row of one) must arrive in
    increasing time order, also across calls; a row at or before the last one raises.

    **Memory**: the state is the monitor's running state (bounded: a few samples of history and
    fixed-size vectors), the last valid value and hold count of every variable, the last
    timestamp and the number of samples seen, whatever the length of the stream.
    :meth:`get_state` / :meth:`set_state` copy it in memory; :meth:`save` / :meth:`load` write
    the monitor and the stream to one file, and a restored stream continues exactly as an
    uninterrupted one.

    Parameters
    ----------
    monitor : a fitted monitor (``MOLAMonitor``, ``ResidualMonitor``, ``PCAMonitor``,
        ``DPCAMonitor``)
    missing : {"hold", "raise"}, default="hold"
        What a NaN or inf in a streamed sample gets (see above).
    max_hold : int, default=10
        Consecutive samples a variable may be held (>= 0; 0 never holds, so every sample with a
        missing variable is unmonitorable). Choose it from the sampling period and from how
        long the process may drift unseen (10 samples of the Tennessee Eastman plant are 30
        minutes).
    on_stale : {"flag", "raise"}, default="flag"
        What an unmonitorable sample gets (see above).
    """

    def __init__(self, monitor, *, missing: str = "hold", max_hold: int = 10,
                 on_stale: str = "flag"):
        check_is_fitted(monitor)
        if not hasattr(monitor, "_stream_step"):
            raise TypeError(f"{type(monitor).__name__} does not support streaming")
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
        if on_stale not in STALE_POLICIES:
            raise ValueError(f"on_stale must be one of {STALE_POLICIES}, got {on_stale!r}")
        if isinstance(max_hold, bool) or not isinstance(max_hold, (int, np.integer)) \
                or max_hold < 0:
            raise ValueError(f"max_hold must be an int >= 0, got {max_hold!r}")
        self.monitor = monitor
        self.missing = missing
        self.max_hold = int(max_hold)
        self.on_stale = on_stale
        n_features = len(monitor.feature_names_)
        self.engine = monitor._stream_init_state()
        self.n_seen = 0
        self.last_value = np.full(n_features, np.nan)  # last valid raw value of each variable
        self.hold_count = np.zeros(n_features, dtype=np.int64)  # consecutive held samples
        self.last_time: str | None = None  # ISO time of the last row with a DatetimeIndex

    def __repr__(self) -> str:
        return (f"MonitorStream({type(self.monitor).__name__}, n_seen={self.n_seen}, "
                f"missing={self.missing!r}, max_hold={self.max_hold}, "
                f"on_stale={self.on_stale!r})")

    # ------------------------------------------------------------------ scoring core
    def _score(self, values: np.ndarray, index: pd.Index | None,
               missing: np.ndarray | None = None,
               monitorable: np.ndarray | None = None) -> pd.DataFrame:
        """Statistics of finite raw ``values`` (n, variables), advancing the stream."""
        n = len(values)
        ok = np.ones(n, dtype=bool) if monitorable is None else monitorable.astype(bool)
        columns, engine = self.monitor._stream_step(self.engine, values, ok)
        columns = dict(columns)
        faulty = np.zeros(n, dtype=bool) if missing is None else missing.any(axis=1)
        columns["sensor_fault"] = faulty.astype(np.int64)
        held = np.empty(n, dtype=object)
        held.fill(())
        names = self.monitor.feature_names_
        for i in np.flatnonzero(faulty):
            held[i] = tuple(names[j] for j in np.flatnonzero(missing[i]))
        columns["missing_variables"] = held
        columns["monitorable"] = ok.astype(np.int64)
        if index is None:
            index = pd.RangeIndex(self.n_seen, self.n_seen + n)
        frame = pd.DataFrame(columns, index=index)
        self.engine = engine
        self.n_seen += n
        return frame

    # ------------------------------------------------------------------ the public stream
    def _validate(self, x):
        mon = self.monitor
        if isinstance(x, pd.Series):
            fast = self._series_row(x)
            if fast is not None:
                return check_columns_match(fast, mon.feature_names_, name="x",
                                           by_name=mon.named_features_)
            x = x.to_frame().T
        elif isinstance(x, (np.ndarray, list, tuple)):
            try:
                one_row = np.ndim(x) == 1
            except ValueError:  # a ragged nested list: check_series says so
                one_row = False
            if one_row:
                x = np.asarray(x)[None, :]
        series = check_series(x, name="x", min_rows=1, allow_nan=True, allow_inf=True)
        return check_columns_match(series, mon.feature_names_, name="x",
                                   by_name=mon.named_features_)

    @staticmethod
    def _series_row(x: pd.Series) -> ValidatedSeries | None:
        """One sample given as a numeric Series (variables as its index, its name a timestamp
        or None), validated without building a frame; None for anything else (the general
        path then checks it and names the problem)."""
        if not (pd.api.types.is_float_dtype(x.dtype) or pd.api.types.is_integer_dtype(x.dtype)):
            return None
        if pd.api.types.is_bool_dtype(x.dtype) or x.index.has_duplicates or len(x) == 0:
            return None
        name = x.name
        if name is None:
            index = None
        elif isinstance(name, pd.Timestamp) and name is not pd.NaT:
            index = pd.DatetimeIndex([name])
        else:
            return None
        values = x.to_numpy(dtype=np.float64, copy=True)[None, :]
        columns = [str(c) for c in x.index]
        if index is None:
            return ValidatedSeries(values, pd.RangeIndex(1), columns)
        return ValidatedSeries(values, index, columns)

    def _label(self, index: pd.Index | None, i: int) -> str:
        if index is not None:
            return f"{index[i]!s} (sample {self.n_seen + i} of the stream)"
        return f"{self.n_seen + i} of the stream"

    def _check_time(self, index: pd.Index | None) -> str | None:
        """The new last timestamp; raise when ``index`` does not continue the stream's time."""
        if not isinstance(index, pd.DatetimeIndex) or len(index) == 0:
            return self.last_time
        if self.last_time is not None:
            previous = pd.Timestamp(self.last_time)
            try:
                later = bool(index[0] > previous)
            except TypeError:
                raise ValueError(f"x's timestamp {index[0]} cannot be compared with the "
                                 f"stream's last one {previous} (one has a time zone, the "
                                 "other none)") from None
            if not later:
                raise ValueError(f"x starts at {index[0]}, not after the stream's last sample "
                                 f"at {previous}: samples must arrive in time order, each "
                                 "once (repeat or reorder them upstream)")
        return index[-1].isoformat()

    def _fill_missing(self, values: np.ndarray, index: pd.Index | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply the dropout policy without touching the stream.

        Returns the filled values, the missing mask, the monitorable rows and the new last
        values and hold counts.
        """
        names = self.monitor.feature_names_
        bad = ~np.isfinite(values)
        n = len(values)
        monitorable = np.ones(n, dtype=bool)
        last = self.last_value.copy()
        count = self.hold_count.copy()
        if not bad.any():
            last[:] = values[-1]
            count[:] = 0
            return values, bad, monitorable, last, count
        values = values.copy()
        for i in range(n):
            row_bad = bad[i]
            if not row_bad.any():
                count[:] = 0
                last[:] = values[i]
                continue
            gone = [names[j] for j in np.flatnonzero(row_bad)]
            if self.missing == "raise":
                raise ValueError(f"x: sample {self._label(index, i)} has NaN or inf in "
                                 f"{gone[:8]}{' ...' if len(gone) > 8 else ''} and the stream "
                                 "was made with missing='raise'")
            never = row_bad & np.isnan(last)
            if never.any():
                first = [names[j] for j in np.flatnonzero(never)]
                raise ValueError(f"x: sample {self._label(index, i)} has NaN or inf in "
                                 f"{first[:8]} before any valid value of them in this stream, "
                                 "so there is no value to hold; start the stream with a "
                                 "complete sample")
            values[i, row_bad] = last[row_bad]
            count[row_bad] += 1
            count[~row_bad] = 0
            last[:] = values[i]
            stale = count > self.max_hold
            if stale.any() or row_bad.all():
                if self.on_stale == "raise":
                    why = ("every variable is missing" if row_bad.all() else
                           f"{[names[j] for j in np.flatnonzero(stale)][:8]} have been missing "
                           f"for more than max_hold={self.max_hold} samples")
                    raise ValueError(f"x: sample {self._label(index, i)} cannot be monitored: "
                                     f"{why} (on_stale='raise')")
                monitorable[i] = False
        return values, bad, monitorable, last, count

    def update(self, x) -> pd.DataFrame:
        """Score one sample (1-D array/Series of the variables) or a block of rows.

        Returns one row of statistics per sample (the columns of the monitor's
        ``statistics``), indexed by the input's index or, for arrays, by the sample's position
        in the stream. NaN/inf follow the stream's dropout policy.
        """
        self.monitor._check_scoring_params()
        series = self._validate(x)
        last_time = self._check_time(series.index)
        values, missing, monitorable, last, count = self._fill_missing(series.values,
                                                                      series.index)
        frame = self._score(values, series.index, missing, monitorable)
        self.last_value, self.hold_count, self.last_time = last, count, last_time
        return frame

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """A copy of the stream's state (the monitor's running state under ``"engine"``, last
        valid values and hold counts, last timestamp, samples seen)."""
        return {
            "engine": _copy(self.engine),
            "n_seen": self.n_seen,
            "last_value": self.last_value.copy(),
            "hold_count": self.hold_count.copy(),
            "last_time": self.last_time,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a state returned by :meth:`get_state` (checked against the monitor).

        A state of the first MOLA stream (its running state at the top level, no ``engine``
        key) is accepted too.
        """
        mon = self.monitor
        n_vars = len(mon.feature_names_)
        if not isinstance(state, dict) or set(_COMMON_KEYS) - set(state):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state must be a dict with the keys {['engine', *_COMMON_KEYS]} "
                             f"(from get_state), got {got}")
        n_seen = state["n_seen"]
        if isinstance(n_seen, bool) or not isinstance(n_seen, (int, np.integer)) or n_seen < 0:
            raise ValueError(f"state['n_seen'] must be an int >= 0, got {n_seen!r}")
        engine = state["engine"] if "engine" in state else {
            k: v for k, v in state.items() if k not in _COMMON_KEYS}
        engine = mon._stream_check_state(engine, int(n_seen))
        last_value = np.array(state["last_value"], dtype=np.float64)
        hold_count = np.array(state["hold_count"], dtype=np.int64)
        if last_value.shape != (n_vars,) or hold_count.shape != (n_vars,) or \
                (hold_count < 0).any():
            raise ValueError(f"state['last_value'] and state['hold_count'] must have "
                             f"{n_vars} entries (counts >= 0), got shapes {last_value.shape} "
                             f"and {hold_count.shape}")
        last_time = state["last_time"]
        if last_time is not None:
            if not isinstance(last_time, str):
                raise ValueError(f"state['last_time'] must be None or an ISO time, got "
                                 f"{last_time!r}")
            pd.Timestamp(last_time)  # raises on a malformed time
        self.engine = engine
        self.n_seen, self.last_value, self.hold_count = int(n_seen), last_value, hold_count
        self.last_time = last_time

    def save(self, path):
        """Write the monitor and this stream's state to one file (see :mod:`mola_ts.persistence`).

        :meth:`load` gives a stream that continues exactly where this one stands.
        """
        mon = self.monitor
        params = {"monitor_class": type(mon).__name__, "monitor": mon._params_to_save(),
                  "missing": self.missing, "max_hold": self.max_hold,
                  "on_stale": self.on_stale}
        state = {"monitor": mon._state_to_save(), "stream": self.get_state()}
        return save_estimator(self, path, state, params=params)

    @classmethod
    def load(cls, path) -> MonitorStream:
        """Read a stream written by :meth:`save` (its monitor included)."""
        params, state = load_estimator(path, cls.__name__)
        try:
            # files of the first version hold MOLA streams and no class name
            monitor_cls = _monitor_class(params.get("monitor_class", "MOLAMonitor"))
            monitor = monitor_cls(**params["monitor"])
            monitor._restore_state(state["monitor"])
            stream = cls(monitor, missing=params["missing"], max_hold=params["max_hold"],
                         on_stale=params["on_stale"])
            stream.set_state(state["stream"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EstimatorFileError(f"{path}: the saved stream does not fit MonitorStream "
                                     f"({type(exc).__name__}: {exc})") from exc
        return stream


def _copy(value):
    """A deep copy of a state made of dicts, lists, tuples, arrays and plain values."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value
