"""``mola-ts bench serve``: the service under load on loopback, and kill -9 during a replay.

Measured against a real ``mola-ts serve`` process (one uvicorn worker, the default limits):

- throughput: batches of ``batch`` rows posted back to back for ``seconds``; scored samples
  per second (each batch answered after its durable commit);
- latency: ``latency_rows`` single-row posts one after the other; p50/p99/max round trip,
  durable commit included;
- memory: the server's resident set size sampled every second through the run (and over
  ``soak_seconds`` of posting at full speed, for the bounded-memory goal);
- kill -9: a run replayed while the server is killed ``kills`` times and restarted; the stored
  statistics are compared with an uninterrupted run's, bit for bit.

Latencies are measured on whatever else the machine runs: read them as upper bounds. The
machine's load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .replay import ReplayClient, batch_json, replay
from .store import DB_NAME

__all__ = ["add_arguments", "run", "ServerProcess", "RssSampler", "cpu_seconds",
           "measure_throughput",
           "measure_latency", "replay_with_kills", "stored_results", "row_feed"]


class ServerProcess:
    """``mola-ts serve MODEL`` in a child process on a loopback port."""

    def __init__(self, model_file: Path, state_dir: Path, port: int, extra: tuple = ()):
        self.args = [sys.executable, "-m", "mola_ts.cli", "serve", str(model_file), "--port",
                     str(port), "--state-dir", str(state_dir), "--log-level", "error", *extra]
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        client = ReplayClient(self.url, timeout=5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mola-ts serve exited: {self.proc.stderr.read().decode()}")
            try:
                if client.request("GET", "/health")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"mola-ts serve did not answer within {timeout} s")

    def kill(self) -> None:
        """kill -9: no shutdown of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


class RssSampler(threading.Thread):
    """Samples a process's resident set size (MiB) every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 1.0, log: Path | None = None):
        super().__init__(daemon=True)
        self.pid, self.interval, self.log = pid, interval, log
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()
        self.began = time.monotonic()

    def rss(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def run(self) -> None:
        while not self.done.wait(self.interval):
            value = self.rss()
            if value is not None:
                self.samples.append((round(time.monotonic() - self.began, 1), value))
                if self.log is not None:  # written as it goes: a long soak leaves its trace
                    with open(self.log, "a", encoding="utf-8") as f:
                        f.write(f"{self.samples[-1][0]},{value:.2f}\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def row_feed(base: pd.DataFrame, start: pd.Timestamp, step: pd.Timedelta):
    """An endless feed of ``base``'s rows, cycled, at increasing times: ``next_batch(n)``."""
    values = base.to_numpy(dtype=np.float64)
    state = {"i": 0}

    def next_batch(n: int) -> pd.DataFrame:
        i = state["i"]
        state["i"] = i + n
        index = pd.DatetimeIndex([start + step * k for k in range(i, i + n)])
        return pd.DataFrame(values[np.arange(i, i + n) % len(values)], index=index,
                            columns=base.columns)

    return next_batch


def _post(client: ReplayClient, frame: pd.DataFrame) -> int:
    status, answer = client.request("POST", "/samples", batch_json(frame))
    if status != 200:
        raise RuntimeError(f"the service answered {status}: {answer}")
    return answer["accepted"]


def measure_throughput(client: ReplayClient, next_batch, seconds: float, batch: int = 100
                       ) -> dict[str, Any]:
    """Batches posted back to back for ``seconds``: scored samples per second."""
    began = time.perf_counter()
    rows = posts = 0
    while time.perf_counter() - began < seconds:
        rows += _post(client, next_batch(batch))
        posts += 1
    wall = time.perf_counter() - began
    return {"batch": batch, "posts": posts, "rows": rows, "seconds": round(wall, 2),
            "samples_per_s": round(rows / wall, 1)}


