"""``mola-ts bench adapt``: monitors moved from mode 1 to a new operating mode of simulated TEP.

A residual monitor with the LoRA-MoE predictor (``ResidualMonitor(predictor="lora-moe")``) is
fitted on settled normal runs of mode 1 (the plant bench's training runs). For every new mode
k (2..6) and every stretch of new-mode normal data (``--hours``: 2, 8 and 24 h by default, the
first hours of one run), it compares on data none of them saw:

- ``unchanged``: the mode-1 monitor as it is;
- ``adapted``: the mode-1 monitor adapted with :meth:`~mola_ts.monitor.ResidualMonitor.adapt`
  (only the new mode's expert trains; ``--scale``, ``--limit`` and ``--rescale`` set the
  standardisation and the limits);
- ``retrained``: a fresh residual monitor (same predictor) fitted on the new data alone;
- ``PCA`` / ``DPCA``: refitted on the new data;
- ``reference``: a fresh residual monitor fitted on 48 h of that mode (the goal's yardstick).

Data of mode k: one long settled normal run (seed ``6000 + 100 k``) cut into stretches
(hours from its first row, :data:`_SLICES`): 0-24 adaptation (its first 2 / 8 / 24 h),
24-48 validation adaptation, 48-72 validation normal, 72-120 the reference's 48 h, 120-168
the test normal data; and one 12 h run per disturbance in ``--disturbances`` (seed
``6000 + 100 k + 20 + number``), the disturbance on after 2 h. Measured per mode: FAR on the
test stretch (warm-up rows left out), FDR after the onset of each disturbance (a run that trips
is scored up to the trip), the trainable parameters of what was fitted and its CPU seconds.
``--select`` first picks ``scale``, ``limit`` and ``rescale`` on the *validation* stretches
only (8 hours of adaptation data, FAR on the validation normal stretch): the
setting whose worst validation FAR over the modes is closest to alpha; the test data are never
used to choose. Mode-1 training runs: seeds ``1000 + i`` (as ``bench plant``). Writes
``results.csv``, ``detection.csv`` and ``summary.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .plant import _simulate_all

__all__ = ["add_arguments", "run", "run_bench"]

_DISTURBANCES = ("idv_01", "idv_02", "idv_04")
#: the adaptation settings --select chooses from: (scale, limit, rescale)
_VARIANTS = (("source", "source", True), ("source", "parametric", True),
             ("new", "parametric", True))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for results.csv, detection.csv, "
                                                     "summary.json")
    parser.add_argument("--modes", nargs="*", type=int, default=[2, 3, 4, 5, 6])
    parser.add_argument("--hours", nargs="*", type=float, default=[2.0, 8.0, 24.0],
                        help="hours of new-mode normal data to adapt / refit on")
    parser.add_argument("--limit", choices=["source", "parametric"], default="source")
    parser.add_argument("--scale", choices=["source", "new"], default="source")
    parser.add_argument("--no-rescale", dest="rescale", action="store_false",
                        help="keep the source residual scales (default: re-estimate them)")
    parser.add_argument("--select", action="store_true",
                        help="choose --scale / --limit / --rescale on validation data first")
    parser.add_argument("--train-runs", type=int, default=4)
    parser.add_argument("--disturbances", nargs="*", default=list(_DISTURBANCES))
    parser.add_argument("--jobs", type=int, default=1, help="simulations run in parallel")
    parser.add_argument("--quick", action="store_true",
                        help="mode 2 only, 2 x 10 h of mode 1, runs a quarter as long, one "
                             "disturbance (a smoke run, not a measurement)")


#: the stretches of a mode's one long normal run, in hours from its first settled row
_SLICES = {"adapt": (0, 24), "val_adapt": (24, 48), "val_normal": (48, 72),
           "reference": (72, 120), "normal": (120, 168)}


def _plan(args) -> dict:
    """Every simulation the bench needs (runs are cached in the data home)."""
    plan = {"train": [dict(mode=1, hours=10.0 if args.quick else 50.0, seed=1000 + i)
                      for i in range(args.train_runs)]}
    for k in args.modes:
        b = 6000 + 100 * k
        plan[k] = {"long": [dict(mode=k, hours=_scale(args) * 168.0, seed=b,
                                 on_shutdown="truncate")],
                   "fault": [dict(mode=k, hours=_scale(args) * 12.0, seed=b + 20 + int(d[4:]),
                                  disturbance=d, onset_hours=_scale(args) * 2.0,
                                  on_shutdown="truncate") for d in args.disturbances]}
    return plan


def _scale(args) -> float:
    return 0.25 if args.quick else 1.0


def _split(long: pd.DataFrame, scale: float) -> dict[str, list[pd.DataFrame]]:
    """The roles' stretches of one long normal run (a trip shortens or empties the last)."""
    rows = {role: (int(round(20 * scale * a)), int(round(20 * scale * b)))
            for role, (a, b) in _SLICES.items()}
    return {role: [long.iloc[a:b]] for role, (a, b) in rows.items()}


