"""Tables of the forecasting benchmark, rendered from its ``results.csv``.

:func:`results_markdown` is what ``mola-ts bench forecast`` writes to ``results.md`` (and what
``mola-ts bench forecast --report --out DIR`` renders again from ``DIR/results.csv``): per
dataset, the test MSE / MAE of every model and horizon (mean ± standard deviation over the
seeds when there are several), the published numbers beside them (not for ``--quick`` runs,
whose horizons and sizes differ), the MoLA options table (parameters, CPU and wall seconds,
validation MSE), the MoLA configuration chosen by validation loss alone, and the cost of
adapting MoLA against training the direct model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["PUBLISHED", "PUBLISHED_ITRANSFORMER", "summarize", "best_by_validation",
           "results_markdown"]

# Spec §4: mean of the four horizons, lookback 96 (MSE, MAE).
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "ETTh1": {"iTransformer": (0.454, 0.447), "PatchTST": (0.469, 0.454),
              "DLinear": (0.456, 0.452), "TimeMixer": (0.447, 0.440)},
    "ETTh2": {"iTransformer": (0.383, 0.407), "PatchTST": (0.387, 0.407),
              "DLinear": (0.559, 0.515), "TimeMixer": (0.364, 0.395)},
    "ETTm1": {"iTransformer": (0.407, 0.410), "PatchTST": (0.387, 0.400),
              "DLinear": (0.403, 0.407), "TimeMixer": (0.381, 0.395)},
    "Weather": {"iTransformer": (0.258, 0.278), "PatchTST": (0.259, 0.281),
                "DLinear": (0.265, 0.317), "TimeMixer": (0.240, 0.271)},
    "Exchange": {"iTransformer": (0.360, 0.403), "PatchTST": (0.367, 0.404),
                 "DLinear": (0.354, 0.414)},
}
# Spec §4: iTransformer per horizon.
PUBLISHED_ITRANSFORMER: dict[str, dict[int, tuple[float, float]]] = {
    "ETTh1": {96: (0.386, 0.405), 192: (0.441, 0.436), 336: (0.487, 0.458),
              720: (0.503, 0.491)},
    "ETTh2": {96: (0.297, 0.349), 192: (0.380, 0.400), 336: (0.428, 0.432),
              720: (0.427, 0.445)},
}

_NUMERIC = ["mse", "mae", "val_mse", "train_seconds", "train_cpu_seconds", "trainable_params",
            "total_params"]


def _with_seed(results: pd.DataFrame) -> pd.DataFrame:
    results = results.copy()
    if "seed" not in results.columns:
        results["seed"] = 0
    for column in _NUMERIC:
        if column not in results.columns:
            results[column] = np.nan
    return results


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, horizon, model): the mean of every number over the seeds, the
    standard deviations ``mse_std`` / ``mae_std`` (ddof 1; NaN for one seed) and ``n_seeds``."""
    results = _with_seed(results)
    keys = ["dataset", "horizon", "model"]
    grouped = results.groupby(keys, sort=False)
    out = grouped[_NUMERIC].mean()
    out["mse_std"] = grouped["mse"].std(ddof=1)
    out["mae_std"] = grouped["mae"].std(ddof=1)
    out["n_seeds"] = grouped["seed"].nunique()
    return out.reset_index()


def _per_seed_means(part: pd.DataFrame, model: str, horizons) -> pd.Series:
    """The mean over the horizons of every seed that has all of them."""
    rows = part[part["model"] == model]
    table = rows.pivot_table(index="seed", columns="horizon", values="mse")
    table = table.reindex(columns=horizons).dropna()
    return table.mean(axis=1)


def best_by_validation(results: pd.DataFrame, dataset: str) -> str | None:
    """:func:`validation_choice` without the seeds."""
    return validation_choice(results, dataset)[0]