def measure_latency(client: ReplayClient, next_batch, n: int) -> dict[str, Any]:
    """``n`` single-row posts one after the other: round-trip percentiles in ms."""
    times = []
    for _ in range(n):
        body = batch_json(next_batch(1))
        began = time.perf_counter()
        status, answer = client.request("POST", "/samples", body)
        times.append((time.perf_counter() - began) * 1000)
        if status != 200:
            raise RuntimeError(f"the service answered {status}: {answer}")
    ms = np.array(times)
    return {"posts": n, "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2)}


def stored_results(state_dir: Path) -> list[dict]:
    """Every stored row's result, in order (read from the database directly)."""
    db = sqlite3.connect(Path(state_dir) / DB_NAME)
    try:
        return [json.loads(r) for (r,) in db.execute("SELECT result FROM samples ORDER BY seq")]
    finally:
        db.close()


def replay_with_kills(model_file: Path, state_dir: Path, frame: pd.DataFrame, port: int,
                      kills: int = 1, batch: int = 5, seed: int = 0) -> dict[str, Any]:
    """Replay ``frame`` at full speed while the server is killed (-9) and restarted
    ``kills`` times at random moments; compare the stored statistics with an uninterrupted
    run of the same monitor (``monitor.statistics(frame)``)."""
    from .service import load_stream

    rng = np.random.default_rng(seed)
    server = ServerProcess(model_file, state_dir, port).start()
    summary: dict[str, Any] = {}
    error: list[BaseException] = []

    def drive() -> None:
        try:
            summary.update(replay(frame, ReplayClient(server.url), batch=batch,
                                  retry_seconds=300))
        except BaseException as exc:  # reported below
            error.append(exc)

    driver = threading.Thread(target=drive)
    driver.start()
    kill_points = sorted(rng.uniform(0.15, 0.85, size=kills) * len(frame))
    watcher = ReplayClient(server.url, timeout=5)
    done_kills = 0
    for point in kill_points:
        while driver.is_alive():
            try:
                if watcher.request("GET", "/health")[1]["samples_seen"] >= point:
                    break
            except (OSError, TypeError):
                pass
            time.sleep(0.01)
        if not driver.is_alive():
            break
        server.kill()
        done_kills += 1
        server.start()
    driver.join()
    server.stop()
    if error:
        raise error[0]
    stored = stored_results(state_dir)
    expected = load_stream(model_file).monitor.statistics(frame)
    got = pd.DataFrame([r["statistics"] for r in stored])
    columns = [c for c in got.columns if c in expected.columns]
    equal = len(stored) == len(frame) and all(
        np.array_equal(got[c].to_numpy(dtype=float), expected[c].to_numpy(dtype=float))
        for c in columns) and [r["alarm"] for r in stored] == expected["alarm"].tolist()
    return {"rows": len(frame), "stored": len(stored), "kills": done_kills,
            "seqs_contiguous": [r["seq"] for r in stored] == list(range(len(stored))),
            "repeated_by_retries": summary.get("repeated", 0),
            "bit_identical": bool(equal), "columns_compared": columns}


# ---------------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/bench-serve"))
    p.add_argument("--seconds", type=float, default=30.0, help="throughput phase")
    p.add_argument("--batch", type=int, default=100, help="rows per post (throughput)")
    p.add_argument("--latency-rows", type=int, default=2000, help="single-row posts")
    p.add_argument("--soak-seconds", type=float, default=0.0,
                   help="posting at full speed while memory is sampled (3600: the hour goal)")
    p.add_argument("--kills", type=int, default=3, help="kill -9 during the replay (0: skip)")
    p.add_argument("--port", type=int, default=8765)


def run(args: argparse.Namespace) -> int:
    import warnings

    from ..data import load_tep
    from ..monitor import ResidualMonitor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_file = ResidualMonitor().fit(load_tep(0, "train")).save(out / "residual.pt")
    base = pd.concat([load_tep(0, "train"), load_tep(0, "test")])
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    state = out / "state"
    if state.exists():
        for path in state.iterdir():
            path.unlink()
    server = ServerProcess(model_file, state, args.port).start()
    (out / "rss.csv").write_text("seconds,rss_mib\n")
    sampler = RssSampler(server.proc.pid, interval=1.0 if args.soak_seconds < 600 else 10.0,
                         log=out / "rss.csv")
    sampler.start()
    feed = row_feed(base, pd.Timestamp("2030-01-01", tz="UTC"), pd.Timedelta("1s"))
    client = ReplayClient(server.url)
    pid = server.proc.pid
    try:
        cpu0, own0 = cpu_seconds(pid), time.process_time()
        results["throughput"] = measure_throughput(client, feed, args.seconds, args.batch)
        cpu = cpu_seconds(pid) - cpu0
        results["throughput"].update(
            server_cpu_s=round(cpu, 2), client_cpu_s=round(time.process_time() - own0, 2),
            samples_per_server_cpu_s=round(results["throughput"]["rows"] / max(cpu, 1e-9), 1))
        cpu0 = cpu_seconds(pid)
        results["latency"] = measure_latency(client, feed, args.latency_rows)
        results["latency"]["server_cpu_ms_per_post"] = round(
            (cpu_seconds(pid) - cpu0) * 1000 / args.latency_rows, 2)
        if args.soak_seconds > 0:
            results["soak"] = measure_throughput(client, feed, args.soak_seconds, args.batch)
    finally:
        sampler.done.set()
        server.stop()
    results["load_after"] = os.getloadavg()
    rss = [v for _, v in sampler.samples]
    results["rss_mib"] = {"first": rss[0] if rss else None, "max": max(rss, default=None),
                          "last": rss[-1] if rss else None, "samples": len(rss)}
    if args.kills > 0:
        kill_dir = out / "kill-state"
        if kill_dir.exists():
            for path in kill_dir.iterdir():
                path.unlink()
        run_frame = load_tep(1, "test")
        results["kill9"] = replay_with_kills(model_file, kill_dir, run_frame, args.port,
                                             kills=args.kills)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    t, lat = results["throughput"], results["latency"]
    print(f"machine: {results['cpus']} CPUs, load average {results['load_before'][0]:.2f} "
          f"before, {results['load_after'][0]:.2f} after")
    print(f"throughput: {t['samples_per_s']} samples/s (batches of {t['batch']}, "
          f"{t['rows']} rows in {t['seconds']} s); the server used {t['server_cpu_s']} CPU s "
          f"({t['samples_per_server_cpu_s']} samples per server CPU-second), the client "
          f"{t['client_cpu_s']}")
    print(f"single-row latency: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max "
          f"{lat['max_ms']} ms ({lat['posts']} posts, durable commit included; "
          f"{lat['server_cpu_ms_per_post']} server CPU-ms per post)")
    if "soak" in results:
        print(f"soak: {results['soak']['samples_per_s']} samples/s over "
              f"{results['soak']['seconds']} s")
    r = results["rss_mib"]
    print(f"server memory (RSS MiB): first {r['first']}, max {r['max']}, last {r['last']}")
    if "kill9" in results:
        k = results["kill9"]
        print(f"kill -9 x{k['kills']} during a replay of {k['rows']} rows: {k['stored']} "
              f"stored, bit-identical to an uninterrupted run: {k['bit_identical']}")
    print(f"wrote {out / 'results.json'}")
    return 0
