"""``mola-ts bench monitor``: scoring speed of every monitor on Tennessee Eastman-sized data.

Each monitor (constructor defaults, like the TEP demo) is fitted on d00 (52 variables) and then
timed on one thread (torch and the BLAS pools limited to one):

- **batch**: ``score_samples`` over the 22 TEP test runs laid end to end (21,120 samples),
  repeated ``--repeats`` times; samples per CPU-second of the fastest repeat;
- **stream**: ``stream().update(row)`` for ``--stream-rows`` single samples, given as a numpy
  row and as a pandas Series with a timestamp; median CPU milliseconds per update.

PCA is the ratio anchor (``vs_pca``: batch throughput relative to PCA's). Prints a table and
writes ``monitor_speed.csv`` and ``monitor_speed.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["add_arguments", "run", "run_bench"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for monitor_speed.csv/.json")
    parser.add_argument("--models", nargs="*", default=None,
                        help="monitors to time (default: Residual MOLA PCA DPCA)")
    parser.add_argument("--repeats", type=int, default=3, help="batch repeats (the best counts)")
    parser.add_argument("--stream-rows", type=int, default=300,
                        help="single-sample updates timed per monitor")
    parser.add_argument("--quick", action="store_true",
                        help="a MOLA trained for 3 epochs (timings of scoring are unaffected)")


def _models(quick: bool) -> dict[str, object]:
    from ..monitor import DPCAMonitor, MOLAMonitor, PCAMonitor, ResidualMonitor

    mola = MOLAMonitor(epochs=3, patience=2) if quick else MOLAMonitor()
    return {"Residual": ResidualMonitor(), "MOLA": mola, "PCA": PCAMonitor(),
            "DPCA": DPCAMonitor()}


def _cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def run_bench(out: str | Path, *, models=None, repeats: int = 3, stream_rows: int = 300,
              quick: bool = False, verbose: bool = True) -> pd.DataFrame:
    """Time every monitor; return the table (also written to ``out``)."""
    import torch
    from threadpoolctl import threadpool_limits

    from ..data import load_tep

    if repeats < 1 or stream_rows < 1:
        raise ValueError(f"repeats and stream_rows must be >= 1, got {repeats} and "
                         f"{stream_rows}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    available = _models(quick)
    names = list(available) if not models else list(models)
    unknown = [m for m in names if m not in available]
    if unknown:
        raise ValueError(f"unknown monitors {unknown}; choose from {list(available)}")
    if "PCA" not in names:
        names.append("PCA")  # the ratio anchor
    d00 = load_tep(0, "train")
    runs = pd.concat([load_tep(f, "test") for f in range(22)], ignore_index=True)
    batch = runs.to_numpy()
    rows = load_tep(1, "test").iloc[:stream_rows]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    table = []
    try:
        with threadpool_limits(1):
            for name in names:
                model = available[name]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit_s = _cpu(lambda m=model: m.fit(d00))
                best = min(_cpu(lambda m=model: m.score_samples(batch)) for _ in range(repeats))
                stream = model.stream()
                arrays = [_cpu(lambda r=r, s=stream: s.update(r)) for r in rows.to_numpy()]
                stream = model.stream()
                series = [_cpu(lambda i=i, s=stream: s.update(rows.iloc[i]))
                          for i in range(len(rows))]
                table.append({"model": name, "fit_cpu_s": fit_s,
                              "batch_samples": len(batch), "batch_cpu_s": best,
                              "batch_samples_per_cpu_s": len(batch) / max(best, 1e-9),
                              "stream_ms_array": 1e3 * float(np.median(arrays)),
                              "stream_ms_series": 1e3 * float(np.median(series)),
                              "stream_ms_array_p95": 1e3 * float(np.percentile(arrays, 95))})
                if verbose:
                    print(f"  {name}: done", flush=True)
    finally:
        torch.set_num_threads(previous)
    frame = pd.DataFrame(table)
    anchor = frame.set_index("model").loc["PCA", "batch_samples_per_cpu_s"]
    frame["vs_pca"] = frame["batch_samples_per_cpu_s"] / anchor
    frame.to_csv(out / "monitor_speed.csv", index=False)
    (out / "monitor_speed.json").write_text(json.dumps(table, indent=2))
    if verbose:
        print(format_table(frame))
        print(f"\nwrote {out / 'monitor_speed.csv'} and {out / 'monitor_speed.json'}")
    return frame


def format_table(frame: pd.DataFrame) -> str:
    """The printed table."""
    lines = ["Monitor scoring speed on TEP (52 variables), one thread, CPU time",
             f"{'model':<10}{'batch samples/CPU-s':>21}{'vs PCA':>9}{'stream ms (array)':>19}"
             f"{'stream ms (Series)':>20}{'p95 ms':>9}"]
    for r in frame.itertuples():
        lines.append(f"{r.model:<10}{r.batch_samples_per_cpu_s:>21,.0f}{r.vs_pca:>9.3f}"
                     f"{r.stream_ms_array:>19.3f}{r.stream_ms_series:>20.3f}"
                     f"{r.stream_ms_array_p95:>9.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    run_bench(args.out, models=args.models, repeats=args.repeats, stream_rows=args.stream_rows,
              quick=args.quick)
    return 0
