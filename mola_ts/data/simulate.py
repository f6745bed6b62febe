"""Simulated Tennessee Eastman data: closed-loop runs of the ``tep-studio`` simulator.

:func:`simulate_tep` runs the revised TEP model of the PyPI package ``tep-studio`` (the ``sim``
extra: ``pip install "mola-ts[sim]"``) under its Ricker decentralised controller, in one of the
six operating modes, with at most one disturbance switched on at a given time, and returns a
frame laid out like :func:`~mola_ts.data.load_tep`'s: the columns ``XMEAS(1..41)`` and
``XMV(1..11)`` and a 3-minute DatetimeIndex named ``time`` from ``2000-01-01``.

Choices, stated once:

- **Sampling**: the controller acts every ``control_interval`` hours (the simulator's 1.8 s by
  default); a row is the plant's measurements at the end of every 3-minute interval (the
  Braatz files' rate), and the manipulated variables the controller applied over that interval.
- **The 12th manipulated variable** (agitator speed) is dropped: the Ricker controller holds it
  constant (50 %), so it carries no information and the Braatz files do not have it either.
  The controller also holds the compressor recycle and stripper steam valves, XMV(5) and
  XMV(9), fixed: they stay (the layout is the Braatz files'), constant; drop them before
  fitting a monitor (the monitors refuse constant columns).
- **Settled operation**: a run first simulates ``settle_hours`` that are not returned, so that
  "normal data in mode k" excludes the transition into the mode. Mode 1 starts at its steady
  state; modes 2, 4 and 5 are steered from the mode-1 state by the controller's setpoints; modes
  3 and 6 start from the simulator's bundled 90/10 state. :data:`SETTLE_HOURS` holds the default
  per mode, measured by :func:`settling_time` on seed-0 runs (docs/how-to/simulated-plant.md).
- **Disturbances** are the simulator's 28 (:data:`TEP_SIM_DISTURBANCES`, labelled by its own
  names ``idv_01`` .. ``idv_28``): beyond 15 its numbering is not Braatz's fault numbering, so a
  simulated fault is never to be compared under a Braatz number. Each runs at the simulator's
  default magnitude (activation 1) from ``onset_hours`` after the first returned row.
- **Seeds**: ``seed`` sets the simulator's random streams (measurement noise and the random
  disturbances); the same parameters and package version give the same frame.
- **Cache**: runs are stored in ``<data home>/simulated/tep/`` (the data home of
  :func:`~mola_ts.data.get_data_home`) as a compressed ``.npz`` plus a JSON file with the
  parameters and the ``tep-studio`` version; a cached run is returned without simulating. A
  data home that cannot be written (a read-only CI cache) gives a warning and no cache.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .fetch import get_data_home
from .tep import TEP_COLUMNS, TEP_SAMPLING
from .validation import check_number

__all__ = ["simulate_tep", "settling_time", "PlantShutdownError", "SimulatorMissingError",
           "TEP_SIM_MODES", "TEP_SIM_DISTURBANCES", "SETTLE_HOURS", "SIM_START"]

#: the operating modes (1: base case 50/50 G/H; 2: 10/90; 3: 90/10; 4..6: the maximum
#: production variants of 1..3)
TEP_SIM_MODES = (1, 2, 3, 4, 5, 6)
#: the simulator's disturbance names, in its order (activation vector positions 0..27)
TEP_SIM_DISTURBANCES = tuple(f"idv_{i:02d}" for i in range(1, 29))
#: hours simulated and dropped before the first returned row, per mode: 1.5 times the settling
#: time :func:`settling_time` measured on a 240-hour seed-0 run from the mode's start (every
#: variable's 8-hour moving mean within one mode-1 standard deviation of its mean over hours
#: 192-240: 2: 39.05 h, 3: 66.5, 4: 43.8, 6: 57.55), rounded up to whole hours. Seed 0 gives
#: runs without noise or random variation, so this is the transient alone
#: (docs/how-to/simulated-plant.md). Mode 1 starts at its steady state and keeps the 4 h of the
#: earlier four-variable criterion. Mode 5 tripped after 21.7 h with seed 0 and had not settled
#: after 60 h with seeds 1 and 2 (G still drifting near 14.3 % for a set point of 11.65 %), so
#: it keeps its earlier 37 h and no promise
SETTLE_HOURS = {1: 4.0, 2: 59.0, 3: 100.0, 4: 66.0, 5: 37.0, 6: 87.0}
#: the timestamp of a run's first returned row (as the Braatz files loaded by ``load_tep``)
SIM_START = pd.Timestamp("2000-01-01")
_SAMPLE_HOURS = TEP_SAMPLING / pd.Timedelta(hours=1)  # 0.05 h
_N_XMV = 11  # the 12th (agitator speed) is dropped
_CACHE_VERSION = 1


class SimulatorMissingError(ImportError):
    """The ``tep-studio`` simulator (the ``sim`` extra) is not installed."""


class PlantShutdownError(RuntimeError):
    """A simulated run tripped the plant's shutdown interlocks before its horizon.

    Attributes ``hours`` (simulated hours since the run's start, settling included) and
    ``reason`` (the simulator's message) say when and why.
    """

    def __init__(self, hours: float, reason: str, what: str):
        self.hours, self.reason = float(hours), str(reason)
        super().__init__(f"the simulated plant shut down after {hours:.2f} h ({what}): "
                         f"{reason or 'no reason given by the simulator'}")


def _simulator():
    try:
        import tep_studio
        from tep_studio import RickerMultiLoopController, TennesseeEastmanProcess
        from tep_studio.simulation.modes import mode_setpoints
    except ImportError as exc:
        raise SimulatorMissingError(
            "simulated TEP data need the tep-studio simulator: pip install \"mola-ts[sim]\" "
            f"(or pip install \"tep-studio>=0.2.0\"); importing it failed with: {exc}"
        ) from exc
    return tep_studio, TennesseeEastmanProcess, RickerMultiLoopController, mode_setpoints


def _check_mode(mode) -> int:
    if isinstance(mode, str) and mode.startswith("mode") and mode[4:].isdigit():
        mode = int(mode[4:])
    if isinstance(mode, (bool, np.bool_)) or not isinstance(mode, (int, np.integer)) or \
            int(mode) not in TEP_SIM_MODES:
        raise ValueError(f"mode must be one of {TEP_SIM_MODES} (or 'mode1'..'mode6'), got "
                         f"{mode!r}")
    return int(mode)


def _check_disturbance(disturbance) -> str | None:
    if disturbance is None:
        return None
    if isinstance(disturbance, (int, np.integer)) and not isinstance(disturbance, bool):
        if 1 <= int(disturbance) <= len(TEP_SIM_DISTURBANCES):
            return TEP_SIM_DISTURBANCES[int(disturbance) - 1]
    elif isinstance(disturbance, str) and disturbance.lower() in TEP_SIM_DISTURBANCES:
        return disturbance.lower()
    raise ValueError(f"disturbance must be None, one of the simulator's names 'idv_01'.."
                     f"'idv_28' or their number 1..28, got {disturbance!r}")


def _check_hours(value, name: str, *, positive: bool) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a number of hours, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number of hours {'> 0' if positive else '>= 0'}"
                         f", got {value!r}")
    return value


def _run(params: dict, truncate: bool) -> tuple[np.ndarray, float, dict | None]:
    """Simulate: the (n, 52) rows, the CPU seconds it took and the shutdown (or None).

    ``truncate``: a shutdown ends the run (the rows before it are returned) instead of
    raising."""
    _, Process, Controller, mode_setpoints = _simulator()
    start = time.process_time()
    ci = params["control_interval"]
    per_sample = int(round(_SAMPLE_HOURS / ci))
    settle_steps = int(round(params["settle_hours"] / _SAMPLE_HOURS)) * per_sample
    n_rows = int(round(params["hours"] / _SAMPLE_HOURS))
    onset_step = None
    if params["disturbance"] is not None:
        onset_step = settle_steps + int(round(params["onset_hours"] / ci))
    idv_on = np.zeros(len(TEP_SIM_DISTURBANCES))
    if params["disturbance"] is not None:
        idv_on[TEP_SIM_DISTURBANCES.index(params["disturbance"])] = 1.0
    idv_off = np.zeros(len(TEP_SIM_DISTURBANCES))
    mode = f"mode{params['mode']}"
    sim = Process()
    controller = Controller(setpoints=mode_setpoints(mode))
    meas, _ = sim.reset(mode=mode, seed=float(params["seed"]))
    controller.reset(meas, time=sim.time)
    rows = np.empty((n_rows, len(TEP_COLUMNS)))
    moves = np.zeros(_N_XMV)
    total = settle_steps + n_rows * per_sample
    for step in range(total):
        action, _ = controller.compute_action(meas, time=sim.time)
        idv = idv_on if onset_step is not None and step >= onset_step else idv_off
        result = sim.advance(action, control_interval=ci, disturbances=idv)
        meas = result.measurements
        status = result.shutdown_status
        if status.get("terminated"):
            if truncate:
                kept = max(0, (step - settle_steps) // per_sample)
                shutdown = {"hours": float(result.time), "reason": str(status.get("message", ""))}
                return rows[:kept], time.process_time() - start, shutdown
            raise PlantShutdownError(result.time, status.get("message", ""), _describe(params))
        moves += result.implemented_action[:_N_XMV]
        if (step + 1) % per_sample == 0:
            moves /= per_sample
            if step >= settle_steps:
                i = (step - settle_steps) // per_sample
                rows[i, :41] = meas[:41]
                rows[i, 41:] = moves
            moves = np.zeros(_N_XMV)
    return rows, time.process_time() - start, None


def _cache_files(home: Path, params: dict) -> tuple[Path, Path]:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    folder = home / "simulated" / "tep"
    return folder / f"{key}.npz", folder / f"{key}.json"


def _frame(rows: np.ndarray) -> pd.DataFrame:
    index = pd.date_range(SIM_START, periods=len(rows), freq=TEP_SAMPLING, name="time")
    return pd.DataFrame(rows, index=index, columns=list(TEP_COLUMNS))


def simulate_tep(hours: float = 48.0, *, seed: int = 0, mode: int = 1, disturbance=None,
                 onset_hours: float = 0.0, settle_hours: float | None = None,
                 control_interval: float = 0.0005, on_shutdown: str = "raise",
                 cache: bool = True, data_home: str | os.PathLike | None = None
                 ) -> pd.DataFrame:
    """Simulate the Tennessee Eastman process under its decentralised control.

    Parameters
    ----------
    hours : float, default=48.0
        Hours returned (20 rows per hour, one every 3 minutes), after the settling.
    seed : int, default=0
        Seed of the simulator's random streams (noise, random disturbances).
    mode : int in 1..6 or "mode1".."mode6", default=1
        Operating mode; the controller gets that mode's setpoints.
    disturbance : str, int or None, default=None
        One of the simulator's disturbances, by name (``"idv_01"`` .. ``"idv_28"``) or number
        (1..28, the simulator's numbering: not Braatz's fault numbers beyond 15).
    onset_hours : float, default=0.0
        When the disturbance switches on, in hours after the first returned row (row
        ``20 * onset_hours`` is the first one it can affect).
    settle_hours : float, optional
        Hours simulated and dropped first; default :data:`SETTLE_HOURS` ``[mode]``.
    control_interval : float, default=0.0005
        The controller's and integrator's step in hours; must divide 3 minutes.
    on_shutdown : {"raise", "truncate"}, default="raise"
        When the plant trips: raise :class:`PlantShutdownError`, or return the rows
        completed before the trip with ``attrs["shutdown"] = {"hours", "reason"}`` (hours
        since the run's start, settling included).
    cache : bool, default=True
        Read and write the run in the data home (see the module doc).
    data_home : str or path, optional
        Overrides ``MOLA_TS_DATA`` for the cache.

    Returns
    -------
    DataFrame
        ``20 * hours`` rows, columns ``XMEAS(1..41)``, ``XMV(1..11)``, a 3-minute
        DatetimeIndex from 2000-01-01 00:00 named ``time``. ``attrs`` holds the parameters,
        the ``tep-studio`` version, the simulation's CPU seconds, ``cached`` and ``shutdown``
        (None, or when and why the plant tripped with ``on_shutdown="truncate"``).

    Raises
    ------
    SimulatorMissingError
        When ``tep-studio`` is not installed (an ImportError naming the extra).
    PlantShutdownError
        When the plant trips before the horizon (the message says after how many hours and
        the simulator's reason).
    ValueError, TypeError
        For an unknown mode or disturbance, or hours that are not finite numbers >= 0.

    Examples
    --------
    >>> from mola_ts.data import simulate_tep
    >>> run = simulate_tep(2.0, seed=1, cache=False)  # doctest: +SKIP
    >>> run.shape, run.index.freqstr  # doctest: +SKIP
    ((40, 52), '3min')
    """
    mode = _check_mode(mode)
    name = _check_disturbance(disturbance)
    hours = _check_hours(hours, "hours", positive=True)
    onset = _check_hours(onset_hours, "onset_hours", positive=False)
    settle = SETTLE_HOURS[mode] if settle_hours is None else \
        _check_hours(settle_hours, "settle_hours", positive=False)
    ci = _check_hours(control_interval, "control_interval", positive=True)
    if abs(_SAMPLE_HOURS / ci - round(_SAMPLE_HOURS / ci)) > 1e-9:
        raise ValueError(f"control_interval must divide the 3-minute sampling (0.05 h), got {ci}")
    if abs(hours / _SAMPLE_HOURS - round(hours / _SAMPLE_HOURS)) > 1e-9 or \
            abs(settle / _SAMPLE_HOURS - round(settle / _SAMPLE_HOURS)) > 1e-9:
        raise ValueError(f"hours and settle_hours must be multiples of 3 minutes (0.05 h), got "
                         f"{hours} and {settle}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    if on_shutdown not in ("raise", "truncate"):
        raise ValueError(f"on_shutdown must be 'raise' or 'truncate', got {on_shutdown!r}")
    if name is not None and onset >= hours:
        raise ValueError(f"onset_hours={onset:g} must lie inside the {hours:g} returned hours")
    tep_studio = _simulator()[0]
    params = {"hours": hours, "seed": int(seed), "mode": mode, "disturbance": name,
              "onset_hours": onset if name is not None else None, "settle_hours": settle,
              "control_interval": ci, "tep_studio": tep_studio.__version__,
              "format": _CACHE_VERSION}
    files = _cache_files(get_data_home(data_home), params) if cache else None
    if files is not None and files[0].is_file() and files[1].is_file():
        try:
            with np.load(files[0]) as stored:
                rows, seconds = stored["rows"], float(stored["cpu_seconds"])
            shutdown = json.loads(files[1].read_text()).get("shutdown")
            cached = True
        except (OSError, ValueError, KeyError) as exc:
            warnings.warn(f"the cached run {files[0]} could not be read ({exc}); simulating "
                          "again", stacklevel=2)
            cached = False
    else:
        cached = False
    if cached and shutdown is not None and on_shutdown == "raise":
        raise PlantShutdownError(shutdown["hours"], shutdown["reason"],
                                 _describe(params) + ", cached")
    if not cached:
        # a trip is cached as the truncated run, so the two settings share one file
        rows, seconds, shutdown = _run(params, truncate=files is not None or
                                       on_shutdown == "truncate")
        if files is not None:
            _store(files, rows, seconds, {**params, "shutdown": shutdown})
        if shutdown is not None and on_shutdown == "raise":
            raise PlantShutdownError(shutdown["hours"], shutdown["reason"],
                                     _describe(params))
    frame = _frame(rows)
    frame.attrs.update(params, cpu_seconds=seconds, cached=cached, shutdown=shutdown)
    return frame


def _describe(params: dict) -> str:
    return (f"mode {params['mode']}, seed {params['seed']}"
            + (f", {params['disturbance']} from {params['onset_hours']:g} h"
               if params["disturbance"] else ""))


def _store(files: tuple[Path, Path], rows: np.ndarray, seconds: float, params: dict) -> None:
    data_file, meta_file = files
    try:
        data_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = data_file.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, rows=rows, cpu_seconds=seconds)
        os.replace(tmp, data_file)
        meta_file.write_text(json.dumps(params, indent=1, sort_keys=True))
    except OSError as exc:
        warnings.warn(f"the simulated run was not cached: {data_file.parent} cannot be written "
                      f"({exc}); set MOLA_TS_DATA to a writable folder to keep runs",
                      stacklevel=3)


def settling_time(run: pd.DataFrame, scale, columns=None, *, window_hours: float = 8.0,
                  tolerance: float = 1.0, final_hours: float = 48.0) -> float:
    """Hours after which every variable of a run stays near its final level.

    For each column, the ``window_hours`` moving mean is compared with the column's mean over
    the run's last ``final_hours`` (the reference stretch); the run counts as settled from the
    first time after which every moving mean stays within ``tolerance * scale[column]`` of it.
    ``scale`` gives each column's unit of drift (a mapping or Series, e.g. the standard
    deviations of normal mode-1 data: a drift is judged against the spread a monitor learnt);
    ``columns`` defaults to every column of ``run`` with a positive scale. Returns NaN when the
    run never settles (a moving mean is still outside at the last row).
    """
    window = int(round(window_hours / _SAMPLE_HOURS))
    last = int(round(final_hours / _SAMPLE_HOURS))
    if len(run) < window + last:
        raise ValueError(f"run has {len(run)} rows; settling needs at least {window + last} "
                         f"({window_hours:g} h window + {final_hours:g} h final level)")
    tolerance = check_number(tolerance, "tolerance", numbers.Real, min_val=0.0,
                             include_boundaries="neither")
    scale = pd.Series(scale, dtype=np.float64)
    if columns is None:
        columns = [c for c in run.columns if c in scale.index and scale[c] > 0]
    missing = [c for c in columns if c not in run.columns or c not in scale.index]
    if missing or not len(columns):
        raise ValueError(f"settling needs columns present in both run and scale; missing "
                         f"{missing or 'all (no column with a positive scale)'}")
    bad = [c for c in columns if not np.isfinite(scale[c]) or scale[c] <= 0]
    if bad:
        raise ValueError(f"scale must be finite and > 0 for every column checked; got "
                         f"{scale[bad].to_dict()}")
    settled_from = 0
    for column in columns:
        values = run[column].to_numpy(dtype=np.float64)
        moving = pd.Series(values).rolling(window).mean().to_numpy()
        final = values[-last:].mean()
        outside = np.flatnonzero(~(np.abs(moving - final) <= tolerance * scale[column]))
        if len(outside) and outside[-1] >= len(values) - 1:
            return float("nan")
        settled_from = max(settled_from, int(outside[-1]) + 1 if len(outside) else 0)
    return settled_from * _SAMPLE_HOURS
