"""``mola-ts demo tep``: fault detection on the Tennessee Eastman process (monitoring spec §5-§7).

Every monitor is fitted on the normal training run d00 only, with its constructor defaults (what
a user gets), and scores the normal test run d00_te and the test runs of faults 1..21. Nothing of
a ``*_te`` file is ever used for fitting or for choosing a setting. Printed and written under
``--out``:

- ``results.csv``: one row per (fault, model): ``fdr`` (share of samples 161..960 in alarm),
  ``far`` (fault 0: share of samples 161..960 of d00_te in alarm; faults 1..21: share of the
  first 160, in-control samples in alarm), ``delay_samples`` (first alarm starting a run of 3,
  minus 160; x 3 min) and ``auc`` (ROC AUC of the monitor's score, normal part against faulty
  part of the run);
- ``summary.csv``: per model the mean FDR over the 18 detectable faults, the two FARs, the mean
  AUC, timings and, **as a diagnostic of detection power that uses test data**, the mean FDR at
  the thresholds that give exactly 1 % and 5 % FAR on d00_te samples 161..960;
- ``control_chart_fault<N>.png`` (the residual monitor's and MOLA's alarm scores against their
  limits, in hours from the start of the run) and ``contributions_fault<N>.png`` (which
  variables drive the residual monitor's alarms).

Models: ``Residual`` (:class:`~mola_ts.monitor.ResidualMonitor`), ``MOLA``, ``PCA`` and ``DPCA``
(their defaults, cross-fitted limits), the named reference row ``PCA-Yin`` (Yin et al. 2012:
k = 9 on the 33 variables XMEAS 1-22 and XMV 1-11, parametric limits, alarm if T^2 or SPE
exceeds; it reproduces the published table) and, when bibmon is installed, bibmon's own PCA
(its defaults, the SPE limit re-set on its held-out last 15 % of d00; its SPE is its score).

CPU times are measured per model; wall-clock time is inflated by other processes on a shared
machine.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["add_arguments", "run", "run_demo", "format_table", "QUICK_FAULTS", "MODELS",
           "demo_models"]

QUICK_FAULTS = (1, 2, 6)
YIN_COLUMNS = [f"XMEAS({i})" for i in range(1, 23)] + [f"XMV({i})" for i in range(1, 12)]
MODELS = ("Residual", "MOLA", "PCA", "PCA-Yin", "DPCA", "bibmon-PCA")


@dataclass
class DemoModel:
    """A monitor of the demo: its name, a factory and the columns it sees (None: all 52)."""

    name: str
    make: Callable[[], object]
    columns: list[str] | None = None


def demo_models(quick: bool = False, seed: int = 0) -> list[DemoModel]:
    """The toolkit's monitors of the demo, each with its constructor defaults.

    ``quick`` shrinks MOLA's training (few epochs) for CI; ``seed`` is MOLA's random_state.
    """
    from ..monitor import DPCAMonitor, MOLAMonitor, PCAMonitor, ResidualMonitor

    def mola():
        if quick:
            return MOLAMonitor(epochs=3, patience=2, random_state=seed)
        return MOLAMonitor(random_state=seed)

    return [
        DemoModel("Residual", ResidualMonitor),
        DemoModel("MOLA", mola),
        DemoModel("PCA", PCAMonitor),
        DemoModel("PCA-Yin", lambda: PCAMonitor(n_components=9, limit="parametric"),
                  YIN_COLUMNS),
        DemoModel("DPCA", DPCAMonitor),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for results.csv and the figures")
    parser.add_argument("--quick", action="store_true",
                        help=f"small CI run: a tiny MOLA, faults {QUICK_FAULTS} only")
    parser.add_argument("--faults", type=int, nargs="*", default=None,
                        help="faults to evaluate (default: 1..21)")
    parser.add_argument("--plot-fault", type=int, default=None,
                        help="fault of the control chart and contribution plot (default: the "
                             "first evaluated)")
    parser.add_argument("--seed", type=int, default=0, help="random_state of MOLA")
    parser.add_argument("--no-bibmon", action="store_true", help="skip bibmon's PCA")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the per-block models are tiny, and "
                             "more threads only add synchronisation overhead)")


def _bibmon_scores(train: pd.DataFrame, runs: dict[int, pd.DataFrame]):
    """bibmon.PCA with its defaults: (SPE scores, alarms, limit, fit CPU s, score CPU s)."""
    import bibmon

    model = bibmon.PCA()
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train, redefine_limit=True)
        fit_s = time.process_time() - start
        scores, alarms = {}, {}
        start = time.process_time()
        for fault, frame in runs.items():
            model.predict(frame)
            scores[fault] = np.asarray(model.SPE_test, dtype=np.float64)
            alarms[fault] = np.asarray(model.alarmOutlier, dtype=int)
    return scores, alarms, fit_s, time.process_time() - start


def _auc(scores: np.ndarray, onset: int) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.zeros(len(scores), dtype=int)
    labels[onset:] = 1
    return float(roc_auc_score(labels, scores))


def _evaluate(name: str, scores: dict[int, np.ndarray], alarms: dict[int, np.ndarray],
              fit_s: float, score_s: float) -> tuple[list[dict], dict]:
    """Per-fault rows and the summary of one model (FDR at matched FAR as a diagnostic)."""
    from ..data import DETECTABLE_FAULTS, FAULT_ONSET
    from ..metrics import detection_delay, false_alarm_rate, fault_detection_rate

    rows = []
    for fault, a in alarms.items():
        if fault == 0:
            rows.append({"fault": 0, "model": name, "fdr": np.nan,
                         "far": false_alarm_rate(a, start=FAULT_ONSET),
                         "delay_samples": np.nan, "auc": np.nan})
        else:
            rows.append({"fault": fault, "model": name,
                         "fdr": fault_detection_rate(a, FAULT_ONSET),
                         "far": false_alarm_rate(a, stop=FAULT_ONSET),
                         "delay_samples": detection_delay(a, FAULT_ONSET),
                         "auc": _auc(scores[fault], FAULT_ONSET)})
    frame = pd.DataFrame(rows)
    faulty = frame[frame.fault > 0]
    detectable = [f for f in alarms if f in DETECTABLE_FAULTS]
    normal = scores[0][FAULT_ONSET:]
    summary = {
        "model": name,
        "mean_fdr_detectable": float(faulty[faulty.fault.isin(DETECTABLE_FAULTS)].fdr.mean())
        if detectable else np.nan,
        "n_detectable_faults": len(detectable),
        "far_d00_te": float(frame.loc[frame.fault == 0, "far"].iloc[0]),
        "far_before_onset": float(faulty.far.mean()) if len(faulty) else np.nan,
        "mean_auc_detectable": float(faulty[faulty.fault.isin(DETECTABLE_FAULTS)].auc.mean())
        if detectable else np.nan,
    }
    for far in (0.01, 0.05):  # diagnostic: thresholds set on d00_te (test data)
        threshold = float(np.quantile(normal, 1.0 - far))
        fdr = [float(np.mean(scores[f][FAULT_ONSET:] > threshold)) for f in detectable]
        summary[f"fdr_at_far{int(far * 100)}_diagnostic"] = float(np.mean(fdr)) if fdr \
            else np.nan
    summary.update({"fit_cpu_seconds": fit_s, "score_cpu_seconds": score_s})
    return rows, summary


def run_demo(out: str | Path, *, quick: bool = False, faults=None, plot_fault: int | None = None,
             seed: int = 0, use_bibmon: bool = True, verbose: bool = True
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the demo; return ``(results, summary)`` and write them (and the figures) to ``out``."""
    from ..data import load_tep
    from ..monitor import LimitSupportWarning

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if faults is None:
        faults = QUICK_FAULTS if quick else tuple(range(1, 22))
    faults = tuple(int(f) for f in faults)
    bad = [f for f in faults if not 1 <= f <= 21]
    if bad:
        raise ValueError(f"faults must lie in 1..21, got {bad}")
    plot_fault = faults[0] if plot_fault is None else int(plot_fault)
    if plot_fault not in faults:
        raise ValueError(f"plot_fault {plot_fault} is not among the evaluated faults {faults}")

    def say(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    d00 = load_tep(0, "train")  # the only data any model is fitted on
    runs = {f: load_tep(f, "test") for f in (0, *faults)}
    results: list[dict] = []
    summary: list[dict] = []
    fitted: dict[str, object] = {}
    for spec in demo_models(quick, seed):
        say(f"{spec.name}: fitting on d00 ...")

        def pick(frame: pd.DataFrame, cols=spec.columns) -> pd.DataFrame:
            return frame if cols is None else frame[cols]

        model = spec.make()
        start = time.process_time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LimitSupportWarning)
            model.fit(pick(d00))
        fit_s = time.process_time() - start
        for w in caught:
            if issubclass(w.category, LimitSupportWarning):
                say(f"  note: {w.message}")
        start = time.process_time()
        scores = {f: model.score_samples(pick(frame)) for f, frame in runs.items()}
        alarms = {f: model.predict(pick(frame)) for f, frame in runs.items()}
        score_s = time.process_time() - start
        rows, summ = _evaluate(spec.name, scores, alarms, fit_s, score_s)
        results.extend(rows)
        summary.append(summ)
        fitted[spec.name] = model
        say(f"  fit {fit_s:.1f} CPU s, scoring {score_s:.1f} CPU s")

    if use_bibmon:
        try:
            import bibmon  # noqa: F401
        except ImportError:
            say("  bibmon is not installed: its PCA is skipped")
        else:
            say("bibmon-PCA: fitting on d00 ...")
            scores, alarms, fit_s, score_s = _bibmon_scores(d00, runs)
            rows, summ = _evaluate("bibmon-PCA", scores, alarms, fit_s, score_s)
            results.extend(rows)
            summary.append(summ)

    results_df = pd.DataFrame(results, columns=["fault", "model", "fdr", "far", "delay_samples",
                                                "auc"])
    summary_df = pd.DataFrame(summary)
    results_df.to_csv(out / "results.csv", index=False)
    summary_df.to_csv(out / "summary.csv", index=False)
    _figures(fitted, runs[plot_fault], plot_fault, out)
    say("")
    say(format_table(results_df, summary_df))
    say(f"\nwrote {out / 'results.csv'}, {out / 'summary.csv'} and the figures for fault "
        f"{plot_fault}")
    return results_df, summary_df


