"""``mola-ts bench plant``: the monitors on simulated Tennessee Eastman data, at scale.

Every monitor (constructor defaults, as in the TEP demo) is fitted on settled normal runs of
mode 1 (``--train-runs`` runs of ``--train-hours``), then measured on data it never saw:

- **false alarms**: ``--normal-runs`` fresh normal runs of ``--normal-hours`` (other seeds); the
  FAR is the share of alarms over all their scored samples (the warm-up rows of each run are
  left out), with the spread over runs;
- **detection**: one run per simulator disturbance (``idv_01`` .. ``idv_28``, labelled by the
  simulator's names, never Braatz's fault numbers) of ``--fault-hours``, the disturbance on after
  ``--onset-hours``: FAR before the onset, FDR after it, detection delay (first of 3
  consecutive alarms). A run that trips the plant is scored up to the trip (``shutdown_h``).

Columns constant in the training runs are dropped first (the Ricker controller holds the
compressor recycle and stripper steam valves, XMV(5) and XMV(9), fixed). Seeds: training
``1000 + i``, normal test ``2000 + i``, disturbance ``d``: ``3000 + d``. Runs
are simulated once and cached in the data home (``simulate_tep``), so a second call only
scores. Writes ``far.csv``, ``detection.csv`` and ``summary.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["add_arguments", "run", "run_bench"]

_MODELS = ("Residual", "MOLA", "PCA", "DPCA")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for far.csv, detection.csv, "
                                                     "summary.json")
    parser.add_argument("--models", nargs="*", default=None,
                        help=f"monitors (default: {' '.join(_MODELS)})")
    parser.add_argument("--train-runs", type=int, default=4)
    parser.add_argument("--train-hours", type=float, default=50.0)
    parser.add_argument("--normal-runs", type=int, default=25)
    parser.add_argument("--normal-hours", type=float, default=100.0)
    parser.add_argument("--fault-hours", type=float, default=48.0)
    parser.add_argument("--onset-hours", type=float, default=8.0)
    parser.add_argument("--disturbances", nargs="*", default=None,
                        help="simulator disturbances (default: all 28, idv_01..idv_28)")
    parser.add_argument("--jobs", type=int, default=1, help="simulations run in parallel")
    parser.add_argument("--quick", action="store_true",
                        help="2 x 10 h training, 2 x 10 h normal, 3 disturbances x 6 h, "
                             "MOLA for 3 epochs (a smoke run, not a measurement)")


def _monitors(names, quick: bool) -> dict:
    from ..monitor import DPCAMonitor, MOLAMonitor, PCAMonitor, ResidualMonitor

    make = {"Residual": ResidualMonitor, "PCA": PCAMonitor, "DPCA": DPCAMonitor,
            "MOLA": (lambda: MOLAMonitor(epochs=3, patience=2)) if quick else MOLAMonitor}
    unknown = [n for n in names if n not in make]
    if unknown:
        raise ValueError(f"unknown monitors {unknown}; choose from {list(make)}")
    return {n: make[n]() for n in names}


def _simulate(job: dict) -> pd.DataFrame:
    from ..data import simulate_tep

    return simulate_tep(**job)


def _simulate_all(jobs: list[dict], n_jobs: int) -> list[pd.DataFrame]:
    if n_jobs <= 1:
        return [_simulate(j) for j in jobs]
    with ProcessPoolExecutor(n_jobs) as pool:
        return list(pool.map(_simulate, jobs))


def _plan(args) -> dict[str, list[dict]]:
    from ..data import TEP_SIM_DISTURBANCES

    if args.quick:
        args.train_runs, args.train_hours = 2, 10.0
        args.normal_runs, args.normal_hours = 2, 10.0
        args.fault_hours, args.onset_hours = 6.0, 2.0
        args.disturbances = args.disturbances or ["idv_01", "idv_04", "idv_06"]
    names = args.disturbances or list(TEP_SIM_DISTURBANCES)
    bad = [n for n in names if n not in TEP_SIM_DISTURBANCES]
    if bad:
        raise ValueError(f"unknown disturbances {bad}; the simulator's are idv_01..idv_28")
    base = {"mode": 1}
    return {
        "train": [dict(base, hours=args.train_hours, seed=1000 + i)
                  for i in range(args.train_runs)],
        "normal": [dict(base, hours=args.normal_hours, seed=2000 + i)
                   for i in range(args.normal_runs)],
        "fault": [dict(base, hours=args.fault_hours, seed=3000 + int(n[4:]), disturbance=n,
                       onset_hours=args.onset_hours, on_shutdown="truncate") for n in names],
    }


def run_bench(args: argparse.Namespace, *, verbose: bool = True) -> dict:
    """Simulate (or read the cache), fit, score; return and write the tables."""
    from ..metrics import detection_delay, false_alarm_rate, fault_detection_rate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(args)
    monitors = _monitors(list(args.models or _MODELS), args.quick)
    start = time.perf_counter()
    data = {k: _simulate_all(v, args.jobs) for k, v in plan.items()}
    sim_cpu = sum(r.attrs["cpu_seconds"] for runs in data.values() for r in runs
                  if not r.attrs["cached"])
    if verbose:
        n = {k: sum(len(r) for r in v) for k, v in data.items()}
        print(f"simulated/read {n} samples in {time.perf_counter() - start:.0f} s wall "
              f"({sim_cpu:.0f} CPU s of new simulation)", flush=True)
    # the Ricker controller holds some valves fixed (XMV(5), XMV(9) in mode 1): constant
    # columns carry nothing to monitor, and the monitors refuse them
    train_all = pd.concat(data["train"])
    spread = train_all.max() - train_all.min()
    constant = [c for c in train_all.columns
                if spread[c] <= 1e-9 * max(1.0, abs(train_all[c].mean()))]
    data = {k: [r.drop(columns=constant) for r in v] for k, v in data.items()}
    if verbose and constant:
        print(f"dropped the columns constant in the training runs: {constant}", flush=True)
    onset = int(round(args.onset_hours * 20))
    far_rows, det_rows = [], []
    for name, monitor in monitors.items():
        t0 = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monitor.fit(data["train"])
        fit_s = time.process_time() - t0
        alarms, per_run = [], []
        for r in data["normal"]:
            stats = monitor.statistics(r)
            scored = stats["warmup"].to_numpy() == 0
            a = stats["alarm"].to_numpy()[scored]
            alarms.append(a)
            per_run.append(a.mean())
        pooled = np.concatenate(alarms)
        far_rows.append({"model": name, "far_pct": 100 * pooled.mean(),
                         "far_run_std_pct": 100 * float(np.std(per_run, ddof=1))
                         if len(per_run) > 1 else float("nan"),
                         "n_samples": len(pooled), "n_runs": len(per_run),
                         "fit_cpu_s": fit_s, "alpha": float(monitor.alpha)})
        for r in data["fault"]:
            a = monitor.predict(r)
            shutdown = r.attrs.get("shutdown")
            det_rows.append({
                "model": name, "disturbance": r.attrs["disturbance"],
                "fdr_pct": 100 * fault_detection_rate(a, onset) if len(a) > onset else np.nan,
                "far_before_onset_pct": 100 * false_alarm_rate(a, stop=min(onset, len(a))),
                "delay_samples": detection_delay(a, onset) if len(a) > onset else np.nan,
                "n_rows": len(a),
                "shutdown_h": np.nan if shutdown is None else shutdown["hours"]})
        if verbose:
            print(f"  {name}: FAR {far_rows[-1]['far_pct']:.3f} % on {len(pooled)} samples",
                  flush=True)
    far = pd.DataFrame(far_rows)
    det = pd.DataFrame(det_rows)
    far.to_csv(out / "far.csv", index=False)
    det.to_csv(out / "detection.csv", index=False)
    summary = {"dropped_constant_columns": constant, "settings": {k: getattr(args, k) for k in (
        "train_runs", "train_hours", "normal_runs", "normal_hours", "fault_hours",
        "onset_hours", "quick")},
        "simulation_cpu_s": sim_cpu, "far": far_rows,
        "mean_fdr_pct": det.groupby("model")["fdr_pct"].mean().to_dict() if len(det) else {}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if verbose:
        print(format_tables(far, det))
        print(f"\nwrote {out / 'far.csv'}, {out / 'detection.csv'}, {out / 'summary.json'}")
    return {"far": far, "detection": det}


def format_tables(far: pd.DataFrame, det: pd.DataFrame) -> str:
    """The printed tables: FAR per monitor, then FDR / delay per disturbance."""
    lines = ["False alarms on fresh simulated normal data (mode 1)",
             f"{'model':<10}{'FAR %':>8}{'std over runs':>15}{'samples':>10}{'fit CPU s':>11}"]
    for r in far.itertuples():
        lines.append(f"{r.model:<10}{r.far_pct:>8.3f}{r.far_run_std_pct:>15.3f}"
                     f"{r.n_samples:>10}{r.fit_cpu_s:>11.1f}")
    if len(det):
        fdr = det.pivot(index="disturbance", columns="model", values="fdr_pct")
        delay = det.pivot(index="disturbance", columns="model", values="delay_samples")
        trips = det.groupby("disturbance")["shutdown_h"].first()
        models = list(fdr.columns)
        lines += ["", "Detection of the simulator's disturbances: FDR % (delay, samples)",
                  f"{'disturbance':<13}" + "".join(f"{m:>18}" for m in models) + "  trip h"]
        for d in fdr.index:
            cells = "".join(f"{fdr.loc[d, m]:>9.1f} ({delay.loc[d, m]:>5.0f})" for m in models)
            trip = trips.loc[d]
            lines.append(f"{d:<13}{cells}  {'' if np.isnan(trip) else f'{trip:.1f}'}")
        lines.append(f"{'mean':<13}" + "".join(f"{fdr[m].mean():>9.1f}{'':>9}" for m in models))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    run_bench(args)
    return 0
