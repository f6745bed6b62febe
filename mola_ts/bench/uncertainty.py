"""``mola-ts bench uncertainty``: probabilistic forecasts of MoLA (uncertainty spec §1-§3).

Per dataset (LTSF split and scaling as in ``mola-ts bench forecast``: StandardScaler on the train
rows, scores on the scaled data, every test window): one :class:`~mola_ts.forecast.MoLAForecaster`
with ``n_ensemble = K`` adapters on one frozen foundation and ``uncertainty="laplace"`` is fitted
once; :meth:`~mola_ts.forecast.MoLAForecaster.sub_ensemble` then gives, without refitting, exactly
what fitting each method alone gives (member ``k`` depends only on the seed and ``k``):

- ``map``: adapter 0, Gaussian with its evidence-fitted noise;
- ``ensemble``: the K adapters, a uniform mixture of their noise Gaussians (deep ensemble);
- ``laplace``: adapter 0 with its last-layer Laplace predictive;
- ``mixture``: the K adapters with their Laplace predictives (mixture of Laplace approximations).

Every member has its own heads (fitted post hoc on its features, :mod:`mola_ts.uncertainty.heads`,
prior scale chosen on the validation MSE). ``--diversity`` fits one model per option
(``adapters``, ``bootstrap``, ``foundations``: :mod:`mola_ts.forecast.diversity`), each scored
with the four methods and three more rows: ``mixture+split`` (split conformal on the validation
windows), ``mixture+adaptive`` (adaptive conformal inference, walking the test windows in time
order as ``update`` does, each row's realised values updating the levels before the next
forecast) and ``mixture+auto`` (the intervals a user gets by default: whichever of the two
covers the second half of the validation windows closer to nominal when calibrated on the
first half; ``conformal_chosen`` names it, ``auto_error_*`` hold the two validation errors).
Conformal rows change the intervals only (coverage, width, Winkler); NLL, CRPS and MSE are
the raw mixture's.

Columns of ``DIR/results.csv``: dataset, horizon, method, n_members, nll, crps, coverage90,
width90, fit_seconds, then coverage50/80/95, winkler90 (interval score), pit_error, mse of the
predictive mean, the mean variance split (laplace, ensemble, noise parts), the fit time split
into foundation(s), adapters and heads + Laplace, diversity, conformal, the chosen prior scale.
``fit_seconds`` is the wall time to fit that method from scratch. Scores are per point (one
step of one variable), averaged over every test window, step and variable. ``DIR/results.md``
holds the table and the goals of issue 18 with the measured values, ``DIR/reliability.png``
nominal against observed coverage. Finished (dataset, diversity) fits are kept in
``results.csv`` and not rerun.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["add_arguments", "run", "run_benchmark", "UncertaintyPlan", "plan_for", "METHODS",
           "score_windows", "window_scores", "reliability_figure"]

#: method -> (ensemble members: "one" or "all", predictive passed to sub_ensemble)
METHODS: dict[str, tuple[str, str]] = {
    "map": ("one", "noise"),
    "ensemble": ("all", "noise"),
    "laplace": ("one", "laplace"),
    "mixture": ("all", "laplace"),
}
COVERAGES = (0.5, 0.8, 0.9, 0.95)


@dataclass
class UncertaintyPlan:
    """Horizon, segment and learning rates of one dataset (those of ``bench forecast``)."""

    horizon: int
    segment_length: int
    foundation_lr: float
    adapt_lr: float
    foundation_sizes: dict


def plan_for(name: str) -> UncertaintyPlan:
    """ETTh1: H = 96 with S = 48 (the forecasting benchmark's segment); ILI: H = 24 (its first
    standard horizon) with S = 12. Learning rates and foundation sizes from ``bench forecast``
    (chosen there on the validation split)."""
    from .forecast import plan_for as forecast_plan

    horizon, segment = {"ETTh1": (96, 48), "ETTh2": (96, 48), "ILI": (24, 12)}.get(name,
                                                                                   (96, 48))
    base = forecast_plan(name, [horizon])
    return UncertaintyPlan(horizon, segment, base.foundation_lr, base.adapt_lr,
                           dict(base.foundation))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", nargs="+", default=["ETTh1", "ILI"],
                        help="registered dataset names (default: ETTh1 ILI)")
    parser.add_argument("--out", default="runs/uncertainty", help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny model, one epoch, 2 members, 64 test windows")
    parser.add_argument("--n-ensemble", type=int, default=5,
                        help="adapters on the foundation (default: 5)")
    parser.add_argument("--diversity", nargs="+", default=["adapters"],
                        choices=("adapters", "bootstrap", "foundations"),
                        help="how the members differ, one fit each (default: adapters)")
    parser.add_argument("--uncertainty-data", choices=("train", "validation"), default="train",
                        help="windows the Laplace and its noise are fitted on (default: train)")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-home", default=None)


def score_windows(model, frame: pd.DataFrame, *, chunk: int = 128,
                  max_windows: int | None = None, interval=None) -> dict[str, float]:
    """Probabilistic scores of ``model`` over every rolling window of ``frame``.

    Windows are scored in chunks (a mixture over thousands of windows does not fit in memory at
    once); every score is the mean over all windows, steps and variables, as if computed at
    once. Returns nll, crps, pit_error, coverageP / widthP / winklerP for P in 50, 80, 90, 95,
    mse of the predictive mean and the mean variance split. ``interval(dist, coverage, first,
    last)`` gives the intervals of windows ``first:last`` (default: the mixture's own).
    """
    from mola_ts.data import n_windows, sliding_windows
    from mola_ts.metrics import pit_calibration_error

    ctx, horizon = model.context_length_, model.horizon
    total = n_windows(len(frame), ctx, horizon)
    if max_windows is not None:
        total = min(total, max_windows)
    sums: dict[str, float] = {}
    pits, points = [], 0
    for first in range(0, total, chunk):
        last = min(first + chunk, total)
        part = frame.iloc[first:last + ctx + horizon - 1]
        dist = model.predict_windows_distribution(part)
        _, target = sliding_windows(part.to_numpy(dtype=np.float64), ctx, horizon)
        values = {"nll": -dist.log_prob(target), "crps": dist.crps(target),
                  "mse": (dist.mean - target) ** 2}
        for name, var in dist.variance_decomposition().items():
            values[f"var_{name}"] = var
        for c in COVERAGES:
            lo, hi = dist.interval(c) if interval is None else interval(dist, c, first, last)
            tag = f"{100 * c:g}"
            values[f"coverage{tag}"] = (target >= lo) & (target <= hi)
            values[f"width{tag}"] = hi - lo
            a = 1.0 - c
            values[f"winkler{tag}"] = (hi - lo) + (2 / a) * np.maximum(lo - target, 0) + \
                (2 / a) * np.maximum(target - hi, 0)
        for name, v in values.items():
            sums[name] = sums.get(name, 0.0) + float(np.sum(v))
        pits.append(dist.cdf(target).ravel())
        points += target.size
    scores = {name: total_ / points for name, total_ in sums.items()}
    scores["pit_error"] = pit_calibration_error(np.concatenate(pits))
    scores["n_windows"] = total
    return scores


def window_scores(model, frame: pd.DataFrame, *, chunk: int = 128,
                  max_windows: int | None = None) -> np.ndarray:
    """Conformity scores ``|2F(y) - 1|`` of every window, shape (n_windows, horizon, C)."""
    from mola_ts.data import n_windows, sliding_windows
    from mola_ts.uncertainty.conformal import conformity_scores

    ctx, horizon = model.context_length_, model.horizon
    total = n_windows(len(frame), ctx, horizon)
    total = total if max_windows is None else min(total, max_windows)
    out = []
    for first in range(0, total, chunk):
        last = min(first + chunk, total)
        part = frame.iloc[first:last + ctx + horizon - 1]
        _, target = sliding_windows(part.to_numpy(dtype=np.float64), ctx, horizon)
        out.append(conformity_scores(model.predict_windows_distribution(part), target))
    return np.concatenate(out)


def _print(*args, flush: bool = False) -> None:
    print(*args, flush=flush)


def _fit(info, split, plan, *, k, diversity, quick, uncertainty_data, seed, device):
    from mola_ts.forecast import MoLAForecaster

    sizes = {"d_model": 16, "d_ff": 16, "n_heads": 2} if quick else plan.foundation_sizes
    model = MoLAForecaster(
        split.lookback, plan.horizon, segment_length=plan.segment_length,
        backbone_params=sizes, foundation_epochs=1 if quick else 5, foundation_patience=2,
        foundation_lr=plan.foundation_lr, epochs=1 if quick else 10, patience=3,
        lr=plan.adapt_lr, batch_size=32, scale=False, n_ensemble=k, diversity=diversity,
        uncertainty="laplace", uncertainty_data=uncertainty_data, conformal=None,
        device=device, random_state=seed)
    return model.fit(split.train, y_val=split.val)


def _row(info, plan, model, sub, method, scores, **extra) -> dict:
    adapters = float(sum(sub.member_seconds_))
    laplace = float(sum(sub.uncertainty_seconds_))
    foundations = model.foundation_seconds_ if sub.n_ensemble > 1 or \
        getattr(model, "foundations_", None) is None else \
        model.foundation_seconds_ / len(model.foundations_)
    row = {"dataset": info.name, "horizon": plan.horizon, "method": method,
           "n_members": sub.n_ensemble, "nll": scores["nll"], "crps": scores["crps"],
           "coverage90": scores["coverage90"], "width90": scores["width90"],
           "fit_seconds": foundations + adapters + laplace}
    row.update({f"coverage{t}": scores[f"coverage{t}"] for t in ("50", "80", "95")})
    row.update({"winkler90": scores["winkler90"], "pit_error": scores["pit_error"],
                "mse": scores["mse"], "var_laplace": scores["var_laplace"],
                "var_ensemble": scores["var_ensemble"], "var_noise": scores["var_noise"],
                "foundation_seconds": foundations, "adapter_seconds": adapters,
                "uncertainty_seconds": laplace, "segment_length": plan.segment_length,
                "test_windows": scores["n_windows"]})
    row.update(extra)
    return row


def run_benchmark(datasets, *, out: str | os.PathLike, quick: bool = False, n_ensemble: int = 5,
                  diversity=("adapters",), uncertainty_data: str = "train", seed: int = 2023,
                  device: str = "cpu", data_home=None, log=_print) -> pd.DataFrame:
    """Run the benchmark, write ``results.csv`` and ``results.md`` under ``out``; return rows.

    Rows already in ``results.csv`` (same dataset and diversity) are kept and not rerun.
    """
    from mola_ts.data import get_dataset_info, ltsf_split
    from mola_ts.uncertainty.conformal import ConformalCalibrator, choose_method

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    k = 2 if quick else int(n_ensemble)
    limit = 64 if quick else None
    path = out / "results.csv"
    done = pd.read_csv(path) if path.exists() and not quick else pd.DataFrame()
    rows: list[dict] = done.to_dict("records")
    for name in datasets:
        info = get_dataset_info(name)
        split = ltsf_split(name, data_home=data_home)
        plan = plan_for(info.name)
        for div in diversity:
            if len(done) and ((done["dataset"] == info.name) & (done["diversity"] == div)).any():
                log(f"== {info.name} / {div}: in {path}, kept", flush=True)
                continue
            log(f"== {info.name}: H = {plan.horizon}, S = {plan.segment_length}, K = {k}, "
                f"diversity {div}, heads on the {uncertainty_data} windows", flush=True)
            t0 = time.perf_counter()
            model = _fit(info, split, plan, k=k, diversity=div, quick=quick,
                         uncertainty_data=uncertainty_data, seed=seed, device=device)
            log(f"  fitted in {time.perf_counter() - t0:.1f}s: foundation(s) "
                f"{model.foundation_seconds_:.1f}s, adapters "
                f"{', '.join(f'{s:.1f}' for s in model.member_seconds_)}s, heads + Laplace "
                f"{', '.join(f'{s:.1f}' for s in model.uncertainty_seconds_)}s, prior scale "
                f"{model.head_prior_scale_:g}", flush=True)
            extra = {"diversity": div, "uncertainty_data": uncertainty_data,
                     "head_prior_scale": model.head_prior_scale_, "conformal": "none"}
            for method, (members, predictive) in METHODS.items():
                sub = model.sub_ensemble(1 if members == "one" else k, uncertainty=predictive)
                scores = score_windows(sub, split.test, max_windows=limit)
                rows.append(_row(info, plan, model, sub, method, scores, **extra))
                _log_row(log, rows[-1])
            calib = window_scores(model, split.val)
            test_scores = window_scores(model, split.test, max_windows=limit)
            chosen, errors = choose_method(calib, coverages=COVERAGES)
            log(f"  conformal='auto' on validation: split error {errors['split']:.4f}, "
                f"adaptive {errors['adaptive']:.4f} -> {chosen}", flush=True)
            for variant in ("split", "adaptive", "auto"):
                method = chosen if variant == "auto" else variant
                cal = ConformalCalibrator(method).fit(calib)
                levels = cal.walk(test_scores, COVERAGES)  # split: fixed; adaptive: learns

                def interval(dist, c, first, last, levels=levels):
                    lv = levels[c][first:last, :, None]
                    return dist.ppf((1 - lv) / 2), dist.ppf((1 + lv) / 2)
                scores = score_windows(model, split.test, max_windows=limit, interval=interval)
                rows.append(_row(info, plan, model, model, f"mixture+{variant}", scores,
                                 **{**extra, "conformal": variant, "pooling": cal.pooling_,
                                    "conformal_chosen": method,
                                    "auto_error_split": errors["split"],
                                    "auto_error_adaptive": errors["adaptive"]}))
                _log_row(log, rows[-1])
            pd.DataFrame(rows).to_csv(path, index=False)  # resumable: a finished fit is kept
    results = pd.DataFrame(rows)
    results.to_csv(path, index=False)
    (out / "results.md").write_text(results_markdown(results))
    if not quick:
        reliability_figure(results, out / "reliability.png")
    return results


def _log_row(log, row: dict) -> None:
    log(f"  {row['method']:<16} nll {row['nll']:.4f} crps {row['crps']:.4f} cov50 "
        f"{row['coverage50']:.3f} cov90 {row['coverage90']:.3f} width90 {row['width90']:.3f} "
        f"mse {row['mse']:.4f} fit {row['fit_seconds']:.1f}s", flush=True)


def reliability_figure(results: pd.DataFrame, path) -> None:
    """Nominal against observed coverage (50/80/90/95 %) of the raw and corrected mixtures of
    the first diversity option benchmarked (the default's)."""
    from mola_ts.plotting import reliability_chart

    first = results["diversity"].iloc[0]
    keep = results[(results["diversity"] == first)
                   & results["method"].isin(["mixture", "mixture+split", "mixture+adaptive",
                                             "mixture+auto"])]
    reliability_chart(keep, [f"{100 * c:g}" for c in COVERAGES]).savefig(path, dpi=120)


def results_markdown(results: pd.DataFrame) -> str:
    """The table of the main columns and, per dataset and diversity, the issue's goals."""
    cols = ["dataset", "diversity", "method", "n_members", "nll", "crps", "coverage50",
            "coverage90", "width90", "mse", "var_laplace", "var_ensemble", "var_noise",
            "fit_seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in results.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.4f}" if isinstance(v, float) and c != "fit_seconds"
                         else f"{v:.1f}" if c == "fit_seconds" else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for (name, div), part in results.groupby(["dataset", "diversity"], sort=False):
        by = part.set_index("method")
        if not {"mixture", "ensemble", "laplace"} <= set(by.index):
            continue
        mix = by.loc["mixture"]
        if "mixture+auto" in by.index:  # the default; older results: split, or none
            default = by.loc["mixture+auto"]
            label = f"auto: {default.conformal_chosen} conformal"
        elif "mixture+split" in by.index:
            default, label = by.loc["mixture+split"], "split conformal"
        else:
            default, label = mix, "the raw mixture"
        ens_train = by.loc["ensemble", "foundation_seconds"] + by.loc["ensemble",
                                                                      "adapter_seconds"]
        lines += [
            f"{name} ({div}): default intervals ({label}) cover "
            f"{default.coverage90:.3f} at 90 % and {default.coverage50:.3f} at 50 % (goal "
            f"0.88-0.92 and 0.48-0.52; raw mixture {mix.coverage90:.3f} / "
            f"{mix.coverage50:.3f}); mixture CRPS {mix.crps:.4f} vs ensemble "
            f"{by.loc['ensemble', 'crps']:.4f} and single Laplace "
            f"{by.loc['laplace', 'crps']:.4f} (goal: >= 1 % below both); heads + Laplace "
            f"{mix.uncertainty_seconds:.1f}s = {100 * mix.uncertainty_seconds / ens_train:.1f} % "
            f"of the ensemble's training ({ens_train:.1f}s; goal <= 20 %).", ""]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MOLA_TS_NO_PROGRESS", "1")
    results = run_benchmark(args.datasets, out=args.out, quick=args.quick,
                            n_ensemble=args.n_ensemble, diversity=args.diversity,
                            uncertainty_data=args.uncertainty_data,
                            seed=args.seed, device=args.device, data_home=args.data_home)
    print()
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(results[["dataset", "diversity", "method", "n_members", "nll", "crps",
                       "coverage50", "coverage90", "width90", "fit_seconds"]].to_string(
            index=False, float_format="%.4f"))
    print()
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {Path(args.out) / 'results.csv'} and {Path(args.out) / 'results.md'}")
    return 0
