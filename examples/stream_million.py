"""A million samples through one MOLA stream: memory stays flat, dropouts are flagged.

Run from the repository root::

    python examples/stream_million.py                      # 10^6 samples, 52 variables
    python examples/stream_million.py --samples 100000     # a shorter run

A monitor is fitted on a synthetic in-control process (52 correlated variables, like the
Tennessee Eastman plant), then a stream of ``--samples`` new samples of the same process is
scored in chunks of ``--chunk`` rows, with sensor dropouts (NaN runs in random variables) mixed
in. The samples are generated chunk by chunk and the statistics of each chunk are reduced to
counts, so what grows with the stream is only what the stream itself keeps: the script prints
the resident memory after every tenth of the run, the stream's state size and the throughput.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import pandas as pd

from mola_ts.monitor import MOLAMonitor


def rss_mib() -> float:
    """The process's peak resident memory so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class Process:
    """A stationary VAR(1) process: x_t = 0.8 x_{t-1} + e_t, mixed into correlated variables."""

    def __init__(self, n_variables: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.mixing = self.rng.normal(size=(n_variables, n_variables)) / np.sqrt(n_variables)
        self.state = np.zeros(n_variables)

    def sample(self, n: int) -> np.ndarray:
        out = np.empty((n, len(self.state)))
        noise = self.rng.normal(size=out.shape)
        for t in range(n):
            self.state = 0.8 * self.state + noise[t]
            out[t] = self.state
        return out @ self.mixing + 50.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1000, help="rows per stream.update call")
    parser.add_argument("--variables", type=int, default=52)
    parser.add_argument("--dropout-rate", type=float, default=1e-4,
                        help="chance per sample that a sensor drops out (for 1 to 20 samples)")
    args = parser.parse_args()

    process = Process(args.variables, seed=0)
    columns = [f"x{i}" for i in range(args.variables)]
    normal = pd.DataFrame(process.sample(3000), columns=columns)
    start = time.perf_counter()
    monitor = MOLAMonitor(blocks="correlation", n_blocks=6, window=10, hidden_size=32,
                          code_size=8, epochs=5, random_state=0).fit(normal)
    print(f"fit on {len(normal)} samples in {time.perf_counter() - start:.0f} s; "
          f"{len(monitor.blocks_)} blocks; resident memory {rss_mib():.0f} MiB")

    stream = monitor.stream(missing="hold", max_hold=10)
    rng = np.random.default_rng(1)
    counts = {"alarm": 0, "sensor_fault": 0, "unmonitorable": 0}
    dropout_left = np.zeros(args.variables, dtype=int)
    start = time.perf_counter()
    done, report_every = 0, max(args.samples // 10, args.chunk)
    next_report = report_every
    while done < args.samples:
        n = min(args.chunk, args.samples - done)
        values = process.sample(n)
        for t in range(n):  # sensor dropouts: a variable reads NaN for 1..20 samples
            starts = rng.random(args.variables) < args.dropout_rate
            dropout_left[starts] = rng.integers(1, 21, size=int(starts.sum()))
            values[t, dropout_left > 0] = np.nan
            dropout_left = np.maximum(dropout_left - 1, 0)
        out = stream.update(values)
        counts["alarm"] += int(out["alarm"].sum())
        counts["sensor_fault"] += int(out["sensor_fault"].sum())
        counts["unmonitorable"] += int((out["monitorable"] == 0).sum())
        done += n
        if done >= next_report or done == args.samples:
            engine = stream.get_state()["engine"]
            numbers = engine["buffer"].size + sum(u.size + 1 for block in engine["cusums"]
                                                  for u, _ in block)
            print(f"{done:>9} samples  {time.perf_counter() - start:7.1f} s  peak resident "
                  f"memory {rss_mib():6.0f} MiB  stream state {numbers} numbers", flush=True)
            next_report += report_every
    elapsed = time.perf_counter() - start
    print(f"{args.samples} samples in {elapsed:.0f} s ({1e6 * elapsed / args.samples:.0f} us "
          f"per sample, chunks of {args.chunk}); alarms {counts['alarm']}, samples with a "
          f"sensor fault {counts['sensor_fault']}, unmonitorable {counts['unmonitorable']}")


if __name__ == "__main__":
    main()
