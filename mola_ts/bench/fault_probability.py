"""``mola-ts bench fault-probability``: is the residual monitor's probability of fault calibrated?

On simulated Tennessee Eastman runs (``simulate_tep``, mode 1, cached in the data home):

1. **training**: ``ResidualMonitor()`` (constructor defaults: ridge VAR(1), K = 5 Laplace
   members; ``--predictor`` another predictor) on ``--train-runs`` settled normal runs of
   ``--train-hours`` (seeds ``1000 + i``); the seconds of its fit and of the Laplace members'
   fit inside it are measured.
2. **validation** (seeds ``4000 + i`` normal, ``5000 + d`` for disturbance ``idv_d``): normal
   runs and one run per simulator disturbance (``--fault-hours`` with the disturbance on after
   ``--onset-hours``). The disturbances the monitor *detects* are those whose validation FDR
   exceeds 50 %; the Laplace method's fault law and memory (``fault_scale``, ``fault_memory``)
   are chosen on the validation set by its expected calibration error with the spec's prior,
   and the default method is the one with the smaller validation ECE.
3. **test** (seeds ``6000 + i`` normal, ``7000 + d``): half normal samples, half post-onset
   samples of the detected disturbances (the larger group is subsampled at random, seed 0; the
   probabilities are computed on whole runs first, so a filter sees each run's past).

Reliability: bins of predicted P(normal) = 1 - P(fault) of width 0.1; per bin the mean
prediction, the observed share of normal samples and the count. ECE = sum over bins of
(count / N) |predicted - observed|. Reported with the spec's prior (``alpha``) and, labelled, with
a prior matched to the set (0.5). Writes ``reliability.csv``, ``makeup.csv``, ``selection.csv``,
``summary.json`` and ``reliability.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["add_arguments", "run", "run_bench", "reliability_table", "expected_calibration_error"]

_SCALES = (1.02, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0)
_MEMORIES = (0.0, 0.5, 0.9, 0.97, 0.99, 0.999)  # 0: memoryless (the filter uses max(memory, prior))
_BINS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the tables and the figure")
    parser.add_argument("--train-runs", type=int, default=3)
    parser.add_argument("--train-hours", type=float, default=40.0)
    parser.add_argument("--normal-runs", type=int, default=4,
                        help="normal runs of the validation set, and as many of the test set")
    parser.add_argument("--normal-hours", type=float, default=50.0)
    parser.add_argument("--fault-hours", type=float, default=11.0)
    parser.add_argument("--onset-hours", type=float, default=1.0)
    parser.add_argument("--test-offset", type=int, default=0,
                        help="added to the test runs' seeds: another test set, the same "
                             "training and validation (a check of the spread)")
    parser.add_argument("--predictor", default="var", choices=("var", "mlp", "lora-moe"),
                        help="the residual monitor's predictor (default var, the monitor's "
                             "default; n_ensemble stays at its default for that predictor)")
    parser.add_argument("--jobs", type=int, default=1, help="simulations run in parallel")
    parser.add_argument("--quick", action="store_true",
                        help="1 x 20 h training, 1 x 10 h normal, 4 disturbances x 5 h (a smoke "
                             "run, not a measurement)")


def reliability_table(p_normal: np.ndarray, is_normal: np.ndarray, bins: int = _BINS
                      ) -> pd.DataFrame:
    """Per bin of predicted P(normal): range, mean prediction, observed share normal, count."""
    p = np.asarray(p_normal, dtype=np.float64)
    y = np.asarray(is_normal, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        rows.append({"bin_low": b / bins, "bin_high": (b + 1) / bins, "count": n,
                     "predicted": float(p[sel].mean()) if n else np.nan,
                     "observed": float(y[sel].mean()) if n else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(p_normal, is_normal, bins: int = _BINS) -> float:
    """``sum_b (n_b / N) |mean predicted_b - observed_b|`` over equal-width bins."""
    table = reliability_table(p_normal, is_normal, bins)
    used = table[table["count"] > 0]
    return float((used["count"] * (used["predicted"] - used["observed"]).abs()).sum()
                 / used["count"].sum())


def _plan(args) -> dict[str, list[dict]]:
    from ..data import TEP_SIM_DISTURBANCES

    names = list(TEP_SIM_DISTURBANCES)
    if args.quick:
        args.train_runs, args.train_hours = 1, 20.0
        args.normal_runs, args.normal_hours = 1, 15.0
        args.fault_hours, args.onset_hours = 5.0, 1.0
        names = ["idv_01", "idv_04", "idv_06", "idv_15"]
    off = int(getattr(args, "test_offset", 0))
    if off not in range(0, 1000, 100):
        raise ValueError(f"--test-offset must be a multiple of 100 in 0..900 (seeds apart "
                         f"from the other runs'), got {off}")
    fault = dict(mode=1, hours=args.fault_hours, onset_hours=args.onset_hours,
                 on_shutdown="truncate")
    return {
        "train": [dict(mode=1, hours=args.train_hours, seed=1000 + i)
                  for i in range(args.train_runs)],
        "val_normal": [dict(mode=1, hours=args.normal_hours, seed=4000 + i)
                       for i in range(args.normal_runs)],
        "val_fault": [dict(fault, seed=5000 + int(n[4:]), disturbance=n) for n in names],
        "test_normal": [dict(mode=1, hours=args.normal_hours, seed=6000 + off + i)
                        for i in range(args.normal_runs)],
        "test_fault_all": [dict(fault, seed=7000 + off + int(n[4:]), disturbance=n)
                           for n in names],
    }


def _simulate(jobs: list[dict], n_jobs: int) -> list[pd.DataFrame]:
    from .plant import _simulate_all

    return _simulate_all(jobs, n_jobs)


def _probabilities(monitor, runs, onset: int | None, settings: dict) -> list[pd.DataFrame]:
    """Per run: P(normal) of every scored sample for each method (and the labels)."""
    out = []
    for r in runs:
        frame = pd.DataFrame(index=r.index)
        for name, kwargs in settings.items():
            fp = monitor.predict_fault_probability(r, **kwargs)
            frame[name] = 1.0 - fp["fault_probability"].to_numpy()
            frame[name + ":band"] = (fp["fault_probability_upper"]
                                     - fp["fault_probability_lower"]).to_numpy()
        keep = np.arange(len(r)) >= int(monitor.order)
        if onset is not None:
            keep &= np.arange(len(r)) >= onset
        frame = frame[keep]
        frame["normal"] = int(onset is None)
        frame["disturbance"] = r.attrs.get("disturbance") or "normal"
        out.append(frame)
    return out


def _balanced(normal: list[pd.DataFrame], fault: list[pd.DataFrame]) -> pd.DataFrame:
    a, b = pd.concat(normal, ignore_index=True), pd.concat(fault, ignore_index=True)
    n = min(len(a), len(b))
    rng = np.random.default_rng(0)

    def pick(f: pd.DataFrame) -> pd.DataFrame:
        return f.iloc[np.sort(rng.choice(len(f), n, replace=False))] if len(f) > n else f

    return pd.concat([pick(a), pick(b)], ignore_index=True)


def _log_ratio_grid(monitor, runs, onset, scales) -> dict:
    """Per scale: per run the Laplace log likelihood ratios of the rows kept by the set."""
    from ..monitor.laplace_fault import LaplaceFault

    laplace = LaplaceFault(monitor.laplace_, monitor)
    p = int(monitor.order)
    grid = {}
    for c in scales:
        grid[c] = [laplace.log_ratios((r.to_numpy() - monitor.mean_) / monitor.scale_, p, c,
                                      0, 0)[1] for r in runs]
    return grid


def _select(monitor, val_normal, val_fault, onset, prior: float
            ) -> tuple[pd.DataFrame, dict]:
    """ECE on the validation set for every (fault_scale, fault_memory): the choice."""
    from ..monitor.laplace_fault import filter_fault

    normal_lr = _log_ratio_grid(monitor, val_normal, None, _SCALES)
    fault_lr = _log_ratio_grid(monitor, val_fault, onset, _SCALES)
    p = int(monitor.order)
    rows = []
    for c in _SCALES:
        for mem in _MEMORIES:
            normal = [pd.DataFrame({"x": 1 - filter_fault(lr, prior, mem)}) for lr in normal_lr[c]]
            fault = [pd.DataFrame({"x": 1 - filter_fault(lr, prior, mem)[onset - p:]})
                     for lr in fault_lr[c]]
            for f in normal:
                f["normal"] = 1
            for f in fault:
                f["normal"] = 0
            data = _balanced(normal, fault)
            rows.append({"fault_scale": c, "fault_memory": mem,
                         "ece_validation": expected_calibration_error(data["x"],
                                                                      data["normal"])})
    table = pd.DataFrame(rows)
    best = table.loc[table["ece_validation"].idxmin()]
    return table, {"fault_scale": float(best["fault_scale"]),
                   "fault_memory": float(best["fault_memory"])}


def run_bench(args: argparse.Namespace, *, verbose: bool = True) -> dict:
    """Simulate (or read the cache), fit, choose on validation, score the test set."""
    from ..metrics import fault_detection_rate
    from ..monitor import ResidualMonitor
    from ..monitor import laplace_fault as lf

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(args)
    start = time.perf_counter()
    data = {k: _simulate(v, args.jobs) for k, v in plan.items() if k != "test_fault_all"}
    train_all = pd.concat(data["train"])
    spread = train_all.max() - train_all.min()
    constant = [c for c in train_all.columns
                if spread[c] <= 1e-9 * max(1.0, abs(train_all[c].mean()))]
    data = {k: [r.drop(columns=constant) for r in v] for k, v in data.items()}
    onset = int(round(args.onset_hours * 20))
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monitor = ResidualMonitor(predictor=args.predictor).fit(data["train"])
    fit_s = time.process_time() - t0
    t0 = time.process_time()
    standardised = [(r.to_numpy() - monitor.mean_) / monitor.scale_ for r in data["train"]]
    lf.fit_laplace_members(monitor, standardised, lf.default_members(monitor.predictor, None))
    laplace_s = time.process_time() - t0
    # detected disturbances: FDR > 50 % on the validation runs
    fdr = {r.attrs["disturbance"]: 100 * fault_detection_rate(monitor.predict(r), onset)
           for r in data["val_fault"] if len(r) > onset}
    detected = sorted(d for d, v in fdr.items() if v > 50)
    if not detected:
        raise RuntimeError(f"the monitor detects no disturbance (validation FDR > 50 %): "
                           f"{fdr}; a calibration set needs detected faults")
    val_fault = [r for r in data["val_fault"] if r.attrs["disturbance"] in detected]
    selection, chosen = _select(monitor, data["val_normal"], val_fault, onset,
                                float(monitor.alpha))
    # the same choice for the matched prior (a diagnostic: what the method gives when the
    # prior is right for the set and the settings are chosen for that prior)
    matched_table, matched = _select(monitor, data["val_normal"], val_fault, onset, 0.5)
    selection["ece_validation_matched_prior"] = matched_table["ece_validation"]
    test_jobs = [j for j in plan["test_fault_all"] if j["disturbance"] in detected]
    test_fault = [r.drop(columns=constant) for r in _simulate(test_jobs, args.jobs)]
    alpha = float(monitor.alpha)
    settings = {
        "laplace": dict(method="laplace", **chosen),
        "tail": dict(method="tail"),
        "laplace_matched": dict(method="laplace", prior_fault=0.5, **chosen),
        "tail_matched": dict(method="tail", prior_fault=0.5),
        "laplace_matched_own": dict(method="laplace", prior_fault=0.5, **matched),
    }
    val = _balanced(_probabilities(monitor, data["val_normal"], None, settings),
                    _probabilities(monitor, val_fault, onset, settings))
    test = _balanced(_probabilities(monitor, data["test_normal"], None, settings),
                     _probabilities(monitor, test_fault, onset, settings))
    ece = {split: {k: expected_calibration_error(frame[k], frame["normal"]) for k in settings}
           for split, frame in (("validation", val), ("test", test))}
    default = min(("laplace", "tail"), key=lambda k: ece["validation"][k])
    # diversity (uncertainty spec §5): the predictive variance split on the test normal runs
    split = dict.fromkeys(("laplace", "ensemble", "noise"), 0.0)
    laplace_path = lf.LaplaceFault(monitor.laplace_, monitor)
    for r in data["test_normal"]:
        dist = laplace_path.predictive((r.to_numpy() - monitor.mean_) / monitor.scale_,
                                       int(monitor.order))
        for k, v in dist.variance_decomposition().items():
            split[k] += float(v.sum())
    split = {k: 100 * v / sum(split.values()) for k, v in split.items()}
    band = {k: {"mean": float(test[k + ":band"].mean()),
                "p90": float(test[k + ":band"].quantile(0.9))} for k in ("laplace", "tail")}
    tables = []
    for k in settings:
        t = reliability_table(test[k], test["normal"])
        t.insert(0, "method", k)
        tables.append(t)
    reliability = pd.concat(tables, ignore_index=True)
    makeup = test.groupby("disturbance").size().rename("samples").reset_index()
    makeup["validation_fdr_pct"] = makeup["disturbance"].map(fdr)
    wall = time.perf_counter() - start
    summary = {
        "alpha_prior": alpha, "detected": detected, "validation_fdr_pct": fdr,
        "chosen_on_validation": chosen, "chosen_on_validation_matched_prior": matched,
        "default_method_by_validation_ece": default,
        "ece": ece, "band_width_test": band, "variance_split_pct": split, "n_test": len(test),
        "n_test_normal": int(test["normal"].sum()),
        "fit_cpu_s": fit_s, "laplace_fit_cpu_s": laplace_s,
        "laplace_share_of_fit": laplace_s / fit_s if fit_s else float("nan"),
        "dropped_constant_columns": constant, "wall_s": wall,
        "settings": {k: getattr(args, k) for k in ("train_runs", "train_hours", "normal_runs",
                                                   "normal_hours", "fault_hours",
                                                   "onset_hours", "test_offset", "predictor",
                                                   "quick")}}
    reliability.to_csv(out / "reliability.csv", index=False)
    makeup.to_csv(out / "makeup.csv", index=False)
    selection.to_csv(out / "selection.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    _figure(reliability, ece["test"], out / "reliability.png")
    if verbose:
        print(format_report(summary, reliability, makeup, selection))
        print(f"\nwrote {out}/reliability.csv, makeup.csv, selection.csv, summary.json, "
              "reliability.png")
    return {"summary": summary, "reliability": reliability, "makeup": makeup,
            "selection": selection}


def format_report(summary: dict, reliability: pd.DataFrame, makeup: pd.DataFrame,
                  selection: pd.DataFrame) -> str:
    ece = summary["ece"]
    lines = [f"Residual monitor, fault probability calibration (prior alpha = "
             f"{summary['alpha_prior']:g}; 'matched' = prior 0.5)",
             f"chosen on validation: {summary['chosen_on_validation']}; default method by "
             f"validation ECE: {summary['default_method_by_validation_ece']}; for the matched "
             f"prior: {summary['chosen_on_validation_matched_prior']} (laplace_matched_own)",
             f"fit {summary['fit_cpu_s']:.2f} CPU s, of which the Laplace members "
             f"{summary['laplace_fit_cpu_s']:.2f} s "
             f"({100 * summary['laplace_share_of_fit']:.0f} %)",
             "", f"{'method':<18}{'ECE validation':>16}{'ECE test':>10}"]
    for k in ece["test"]:
        lines.append(f"{k:<18}{ece['validation'][k]:>16.4f}{ece['test'][k]:>10.4f}")
    lines.append("predictive variance on the test normal runs (whitened), % laplace / "
                 "ensemble / noise: " + " / ".join(
                     f"{v:.2f}" for v in summary["variance_split_pct"].values()))
    lines.append("credible band of P(fault), 90 %, test: " + "; ".join(
        f"{k} mean width {v['mean']:.4f}, 90th percentile {v['p90']:.4f}"
        for k, v in summary["band_width_test"].items()))
    lines += ["", f"Test set: {summary['n_test']} samples, {summary['n_test_normal']} normal",
              makeup.to_string(index=False), "", "Reliability (test): bins of P(normal)"]
    for method, part in reliability.groupby("method", sort=False):
        lines.append(f"-- {method}")
        lines.append(part.drop(columns="method").to_string(index=False, float_format="%.3f"))
    lines += ["", "Validation ECE of the Laplace settings",
              selection.to_string(index=False, float_format="%.4f")]
    return "\n".join(lines)


def _figure(reliability: pd.DataFrame, ece: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.4, 4.0))
    for i, (suffix, title) in enumerate((("", "prior alpha (spec)"),
                                         ("_matched", "prior 0.5 (matched to the set)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
        names = ["laplace", "tail"] + (["laplace_matched_own"] if suffix else [])
        for method in names:
            key = method if method.endswith("_own") else method + suffix
            part = reliability[(reliability["method"] == key) & (reliability["count"] > 0)]
            ax.plot(part["predicted"], part["observed"], marker="o", lw=1.2,
                    label=f"{method.replace('_matched_own', ', own settings')} "
                          f"(ECE {ece[key]:.3f})")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("predicted P(normal)")
        ax.set_ylabel("observed share normal (test)")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def run(args: argparse.Namespace) -> int:
    run_bench(args)
    return 0