def _residual(name: str = "lora-moe"):
    from ..monitor import ResidualMonitor

    return ResidualMonitor(predictor=name)


def _far(monitor, runs) -> float:
    alarms = []
    for r in runs:
        stats = monitor.statistics(r)
        alarms.append(stats["alarm"].to_numpy()[stats["warmup"].to_numpy() == 0])
    return 100 * float(np.concatenate(alarms).mean())


def _fdr(monitor, runs, onset: int) -> dict[str, float]:
    from ..metrics import fault_detection_rate

    return {r.attrs["disturbance"]: 100 * fault_detection_rate(monitor.predict(r), onset)
            if len(r) > onset else np.nan for r in runs}


def _params(monitor) -> int:
    """Trainable parameters of a fitted monitor's model (what a refit estimates)."""
    predictor = getattr(monitor, "predictor_", None)
    if predictor is not None:
        return int(predictor.trunk_size())
    return int(monitor.components_.size)


def _fit(make, X) -> tuple[object | None, float, str]:
    t0 = time.process_time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monitor = make().fit(X)
    except ValueError as exc:  # too few rows for this monitor
        return None, np.nan, str(exc).split(";")[0][:120]
    return monitor, time.process_time() - t0, ""


def _adapt(source, X, mode: int, setting: tuple[str, str, bool]):
    scale, limit, rescale = setting
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monitor = copy.deepcopy(source).adapt(X, mode=mode, limit=limit, rescale=rescale,
                                              scale=scale)
    return monitor, time.process_time() - t0


def _select(source, data: dict, modes, alpha: float, verbose: bool) -> tuple[tuple, list]:
    """The (scale, limit, rescale) whose worst validation FAR over the modes is closest to
    alpha."""
    rows = []
    for setting in _VARIANTS:
        for k in modes:
            X = data[k]["val_adapt"][0].iloc[:160]  # 8 hours
            monitor, _ = _adapt(source, X, k, setting)
            rows.append({"scale": setting[0], "limit": setting[1], "rescale": setting[2],
                         "mode": k, "val_far_pct": _far(monitor, data[k]["val_normal"])})
            if verbose:
                print(f"  validation scale={setting[0]:<6} limit={setting[1]:<10} rescale="
                      f"{setting[2]!s:<5} mode {k}: FAR {rows[-1]['val_far_pct']:.2f} %",
                      flush=True)
    table = pd.DataFrame(rows)
    worst = table.groupby(["scale", "limit", "rescale"])["val_far_pct"].apply(
        lambda s: float(np.max(np.abs(s - 100 * alpha))))
    scale, limit, rescale = worst.idxmin()
    return (str(scale), str(limit), bool(rescale)), rows


def _evaluate(monitor, k_data: dict, onset: int) -> tuple[float, dict[str, float]]:
    return _far(monitor, k_data["normal"]), _fdr(monitor, k_data["fault"], onset)


def _mode_rows(source, k: int, k_data: dict, args, onset: int) -> tuple[list, list]:
    """Every method of one mode: result rows and per-disturbance rows."""
    from ..monitor import DPCAMonitor, PCAMonitor

    rows, det = [], []

    def add(method, hours, monitor, seconds, params, note=""):
        far, fdr = (np.nan, {}) if monitor is None else _evaluate(monitor, k_data, onset)
        rows.append({"mode": k, "hours": hours, "method": method, "far_pct": far,
                     "fdr_pct": float(np.nanmean(list(fdr.values()))) if fdr else np.nan,
                     "params": params, "cpu_s": seconds, "note": note})
        det.extend({"mode": k, "hours": hours, "method": method, "disturbance": d,
                    "fdr_pct": v} for d, v in fdr.items())

    ref, s, note = _fit(_residual, k_data["reference"])
    add("reference", float(len(k_data["reference"][0]) / 20), ref, s,
        _params(ref) if ref else np.nan, note)
    add("unchanged", 0.0, source, 0.0, 0)
    for hours in args.hours:
        X = k_data["adapt"][0].iloc[:int(round(20 * hours))]
        adapted, s = _adapt(source, X, k, (args.scale, args.limit, args.rescale))
        add("adapted", hours, adapted, s, adapted.predictor_.adapter_size())
        for method, make in (("retrained", _residual), ("PCA", PCAMonitor),
                             ("DPCA", DPCAMonitor)):
            monitor, s, note = _fit(make, X)
            add(method, hours, monitor, s, _params(monitor) if monitor else np.nan, note)
    return rows, det