def validation_choice(results: pd.DataFrame, dataset: str) -> tuple[str | None, list]:
    """The MoLA model (``mola`` or ``mola-OPTION``) with the lowest mean validation MSE over
    every horizon (test numbers are never read); None when there is none.

    The candidates are compared on the seeds all of them have every horizon of (a model run
    with 3 seeds against options run with one: on that one seed), so that no model wins by
    its seeds; without such a seed, each model's mean over its own seeds is used. Returns
    the model and the seeds compared (empty in that case).
    """
    part = _with_seed(results[results["dataset"] == dataset])
    part = part[part["model"].str.startswith("mola") & (part["model"] != "mola-foundation")]
    horizons = set(part["horizon"].unique())
    tables = {}
    for model, rows in part.groupby("model"):
        table = rows.pivot_table(index="seed", columns="horizon", values="val_mse")
        table = table.reindex(columns=sorted(horizons)).dropna()
        if len(table):
            tables[model] = table
    if not tables:
        return None, []
    common = sorted(set.intersection(*(set(t.index) for t in tables.values())))
    scores = {model: float((t.loc[common] if common else t).to_numpy().mean())
              for model, t in tables.items()}
    return min(scores, key=scores.get), common


def _cell(row: pd.Series) -> str:
    if row["n_seeds"] > 1:
        return f"{row['mse']:.3f} ± {row['mse_std']:.3f} / {row['mae']:.3f}"
    return f"{row['mse']:.3f} / {row['mae']:.3f}"