def _figures(fitted: dict, run: pd.DataFrame, fault: int, out: Path) -> None:
    """The alarm statistics of the residual monitor and MOLA, and the residual contributions."""
    from ..data import FAULT_ONSET as onset
    from ..data import TEP_DESCRIPTIONS as descriptions
    from ..plotting import contribution_chart, control_chart

    residual = fitted["Residual"]
    mola = fitted["MOLA"]
    r_stats = residual.statistics(run)
    m_stats = mola.statistics(run)
    stats = pd.DataFrame({"Residual": r_stats["score"], "Residual_limit": r_stats["score_limit"],
                          "MOLA": m_stats["score"], "MOLA_limit": m_stats["score_limit"],
                          "alarm": r_stats["alarm"]}, index=r_stats.index)
    fig = control_chart(stats, [("Residual", "Residual_limit"), ("MOLA", "MOLA_limit")],
                        onset=onset, alarm_column=None, time_axis="hours",
                        titles=["residual monitor score", "MOLA score (-log10(1 - PFI))"],
                        title=f"TEP fault {fault}: alarm statistics and limits (fitted on d00)")
    fig.savefig(out / f"control_chart_fault{fault}.png", dpi=110)
    contrib = residual.contributions(run)
    alarmed = (r_stats["alarm"].to_numpy() == 1) & (np.arange(len(r_stats)) >= onset)
    rows = contrib[alarmed] if alarmed.any() else contrib.iloc[onset:]
    fig = contribution_chart(rows, descriptions=descriptions,
                             title=f"Residual monitor contributions, fault {fault} "
                                   f"({'alarmed' if alarmed.any() else 'faulty'} samples)")
    fig.savefig(out / f"contributions_fault{fault}.png", dpi=110)


