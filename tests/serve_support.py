"""Helpers of the service tests: a small plant run, a fitted monitor file, a loopback server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["a", "b", "c", "d"]


def plant_run(n: int = 600, seed: int = 0, fault_at: int | None = None,
              start: str = "2024-01-01") -> pd.DataFrame:
    """A VAR(1) run of 4 variables every 3 minutes (UTC); ``a`` steps by +8 from
    ``fault_at``."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n + 50, 4))
    for t in range(1, n + 50):
        x[t] = 0.8 * x[t - 1] + rng.normal(size=4)
    x = x[50:]
    if fault_at is not None:
        x[fault_at:, 0] += 8.0
    index = pd.date_range(start, periods=n, freq="3min", tz="UTC", name="time")
    return pd.DataFrame(x, index=index, columns=COLUMNS)


def fitted_monitor_file(folder: Path, **params) -> Path:
    """A ResidualMonitor fitted on a normal run, saved in ``folder``."""
    from mola_ts.monitor import ResidualMonitor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small run's limit-support warning
        monitor = ResidualMonitor(alpha=0.05, **params).fit(plant_run(1500, seed=1))
    return monitor.save(folder / "monitor.pt")


def rows(frame: pd.DataFrame) -> list[dict]:
    """The JSON rows of ``frame`` (NaN as None)."""
    out = []
    for t, values in zip(frame.index, frame.to_numpy().tolist(), strict=True):
        item = {"time": t.isoformat()}
        item.update((c, None if np.isnan(v) else v)
                    for c, v in zip(frame.columns, values, strict=True))
        out.append(item)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app, port: int | None = None):
    """``app`` served by uvicorn on a loopback port in a thread; yields the base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