def _main_table(name: str, part: pd.DataFrame, published: bool) -> list[str]:
    part = part[part["model"] != "mola-foundation"]  # its horizon is S, reported below
    models = list(dict.fromkeys(part["model"]))
    horizons = sorted(part["horizon"].unique())
    pub_h = PUBLISHED_ITRANSFORMER.get(name, {}) if published else {}
    header = ["H"] + models + (["iTransformer (published)"] if pub_h else [])
    seeds = int(part["n_seeds"].max())
    how = f", mean ± std over up to {seeds} seeds" if seeds > 1 else ""
    lines = [f"### {name} (MSE / MAE, scaled data, every test window{how})", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for h in horizons:
        cells = [str(h)]
        for m in models:
            r = part[(part["horizon"] == h) & (part["model"] == m)]
            cells.append("-" if r.empty else _cell(r.iloc[0]))
        if pub_h:
            p = pub_h.get(h)
            cells.append("-" if p is None else f"{p[0]:.3f} / {p[1]:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["mean"]
    for m in models:
        rows = part[part["model"] == m]
        cells.append(f"**{rows['mse'].mean():.3f}** / {rows['mae'].mean():.3f}"
                     if len(rows) == len(horizons) else "-")
    if pub_h:
        vals = np.array(list(pub_h.values()))
        cells.append(f"{vals[:, 0].mean():.3f} / {vals[:, 1].mean():.3f}")
    lines += ["| " + " | ".join(cells) + " |", ""]
    pub = PUBLISHED.get(name) if published else None
    if pub:
        lines += ["Published means (lookback 96, spec §4): " + ", ".join(
            f"{k} {v[0]:.3f} / {v[1]:.3f}" for k, v in pub.items()), ""]
    return lines


def _options_table(part: pd.DataFrame) -> list[str]:
    """Every MoLA model and the direct one per horizon: test and validation MSE, parameters,
    CPU and wall seconds (means over the seeds)."""
    keep = part[(part["model"].str.startswith("mola") | (part["model"] == "direct"))
                & (part["model"] != "mola-foundation")]
    if keep.empty:
        return []
    lines = ["| model | H | test MSE | val MSE | trainable params | CPU s | wall s | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in keep.sort_values(["model", "horizon"], kind="stable").iterrows():
        std = f" ± {r['mse_std']:.3f}" if r["n_seeds"] > 1 else ""
        lines.append(f"| {r['model']} | {r['horizon']} | {r['mse']:.3f}{std} | "
                     f"{r['val_mse']:.3f} | {int(r['trainable_params'])} | "
                     f"{r['train_cpu_seconds']:.0f} | {r['train_seconds']:.0f} | "
                     f"{int(r['n_seeds'])} |")
    return lines + [""]


def _selection_lines(results: pd.DataFrame, name: str) -> list[str]:
    part = _with_seed(results[results["dataset"] == name])
    best, compared = validation_choice(results, name)
    if best is None:
        return []
    horizons = sorted(part.loc[part["model"] == best, "horizon"].unique())
    ours = _per_seed_means(part, best, horizons)
    on = "" if not compared else " (models compared on seed" + \
        ("s " if len(compared) > 1 else " ") + ", ".join(str(int(x)) for x in compared) + ")"
    lines = [f"Chosen on validation MSE alone{on}: **{best}**, test MSE mean of the horizons "
             f"{ours.mean():.3f}" + (f" ± {ours.std(ddof=1):.3f} over {len(ours)} seeds"
                                     if len(ours) > 1 else " (one seed)")]
    direct = _per_seed_means(part, "direct", horizons)
    if len(direct):
        gap = float(direct.mean() - ours.mean())
        spread = max(ours.std(ddof=1) if len(ours) > 1 else np.nan,
                     direct.std(ddof=1) if len(direct) > 1 else np.nan)
        verdict = "" if np.isnan(spread) else (
            f"; the larger seed std is {spread:.3f}, so MoLA is "
            + ("below Direct by more than the seed noise" if gap > spread
               else "not below Direct by more than the seed noise"))
        lines[-1] += (f"; direct {direct.mean():.3f} over {len(direct)} seed(s): MoLA "
                      f"{'lower' if gap >= 0 else 'higher'} by {abs(gap):.3f}{verdict}.")
    else:
        lines[-1] += "."
    return lines + [""]


def _cost_lines(part: pd.DataFrame, results: pd.DataFrame, name: str) -> list[str]:
    models = set(part["model"])
    if not {"mola", "direct"} <= models:
        return []
    lines = ["| H | MoLA adaptation s | Direct training s | MoLA / Direct CPU | MoLA trainable | "
             "Direct trainable |", "|---|---|---|---|---|---|"]
    for h in sorted(part["horizon"].unique()):
        a = part[(part["horizon"] == h) & (part["model"] == "mola")]
        d = part[(part["horizon"] == h) & (part["model"] == "direct")]
        if a.empty or d.empty:
            continue
        a, d = a.iloc[0], d.iloc[0]
        ratio = a["train_cpu_seconds"] / d["train_cpu_seconds"]
        lines.append(f"| {h} | {a['train_seconds']:.1f} | {d['train_seconds']:.1f} | "
                     f"{100 * ratio:.0f} % | {int(a['trainable_params'])} | "
                     f"{int(d['trainable_params'])} |")
    found = results[(results["dataset"] == name) & (results["model"] == "mola-foundation")]
    if not found.empty:
        lines.append(f"\nMoLA foundation (S = {found.horizon.iloc[0]}): trained once per seed in "
                     f"{found.train_seconds.mean():.1f}s, test MSE at S "
                     f"{found.mse.mean():.3f}.")
    return lines + [""]


def results_markdown(results: pd.DataFrame, durations: dict[str, float] | None = None, *,
                     published: bool = True) -> str:
    """The benchmark tables of every dataset of ``results`` (the rows of ``results.csv``).

    ``published=False`` leaves out the published numbers (a ``--quick`` run's horizons and
    model sizes are not the protocol's).
    """
    lines: list[str] = []
    durations = durations or {}
    summary = summarize(results)
    for name, part in summary.groupby("dataset", sort=False):
        if (part["model"] == "mola-foundation").all():  # a run stopped after the foundation
            lines += [f"### {name}: only the MoLA foundation has finished", ""]
            continue
        lines += _main_table(name, part, published)
        lines += _options_table(part)
        lines += _selection_lines(results, name)
        lines += _cost_lines(part, results, name)
        if name in durations:
            lines += [f"{name}: this run (every model and horizon, evaluation included) "
                      f"{durations[name]:.1f}s wall.", ""]
    return "\n".join(lines) + "\n"