def format_table(results: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The printed table: FDR (%) and delay (samples) per fault and model, then the summary."""
    models = list(summary.model)
    faults = sorted(f for f in results.fault.unique() if f > 0)
    width = 8 + 15 * len(models)
    lines = ["FDR % (delay in samples of 3 min) on the TEP test runs; fault enters after 160; "
             "every model fitted on d00 only",
             f"{'fault':<8}" + "".join(f"{m:>15}" for m in models), "-" * width]
    cell = {(r.fault, r.model): r for r in results.itertuples()}
    for f in faults:
        parts = []
        for m in models:
            r = cell[(f, m)]
            delay = "-" if np.isnan(r.delay_samples) else f"{r.delay_samples:.0f}"
            parts.append(f"{100 * r.fdr:7.2f} ({delay:>4})")
        mark = "*" if f in (3, 9, 15) else ""
        lines.append(f"{str(f) + mark:<8}" + "".join(f"{p:>15}" for p in parts))
    lines.append("-" * width)
    by = summary.set_index("model")

    def row(label: str, column: str, scale: float = 100.0, fmt: str = ".2f",
            note: str = "") -> str:
        return (f"{label:<8}" + "".join(f"{scale * by.loc[m, column]:>15{fmt}}" for m in models)
                + note)

    n_det = int(by.iloc[0]["n_detectable_faults"])
    lines += [row("mean FDR", "mean_fdr_detectable", note=f"   over {n_det} detectable faults"),
              row("FAR", "far_d00_te", fmt=".3f", note="   d00_te samples 161..960"),
              row("FAR<160", "far_before_onset", fmt=".3f",
                  note="   first 160 samples of the fault runs"),
              row("AUC", "mean_auc_detectable", scale=1.0, fmt=".4f",
                  note="   mean ROC AUC (normal vs faulty part of each run)"),
              row("fit s", "fit_cpu_seconds", scale=1.0, fmt=".1f", note="   CPU seconds"),
              "diagnostic (uses test data: thresholds set to give this FAR on d00_te 161..960):",
              row("FDR@1%", "fdr_at_far1_diagnostic"),
              row("FDR@5%", "fdr_at_far5_diagnostic"),
              "* practically undetectable (excluded from the means)"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    run_demo(args.out, quick=args.quick, faults=args.faults, plot_fault=args.plot_fault,
             seed=args.seed, use_bibmon=not args.no_bibmon)
    return 0