def run_bench(args: argparse.Namespace, *, verbose: bool = True) -> dict:
    """Simulate (or read the cache), fit, adapt, score; return and write the tables."""
    if args.quick:
        args.modes, args.hours, args.train_runs = [2], [2.0, 4.0], 2
        args.disturbances = args.disturbances[:1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(args)
    start = time.perf_counter()
    data = {"train": _simulate_all(plan["train"], args.jobs)}
    unreachable = {}
    for k in list(args.modes):
        runs = {role: _simulate_all(jobs, args.jobs) for role, jobs in plan[k].items()}
        long = runs["long"][0]
        if long.attrs.get("shutdown"):  # the stretches would be cut: no settled mode k
            unreachable[k] = long.attrs["shutdown"]
            args.modes.remove(k)
            continue
        data[k] = {**_split(long, _scale(args)), "fault": runs["fault"]}
    trips = {f"mode {k}, {r.attrs['disturbance'] or 'normal'}, seed {r.attrs['seed']}":
             r.attrs["shutdown"] for k in args.modes for runs in data[k].values() for r in runs
             if r.attrs.get("shutdown")}
    if verbose:
        print(f"simulated/read the runs in {time.perf_counter() - start:.0f} s; trips: "
              f"{trips or 'none'}; modes whose normal run tripped: {unreachable or 'none'}",
              flush=True)
    train_all = pd.concat(data["train"])
    spread = train_all.max() - train_all.min()
    constant = [c for c in train_all.columns
                if spread[c] <= 1e-9 * max(1.0, abs(train_all[c].mean()))]
    data["train"] = [r.drop(columns=constant) for r in data["train"]]
    for k in args.modes:
        data[k] = {role: [r.drop(columns=constant) for r in runs]
                   for role, runs in data[k].items()}
    onset = int(round(_scale(args) * 2.0 * 20))
    source, fit_s, _ = _fit(_residual, data["train"])
    if verbose:
        print(f"mode-1 monitor fitted in {fit_s:.0f} CPU s", flush=True)
    selection = []
    if args.select:
        (args.scale, args.limit, args.rescale), selection = _select(
            source, data, args.modes, source.alpha, verbose)
        if verbose:
            print(f"selected on validation: scale={args.scale}, limit={args.limit}, "
                  f"rescale={args.rescale}", flush=True)
    rows, det = [], []
    for k in args.modes:
        r, d = _mode_rows(source, k, data[k], args, onset)
        rows += r
        det += d
        if verbose:
            print(format_table(pd.DataFrame(r)), flush=True)
    results, detection = pd.DataFrame(rows), pd.DataFrame(det)
    results.to_csv(out / "results.csv", index=False)
    detection.to_csv(out / "detection.csv", index=False)
    summary = {"scale": args.scale, "limit": args.limit, "rescale": args.rescale,
               "selection": selection,
               "dropped_constant_columns": constant, "trips": trips,
               "unreachable_modes": unreachable,
               "source_fit_cpu_s": fit_s, "modes": args.modes, "hours": args.hours,
               "disturbances": args.disturbances, "slices_h": _SLICES}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if verbose:
        print(f"\nwrote {out / 'results.csv'}, {out / 'detection.csv'}, {out / 'summary.json'}")
    return {"results": results, "detection": detection, "summary": summary}


def format_table(results: pd.DataFrame) -> str:
    """One line per mode, hours and method: FAR, mean FDR, parameters, CPU seconds."""
    lines = [f"{'mode':>4} {'hours':>6} {'method':<10}{'FAR %':>8}{'FDR %':>8}{'params':>9}"
             f"{'CPU s':>8}  note"]
    for r in results.itertuples():
        lines.append(f"{r.mode:>4} {r.hours:>6g} {r.method:<10}{r.far_pct:>8.2f}"
                     f"{r.fdr_pct:>8.1f}{r.params:>9.0f}{r.cpu_s:>8.1f}  {r.note}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    run_bench(args)
    return 0
